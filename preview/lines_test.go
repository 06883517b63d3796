package preview

import (
	"strings"
	"testing"
)

// TestLineDiff: a multi-line string's change is the lines that changed,
// with three lines of context and a unified hunk header; lines added at
// the end, a final newline that went, and a value too long to compare.
func TestLineDiff(t *testing.T) {
	for _, c := range []struct {
		name, old, cur, want string
	}{
		{"one line", "a\nb\nc\nd\ne\nf\ng\nh\n", "a\nb\nc\nd\nE\nf\ng\nh\n", "@@ -2,7 +2,7 @@\n b\n c\n d\n-e\n+E\n f\n g\n h"},
		{"added at the end", "a\nb\n", "a\nb\nc\n", "@@ -1,2 +1,3 @@\n a\n b\n+c"},
		{"the final newline", "a\nb\n", "a\nb", `\ the final newline changed`},
		{"too long", strings.Repeat("x\n", maxLineDiff+1), "y\n", "-(2001 lines, 4002 bytes)\n+(1 lines, 2 bytes)"},
	} {
		if got := strings.Join(lineDiff(c.old, c.cur), "\n"); got != c.want {
			t.Errorf("%s:\n%s\nwant\n%s", c.name, got, c.want)
		}
	}
	// A one-line value stays a removal and an addition.
	if got := strings.Join(fieldLines(Field{Op: "replace", Path: "/spec/replicas", Old: float64(3), New: float64(5)}), "\n"); got != "@@ replace /spec/replicas @@\n-3\n+5" {
		t.Errorf("a number: %q", got)
	}
}
