package fleet_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/flotilla-gitops/flotilla/fleet"
)

// updateGolden is the one environment variable that rewrites golden files
// from the current output: UPDATE_GOLDEN=1 go test ./...
var updateGolden = os.Getenv("UPDATE_GOLDEN") != ""

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
			plans, problems := f.PlanInventory()
			if len(problems) > 0 {
				t.Fatal(problems)
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
			compareGolden(t, filepath.Join("testdata", tc.golden), append(got, '\n'))
		})
	}
}

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if updateGolden {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with UPDATE_GOLDEN=1 to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the current output; review the change and run with UPDATE_GOLDEN=1 to accept it\n%s",
			path, cmp.Diff(string(want), string(got)))
	}
}
