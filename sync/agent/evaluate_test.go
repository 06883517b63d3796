package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/flotilla-gitops/flotilla/fleet"
)

// TestInProcessLoadsACheckoutOnce: the in-process evaluator plans, places
// rollouts and checks policies of one checkout with one loaded fleet, and
// Release (the end of a pass) drops every loaded fleet.
func TestInProcessLoadsACheckoutOnce(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir()}
	for i, dir := range dirs {
		src := "package fleet\n\nbundles: web: resources: [{apiVersion: \"v1\", kind: \"ConfigMap\", metadata: name: \"web-" + string(rune('a'+i)) + "\"}]\n"
		if err := os.WriteFile(filepath.Join(dir, "fleet.cue"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e := newInProcess(fleet.LoadOptions{})
	c := fleet.Cluster{Name: "c1"}
	ctx := context.Background()
	if _, err := e.Plan(ctx, dirs[0], c); err != nil {
		t.Fatal(err)
	}
	first := e.fleets[dirs[0]]
	if _, err := e.Rollouts(ctx, dirs[0], []fleet.Cluster{c}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.PolicyViolations(ctx, dirs[0], c, nil); err != nil {
		t.Fatal(err)
	}
	if first == nil || e.fleets[dirs[0]] != first || len(e.fleets) != 1 {
		t.Fatalf("the checkout's fleet was loaded again (%d fleets)", len(e.fleets))
	}
	plan, err := e.Plan(ctx, dirs[1], c)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.fleets) != 2 || plan.Bundles[0].Source.Resources == nil {
		t.Fatalf("a second checkout: %d fleets", len(e.fleets))
	}
	e.Release()
	if len(e.fleets) != 0 {
		t.Errorf("Release left %v", e.fleets)
	}
	if _, err := e.Plan(ctx, dirs[0], c); err != nil || e.fleets[dirs[0]] == nil || e.fleets[dirs[0]] == first {
		t.Errorf("after Release the checkout is loaded anew: %v", err)
	}
}
