package report_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// writeBranches gives the bare repository n status branches, c0000 …, one
// commit each (what n agents' first reports leave, made in a second).
func writeBranches(t testing.TB, bare string, n int) {
	t.Helper()
	branches := map[string]map[string][]byte{}
	for i := range n {
		name := fmt.Sprintf("c%04d", i)
		st := status(name, report.ClusterReady)
		st.APIVersion, st.Kind, st.ReportedAt = report.APIVersion, report.Kind, time.Now().UTC()
		st.Cluster = st.Cluster.Normalized()
		data, err := yaml.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		branches[report.Branch("", name)] = map[string][]byte{report.Path(name): data}
	}
	gittest.ImportBranches(t, bare, branches)
}

// TestReadThousandBranches reads the statuses of 1,000 clusters over HTTP
// with basic auth: one ls-remote and one fetch bring them all.
func TestReadThousandBranches(t *testing.T) {
	repo := gittest.New(t)
	writeBranches(t, repo.Bare, 1000)
	url := repo.ServeHTTP("reader", "pass")
	snap, err := report.Read(context.Background(), url, "", basicAuth("reader", "pass"))
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Statuses) != 1000 || len(snap.Problems) != 0 {
		t.Fatalf("%d statuses, problems %v", len(snap.Statuses), snap.Problems)
	}
	if first, last := snap.Statuses[0].Cluster.Name, snap.Statuses[999].Cluster.Name; first != "c0000" || last != "c0999" {
		t.Errorf("statuses from %s to %s", first, last)
	}
}

// BenchmarkRead1000 reads 1,000 clusters' statuses over HTTP (what
// `flotilla status` does before printing).
func BenchmarkRead1000(b *testing.B) {
	repo := gittest.New(b)
	writeBranches(b, repo.Bare, 1000)
	url := repo.ServeHTTP("reader", "pass")
	for b.Loop() {
		snap, err := report.Read(context.Background(), url, "", basicAuth("reader", "pass"))
		if err != nil || len(snap.Statuses) != 1000 {
			b.Fatalf("%v %v", snap, err)
		}
	}
}
