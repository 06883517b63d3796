package errtext

import (
	"cmp"
	"encoding/base64"
	"slices"
	"strconv"
	"strings"
)

// Redacted is what Redact puts in place of a secret value.
const Redacted = "‹decrypted value›"

// minRedacted is the shortest value Redact replaces: shorter ones ("1",
// "true", "no") are not secrets anyone could keep, and replacing them
// everywhere would leave no message readable.
const minRedacted = 4

// Redact returns text with every one of values (of minRedacted characters
// or more) replaced by Redacted: as it is, as Go and JSON quote it, in
// base64 (a Secret's data), and each of its lines (a template may print
// one). For the values decrypted from SOPS files, which no message may
// show.
func Redact(text string, values []string) string {
	if len(values) == 0 || text == "" {
		return text
	}
	var forms []string
	for _, v := range values {
		for _, f := range formsOf(v) {
			if len(strings.TrimSpace(f)) >= minRedacted && strings.Contains(text, f) {
				forms = append(forms, f)
			}
		}
	}
	// The longest first: a value inside another goes with it.
	slices.SortFunc(forms, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	for _, f := range forms {
		text = strings.ReplaceAll(text, f, Redacted)
	}
	return text
}

// formsOf lists the ways a message may show v.
func formsOf(v string) []string {
	quoted := strconv.Quote(v)
	forms := []string{v, quoted[1 : len(quoted)-1], base64.StdEncoding.EncodeToString([]byte(v))}
	if strings.Contains(v, "\n") {
		forms = append(forms, strings.Split(v, "\n")...)
	}
	return forms
}
