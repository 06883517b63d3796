package agent

import (
	"testing"

	"github.com/flotilla-gitops/flotilla/sync/report"
)

// TestContentSince: where a bundle's rendered objects began is carried
// over while they stay the same (a commit that does not change the
// bundle, a pass that did not render it), and moves to the revision that
// changes them, the old start becoming previousContentSince.
func TestContentSince(t *testing.T) {
	var prev report.BundleStatus
	seen := false
	for i, step := range []struct {
		rev, digest, since, previous string
	}{
		{"r1", "d1", "r1", ""},
		{"r2", "d1", "r1", ""},   // r2 does not change the bundle
		{"r3", "d2", "r3", "r1"}, // r3 does
		{"r4", "", "r3", "r1"},   // not rendered: kept
		{"r5", "d3", "r5", "r3"},
	} {
		bs := report.BundleStatus{Revision: step.rev, RenderedDigest: step.digest}
		contentSince(&bs, prev, seen)
		if bs.ContentSince != step.since || bs.PreviousContentSince != step.previous {
			t.Fatalf("step %d (%s): since %q previous %q, want %q %q", i, step.rev, bs.ContentSince, bs.PreviousContentSince, step.since, step.previous)
		}
		prev, seen = bs, true
	}
}
