// Package trailer reads Git trailers ("Key: value" lines in the last
// paragraph of a commit message, as git interpret-trailers writes them):
// the one reader of the trailers Flotilla's commits carry
// (Flotilla-Revert, Flotilla-Override).
package trailer

import "strings"

// Values are the values of every trailer named key (case-insensitively)
// in the message's last paragraph, in order.
func Values(message, key string) []string {
	lines := strings.Split(strings.TrimRight(message, "\n"), "\n")
	var out []string
	for i := len(lines) - 1; i >= 0 && strings.TrimSpace(lines[i]) != ""; i-- {
		k, v, ok := strings.Cut(lines[i], ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), key) {
			out = append([]string{strings.TrimSpace(v)}, out...)
		}
	}
	return out
}
