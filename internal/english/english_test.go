package english

import "testing"

func TestCount(t *testing.T) {
	for _, tc := range []struct {
		n          int
		noun, want string
	}{
		{0, "cluster", "0 clusters"}, {1, "cluster", "1 cluster"}, {2, "cluster", "2 clusters"},
		{1, "policy", "1 policy"}, {3, "policy", "3 policies"}, {2, "key", "2 keys"},
		{1, "problem", "1 problem"}, {5, "problem", "5 problems"}, {2, "class", "2 classes"},
		{2, "distinct render", "2 distinct renders"}, {1, "distinct render", "1 distinct render"},
		{2, "status branch", "2 status branches"}, {2, "difference", "2 differences"},
		{4, "key group", "4 key groups"}, {2, "status", "2 statuses"}, {3, "file", "3 files"},
	} {
		if got := Count(tc.n, tc.noun); got != tc.want {
			t.Errorf("Count(%d, %q) = %q, want %q", tc.n, tc.noun, got, tc.want)
		}
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		names []string
		n     int
		want  string
	}{
		{nil, 3, ""}, {[]string{"a"}, 3, "a"}, {[]string{"a", "b", "c"}, 3, "a, b, c"}, {[]string{"a", "b", "c", "d"}, 2, "a, b and 2 more"},
	} {
		if got := Names(tc.names, tc.n); got != tc.want {
			t.Errorf("Names(%v, %d) = %q, want %q", tc.names, tc.n, got, tc.want)
		}
	}
}
