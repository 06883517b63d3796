package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/agent"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// TestControlsAreReadWhenTheyMove: with the approvals branch in the fleet
// repository (served by git http-backend, counted) and the status in a
// repository of its own, the agent learns the branch's tip from its poll:
// a fleet commit costs one fetch of the fleet and no read of the
// approvals branch while it stays; a pause pushed to it is read at the
// next pass and holds the next commit; the status repository is never
// asked for the approvals.
func TestControlsAreReadWhenTheyMove(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": fleetV1})
	url, reqs := repo.ServeBackend()
	statusRepo := gittest.New(t)
	statusURL, statusReqs := statusRepo.ServeBackend()
	who := object.Signature{Name: "Oncall", Email: "oncall@example.com", When: time.Now()}
	ctx := context.Background()
	// The approvals branch exists in the fleet repository (a pause, and
	// its end).
	if _, err := report.Update(ctx, report.ApproveOptions{URL: url, Author: who}, report.Pause(report.Control{By: "Oncall <oncall@example.com>", Reason: "setting up"})); err != nil {
		t.Fatal(err)
	}
	if _, err := report.Update(ctx, report.ApproveOptions{URL: url, Author: who}, report.Resume("Oncall <oncall@example.com>", "set up")); err != nil {
		t.Fatal(err)
	}
	a := newAgent(t, cluster.Config, repo, "prod-1", map[string]string{"env": "prod"}, func(o *agent.Options) {
		o.Source = source.Options{URL: url, CacheDir: t.TempDir()}
		o.Status = &report.Options{URL: statusURL}
	})
	pass := func(what string) {
		t.Helper()
		if p := a.RunOnce(ctx); p.Failed() {
			t.Fatalf("%s: %v", what, p.Err)
		}
	}
	pass("first pass")
	reqs.Take()
	statusReqs.Take()

	repo.Commit(map[string]string{"fleet.cue": fleetV1 + "\nbundles: two: resources: [{apiVersion: \"v1\", kind: \"ConfigMap\", metadata: name: \"two\"}]\n"})
	pass("a commit")
	if _, ok := a.configMapData(t, "two"); !ok {
		t.Fatal("the commit was not applied")
	}
	// The poll (one advertisement) and the fetch of the commit: nothing
	// for the approvals branch, which did not move.
	if got := reqs.Take(); got["advertise git-upload-pack"] != 2 || got["git-upload-pack"] != 1 {
		t.Errorf("fleet repository requests for a commit: %v, want the poll, and the fetch's advertisement and pack", got)
	}

	if _, err := report.Update(ctx, report.ApproveOptions{URL: url, Author: who}, report.Pause(report.Control{By: "Oncall <oncall@example.com>", Reason: "INC-1"})); err != nil {
		t.Fatal(err)
	}
	repo.Commit(map[string]string{"fleet.cue": fleetV1 + "\nbundles: three: resources: [{apiVersion: \"v1\", kind: \"ConfigMap\", metadata: name: \"three\"}]\n"})
	reqs.Take()
	pass("a commit while paused")
	if _, ok := a.configMapData(t, "three"); ok {
		t.Error("the paused commit was applied")
	}
	if got := reqs.Take(); got["git-upload-pack"] < 2 {
		t.Errorf("fleet repository requests once the pause was pushed: %v, want the approvals branch read too", got)
	}
	for kind, n := range statusReqs.Take() {
		if kind != "advertise git-receive-pack" && kind != "git-receive-pack" {
			t.Errorf("the status repository was asked %d × %s: it only receives reports", n, kind)
		}
	}
}
