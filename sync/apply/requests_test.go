package apply_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"

	"github.com/flotilla-gitops/flotilla/sync/apply"
)

// verbCounter counts a client's API requests to ConfigMaps by verb
// (a dry-run PATCH apart).
type verbCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func (v *verbCounter) config() *rest.Config {
	cfg := rest.CopyConfig(cluster.Config)
	cfg.QPS = -1
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if strings.Contains(r.URL.Path, "/configmaps/") && !strings.Contains(r.URL.Path, "flotilla-inv") {
				verb := r.Method
				if r.URL.Query().Get("dryRun") != "" {
					verb += " (dry run)"
				}
				v.mu.Lock()
				v.counts[verb]++
				v.mu.Unlock()
			}
			return rt.RoundTrip(r)
		})
	})
	return cfg
}

// TestFirstSyncReadsEachObjectOnce: a bundle's first sync reads each new
// object once — the foreign-owner check's GET, which ApplyAll's own read
// of it reuses — then dry-runs and applies it: three requests per object,
// as Flux's first sync makes, where it was four (issue 39). A second sync
// of the same objects still finds them unchanged, and another GitOps
// controller's object is still refused.
func TestFirstSyncReadsEachObjectOnce(t *testing.T) {
	counter := &verbCounter{counts: map[string]int{}}
	f := newFixture(t)
	f.mgr = newManager(t, counter.config(), f.opts)
	ns := f.ns("first")
	objs := []*unstructured.Unstructured{namespace(ns)}
	const n = 30
	for i := range n {
		objs = append(objs, configMap(ns, fmt.Sprintf("cm-%02d", i), map[string]string{"i": fmt.Sprint(i)}))
	}
	got := phase(t, f.sync(bundle("first", objs...)), "first", apply.PhaseReady)
	if got.Counts.Created != n+1 {
		t.Fatalf("created %d, want %d", got.Counts.Created, n+1)
	}
	counter.mu.Lock()
	counts := counter.counts
	counter.counts = map[string]int{}
	counter.mu.Unlock()
	if counts["GET"] != n || counts["PATCH (dry run)"] != n || counts["PATCH"] != n {
		t.Errorf("first sync of %d ConfigMaps: %v, want %d of each of GET, dry-run PATCH and PATCH", n, counts, n)
	}
	if got := phase(t, f.sync(bundle("first", objs...)), "first", apply.PhaseReady); got.Counts.Unchanged != n+1 {
		t.Errorf("second sync: %+v, want every object unchanged", got.Counts)
	}
}
