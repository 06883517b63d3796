package fleet_test

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/golden"
)

// TestDemoFleetGolden plans the demo fleet at the repository root and the
// example fleets for every inventory cluster and compares the plans with
// the golden files, so any change in selection, overlays or values shows up
// in review.
func TestDemoFleetGolden(t *testing.T) {
	for _, tc := range []struct{ path, golden string }{
		{".", "demo-plans.json"},
		{"examples/independent", "independent-plans.json"},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			f, err := fleet.Load("..", fleet.LoadOptions{Path: tc.path})
			if err != nil {
				t.Fatal(err)
			}
			plans, problems, err := f.PlanInventory(t.Context(), nil)
			if err != nil || len(problems) > 0 {
				t.Fatal(err, problems)
			}
			for _, p := range plans {
				if failed := p.Failed(); len(failed) > 0 {
					t.Errorf("cluster %s: %v", p.Cluster.Name, failed[0].Errors)
				}
			}
			got, err := json.MarshalIndent(plans, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, filepath.Join("testdata", tc.golden), append(got, '\n'))
		})
	}
}
