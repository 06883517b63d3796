// Package english writes counts the way people read them: "1 cluster",
// "2 clusters", "1 policy", "3 policies". A leaf (standard library only),
// for every package that prints a count.
package english

import (
	"strconv"
	"strings"
)

// Count is n and the noun, plural unless n is 1: Count(1, "cluster") is
// "1 cluster", Count(0, "policy") "0 policies".
func Count(n int, noun string) string {
	return strconv.Itoa(n) + " " + Noun(n, noun)
}

// Noun is the noun in the number n asks for. Only the last word changes
// ("distinct render" → "distinct renders").
func Noun(n int, noun string) string {
	if n == 1 || n == -1 {
		return noun
	}
	return Plural(noun)
}

// irregular are the nouns of our messages whose plural no rule gives.
var irregular = map[string]string{"child": "children", "person": "people", "status": "statuses"}

// Plural is the plural of a noun (its last word).
func Plural(noun string) string {
	head, word := "", noun
	if i := strings.LastIndexByte(noun, ' '); i >= 0 {
		head, word = noun[:i+1], noun[i+1:]
	}
	if p, ok := irregular[word]; ok {
		return head + p
	}
	switch {
	case word == "":
		return noun
	case strings.HasSuffix(word, "y") && len(word) > 1 && !strings.ContainsRune("aeiou", rune(word[len(word)-2])):
		return head + word[:len(word)-1] + "ies"
	case strings.HasSuffix(word, "s"), strings.HasSuffix(word, "x"), strings.HasSuffix(word, "z"),
		strings.HasSuffix(word, "ch"), strings.HasSuffix(word, "sh"):
		return head + word + "es"
	}
	return head + word + "s"
}

// Names lists at most n names, and counts the rest: Names([a b c d], 2)
// is "a, b and 2 more". A list of any length stays a line.
func Names(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:n], ", ") + " and " + strconv.Itoa(len(names)-n) + " more"
}
