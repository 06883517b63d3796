package fleet_test

import (
	"testing"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/synthfleet"
)

// loadSynthetic writes and loads a synthetic fleet.
func loadSynthetic(b *testing.B, clusters, bundles int) *fleet.Fleet {
	b.Helper()
	dir := b.TempDir()
	if err := synthfleet.Write(dir, clusters, bundles); err != nil {
		b.Fatal(err)
	}
	f, err := fleet.Load(dir, fleet.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return f
}

// BenchmarkLoad measures loading and checking a 1,000 × 50 fleet.
func BenchmarkLoad(b *testing.B) {
	dir := b.TempDir()
	if err := synthfleet.Write(dir, 1000, 50); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := fleet.Load(dir, fleet.LoadOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPlanOneCluster measures what an agent does per cycle: plan one
// cluster of a fleet of 1,000 clusters and 50 bundles.
func BenchmarkPlanOneCluster(b *testing.B) {
	f := loadSynthetic(b, 1000, 50)
	c, err := f.InventoryCluster(synthfleet.ClusterName(0))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		p, err := f.Plan(c)
		if err != nil {
			b.Fatalf("plan: %v", err)
		}
		if failed := p.Failed(); len(failed) > 0 {
			b.Fatalf("plan: bundle %s: %v", failed[0].Name, failed[0].Errors)
		}
	}
}

// BenchmarkPlanInventory measures what CI does: plan all 1,000 clusters of
// the fleet (50 bundles each).
func BenchmarkPlanInventory(b *testing.B) {
	f := loadSynthetic(b, 1000, 50)
	for b.Loop() {
		plans, problems, err := f.PlanInventory(b.Context(), nil)
		if err != nil || len(problems) > 0 || len(plans) != 1000 {
			b.Fatalf("%d plans, problems: %v %v", len(plans), problems, err)
		}
	}
}
