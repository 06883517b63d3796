package errtext_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/flotilla-gitops/flotilla/internal/errtext"
)

func TestClean(t *testing.T) {
	cases := map[string]struct{ in, want string }{
		"plain":         {"bundle web: file x.yaml: bad\n\tline", "bundle web: file x.yaml: bad\n\tline"},
		"colour":        {"\x1b[31mred\x1b[0m text", "red text"},
		"title (OSC)":   {"a\x1b]0;pwned\x07b", "ab"},
		"clear screen":  {"x\x1b[2J\x1b[Hy", "xy"},
		"bare controls": {"a\rb\x00c\x7fd\u009be", "abcde"},
		"invalid UTF-8": {"a\xffb", "a\uFFFDb"},
	}
	for name, tc := range cases {
		if got := errtext.Clean(tc.in); got != tc.want {
			t.Errorf("%s: Clean(%q) = %q, want %q", name, tc.in, got, tc.want)
		}
	}
}

func TestCleanBoundsLength(t *testing.T) {
	long := "start " + strings.Repeat("é template recursion ", 20000) + " end"
	got := errtext.Clean(long)
	if len(got) > errtext.Max+100 || !strings.HasPrefix(got, "start ") || !strings.HasSuffix(got, " end") ||
		!strings.Contains(got, "bytes cut") || !utf8.ValidString(got) {
		t.Errorf("len %d, head %q, tail %q", len(got), got[:20], got[len(got)-20:])
	}
}

func FuzzClean(f *testing.F) {
	for _, s := range []string{"", "plain", "\x1b[31mred", "\x1b]0;t\x07", "a\xffb", strings.Repeat("x", errtext.Max+1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := errtext.Clean(s)
		if !utf8.ValidString(got) || strings.ContainsRune(got, 0x1b) || len(got) > errtext.Max+64 {
			t.Fatalf("Clean(%q) = %q", s, got)
		}
		if errtext.Clean(got) != got && len(got) <= errtext.Max {
			t.Fatalf("Clean is not idempotent on %q", s)
		}
	})
}

// TestRedact: a secret goes from a message as it is, quoted, in base64 and
// line by line; values too short to be secrets, and the rest of the
// message, stay.
func TestRedact(t *testing.T) {
	const pem = "-----BEGIN KEY-----\nMIIBVwIBADANBgkqhkiG9w0BAQ\n-----END KEY-----"
	msg := `at '/password': 'Hunter2"x' does not match; printf %q: "Hunter2\"x"; b64: SHVudGVyMiJ4; line: MIIBVwIBADANBgkqhkiG9w0BAQ; replicas: 3`
	got := errtext.Redact(msg, []string{`Hunter2"x`, pem, "3"})
	for _, leak := range []string{"Hunter2", "SHVudGVyMiJ4", "MIIBVwIBADANBgkqhkiG9w0BAQ"} {
		if strings.Contains(got, leak) {
			t.Errorf("%q left in %s", leak, got)
		}
	}
	if !strings.Contains(got, "replicas: 3") || !strings.Contains(got, "at '/password': '"+errtext.Redacted+"' does not match") {
		t.Errorf("too much went: %s", got)
	}
	if errtext.Redact(msg, nil) != msg {
		t.Error("nothing to redact changed the message")
	}
}
