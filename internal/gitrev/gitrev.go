// Package gitrev shows Git revisions to people: in messages, logs,
// commit subjects and tables. It is the one place their abbreviation is
// decided.
package gitrev

// ShortLen is how many hex digits a short revision keeps: Git's own
// default abbreviation.
const ShortLen = 7

// Short abbreviates a revision (a commit hash) to ShortLen characters, as
// `git log --oneline` shows it; shorter strings (an empty revision) are
// returned as they are.
func Short(rev string) string { return Abbrev(rev, ShortLen) }

// HydratorLen is how many characters hydrated commits and `flotilla
// hydrate` show of a commit, as Argo CD's hydrator writes them.
const HydratorLen = 12

// Abbrev abbreviates a revision to n characters.
func Abbrev(rev string, n int) string {
	if len(rev) > n {
		return rev[:n]
	}
	return rev
}

// Full reports whether rev is a full commit hash (40 lowercase hex
// digits), as approvals, status files and trailers require.
func Full(rev string) bool {
	if len(rev) != 40 {
		return false
	}
	for _, c := range rev {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
