package gitrev

import "testing"

func TestShort(t *testing.T) {
	for _, tc := range []struct{ rev, want string }{
		{"0123456789abcdef0123456789abcdef01234567", "0123456"},
		{"0123456", "0123456"},
		{"abc", "abc"},
		{"", ""},
	} {
		if got := Short(tc.rev); got != tc.want {
			t.Errorf("Short(%q) = %q, want %q", tc.rev, got, tc.want)
		}
	}
	if got := Abbrev("0123456789abcdef", 12); got != "0123456789ab" {
		t.Errorf("Abbrev 12 = %q", got)
	}
}
