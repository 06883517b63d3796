package agent_test

import (
	"context"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
)

// TestForcePushedBranchIsApplied: the fleet branch force-pushed back to an
// older commit (a revert by history rewrite) is applied like any new tip —
// not refused as going backwards — and the pass reports that revision.
func TestForcePushedBranchIsApplied(t *testing.T) {
	a, repo := syncedAgent(t)
	old := gittest.Git(t, repo.Work, "rev-parse", "HEAD")
	repo.Commit(map[string]string{"fleet.cue": strings.Replace(fleetV1, `v: "1"`, `v: "2"`, 1)})
	if p := a.RunOnce(context.Background()); p.Failed() {
		t.Fatalf("pass: %v", p.Err)
	}
	if data, _ := a.configMapData(t, "prod-only"); data["v"] != "2" {
		t.Fatalf("v2 not applied: %v", data)
	}

	gittest.Git(t, repo.Work, "reset", "--hard", old)
	gittest.Git(t, repo.Work, "push", "--force", "origin", "main")
	p := a.RunOnce(context.Background())
	if p.Failed() || p.Revision != old || !p.Changed {
		t.Fatalf("pass after the force push: %+v", p)
	}
	if data, _ := a.configMapData(t, "prod-only"); data["v"] != "1" {
		t.Errorf("the older commit was not applied: %v", data)
	}
}
