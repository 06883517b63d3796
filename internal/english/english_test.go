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
