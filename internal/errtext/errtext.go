// Package errtext makes error text from untrusted input safe to show: in a
// terminal, a log line, a status file. A fleet controls much of what its
// errors say (template output, file names, values), so an error could
// carry escape sequences that rewrite a terminal, or be hundreds of
// kilobytes long (a template recursion's trace).
package errtext

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Max is the longest message Clean keeps, in bytes: far more than any
// useful error, far less than a runaway one.
const Max = 8 << 10

// escapes are ANSI/VT sequences: CSI (ESC [ … final), OSC (ESC ] … BEL or
// ESC \), and two-character escapes.
var escapes = regexp.MustCompile(`\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)?|\x1b[@-Z\\-_]`)

// Clean returns s without terminal escape sequences or other control
// characters (newlines and tabs stay), with invalid UTF-8 replaced, and at
// most Max bytes long: a longer message keeps its beginning and end, with
// how much was cut in between.
func Clean(s string) string {
	if !needsCleaning(s) {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = escapes.ReplaceAllString(s, "")
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || !unicode.IsControl(r) {
			return r
		}
		return -1
	}, s)
	if len(s) <= Max {
		return s
	}
	head, tail := cutAt(s, Max/2), s[len(s)-Max/4:]
	for len(tail) > 0 && !utf8.RuneStart(tail[0]) {
		tail = tail[1:]
	}
	return fmt.Sprintf("%s … (%d bytes cut) … %s", head, len(s)-len(head)-len(tail), tail)
}

// Error is Clean(err.Error()), or "" for nil.
func Error(err error) string {
	if err == nil {
		return ""
	}
	return Clean(err.Error())
}

func needsCleaning(s string) bool {
	if len(s) > Max || !utf8.ValidString(s) {
		return true
	}
	for _, r := range s {
		if r != '\n' && r != '\t' && unicode.IsControl(r) {
			return true
		}
	}
	return false
}

// cutAt returns the longest prefix of s of at most n bytes that ends on a
// rune boundary.
func cutAt(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
