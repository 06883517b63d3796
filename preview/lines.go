package preview

import (
	"fmt"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
)

// A changed field as the lines of a diff, each starting with its marker in
// the first column ("-" old, "+" new, " " context, "@@" a header), so a
// forge colours them in a ```diff block and a terminal reads them as
// diff(1)'s. A string of several lines that changed (ConfigMap data, a
// script, embedded YAML) is a unified line diff of its lines, not the
// whole value removed and added again.

// lineDiffContext is how many unchanged lines a hunk shows around a change.
const lineDiffContext = 3

// maxLineDiff bounds the lines of a value compared line by line (the
// comparison is quadratic at worst); a longer value is shown by its size.
const maxLineDiff = 2000

// fieldLines is a changed field as diff lines.
func fieldLines(f Field) []string {
	out := []string{fmt.Sprintf("@@ %s %s @@", f.Op, f.Path)}
	old, oldText := f.Old.(string)
	cur, newText := f.New.(string)
	if oldText && newText && (strings.Contains(old, "\n") || strings.Contains(cur, "\n")) {
		return append(out, lineDiff(old, cur)...)
	}
	if f.Old != nil {
		out = append(out, marked("-", yamlValue(f.Old))...)
	}
	if f.New != nil {
		out = append(out, marked("+", yamlValue(f.New))...)
	}
	return out
}

// marked prefixes each line of text with a marker.
func marked(marker, text string) []string {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	for i, l := range lines {
		lines[i] = marker + l
	}
	return lines
}

// lineDiff is a unified diff of two texts' lines: hunks with their
// context, a header line ("@@ -a,b +c,d @@") before each.
func lineDiff(old, cur string) []string {
	a, b := splitLines(old), splitLines(cur)
	if len(a) > maxLineDiff || len(b) > maxLineDiff {
		return []string{fmt.Sprintf("-(%d lines, %d bytes)", len(a), len(old)), fmt.Sprintf("+(%d lines, %d bytes)", len(b), len(cur))}
	}
	var out []string
	for _, group := range difflib.NewMatcher(a, b).GetGroupedOpCodes(lineDiffContext) {
		first, last := group[0], group[len(group)-1]
		out = append(out, fmt.Sprintf("@@ -%s +%s @@", hunkRange(first.I1, last.I2), hunkRange(first.J1, last.J2)))
		for _, op := range group {
			switch op.Tag {
			case 'e':
				out = append(out, marked(" ", strings.Join(a[op.I1:op.I2], "\n"))...)
			case 'r', 'd':
				out = append(out, marked("-", strings.Join(a[op.I1:op.I2], "\n"))...)
			}
			if op.Tag == 'r' || op.Tag == 'i' {
				out = append(out, marked("+", strings.Join(b[op.J1:op.J2], "\n"))...)
			}
		}
	}
	if strings.HasSuffix(old, "\n") != strings.HasSuffix(cur, "\n") {
		out = append(out, `\ the final newline changed`)
	}
	return out
}

// splitLines splits a text into its lines (a final newline ends the last
// one; it starts none).
func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// hunkRange is a hunk's start and length as unified diffs write them
// (1-based; an empty range names the line before it).
func hunkRange(start, end int) string {
	n := end - start
	switch n {
	case 0:
		return fmt.Sprintf("%d,0", start)
	case 1:
		return fmt.Sprint(start + 1)
	}
	return fmt.Sprintf("%d,%d", start+1, n)
}
