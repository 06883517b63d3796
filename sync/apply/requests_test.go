package apply_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/schemas/spec"
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
			if strings.Contains(r.URL.Path, "/configmaps/") {
				verb := r.Method
				if r.URL.Query().Get("dryRun") != "" {
					verb += " (dry run)"
				}
				if strings.Contains(r.URL.Path, "flotilla-inv") {
					verb = "inventory " + verb
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

// take returns the counts since the last take, and starts again.
func (v *verbCounter) take() map[string]int {
	v.mu.Lock()
	defer v.mu.Unlock()
	c := v.counts
	v.counts = map[string]int{}
	return c
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
	counts := counter.take()
	if counts["GET"] != n || counts["PATCH (dry run)"] != n || counts["PATCH"] != n {
		t.Errorf("first sync of %d ConfigMaps: %v, want %d of each of GET, dry-run PATCH and PATCH", n, counts, n)
	}
	if got := phase(t, f.sync(bundle("first", objs...)), "first", apply.PhaseReady); got.Counts.Unchanged != n+1 {
		t.Errorf("second sync: %+v, want every object unchanged", got.Counts)
	}
}

// TestIncrementalApply: the inventory records each object's digest; an
// incremental sync after 2 of 20 ConfigMaps changed asks the API server
// about those 2 and the Secret (whose digest is never kept) and nothing
// else, applies the change, and keeps every entry (nothing is pruned);
// an object edited by hand is left to the full pass, which corrects it
// and records its digest again; an entry without a digest (an inventory
// from before digests) is applied.
func TestIncrementalApply(t *testing.T) {
	counter := &verbCounter{counts: map[string]int{}}
	f := newFixture(t)
	f.mgr = newManager(t, counter.config(), f.opts)
	ns := f.ns("incr")
	secret := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{"name": "token", "namespace": ns}, "stringData": map[string]any{"t": "s3cret"}}}
	objs := func(changed map[int]string) []*unstructured.Unstructured {
		out := []*unstructured.Unstructured{namespace(ns), secret}
		for i := range 20 {
			v := changed[i]
			if v == "" {
				v = "1"
			}
			out = append(out, configMap(ns, fmt.Sprintf("cm-%02d", i), map[string]string{"v": v}))
		}
		return out
	}
	take := counter.take
	phase(t, f.sync(bundle("incr", objs(nil)...)), "incr", apply.PhaseReady)
	inv := f.inventoryLines("incr")
	if !strings.Contains(inv, "cm-00__ConfigMap v1 created d=") || strings.Contains(inv, "token__Secret v1 created d=") {
		t.Fatalf("inventory without the digests it should have:\n%s", inv)
	}
	take()

	b := bundle("incr", objs(map[int]string{3: "2", 7: "2"})...)
	b.Incremental = true
	got := phase(t, f.sync(b), "incr", apply.PhaseReady)
	if got.Counts.Configured != 2 || got.Counts.Unchanged != 20 {
		t.Errorf("incremental counts %+v, want 2 configured and 20 unchanged (19 skipped, the Secret checked)", got.Counts)
	}
	if c := take(); c["GET"] != 2 || c["PATCH"] != 2 || c["PATCH (dry run)"] != 2 {
		t.Errorf("incremental sync of 2 changed ConfigMaps: ConfigMap requests %v, want 2 of each", c)
	}
	if v, _ := f.get(ns, "cm-03"); v != "2" {
		t.Errorf("cm-03 holds %q after the change", v)
	}
	if inv := f.inventoryLines("incr"); strings.Count(inv, "_ConfigMap ") != 20 {
		t.Errorf("the inventory lost entries:\n%s", inv)
	}

	// A hand edit: the incremental pass does not see it (the watch
	// would ask for a full one); the full pass corrects it.
	f.set(ns, "cm-05", "by-hand")
	b.Incremental = true
	phase(t, f.sync(b), "incr", apply.PhaseReady)
	if v, _ := f.get(ns, "cm-05"); v != "by-hand" {
		t.Fatalf("an incremental pass touched cm-05: %q", v)
	}
	b.Incremental = false
	b.Digest += "-full" // a new render digest: the full apply
	phase(t, f.sync(b), "incr", apply.PhaseReady)
	if v, _ := f.get(ns, "cm-05"); v != "1" {
		t.Errorf("the full pass left cm-05 at %q", v)
	}
}

// TestIncrementalChecksWhatMoved: an incremental sync dry-runs the
// unchanged objects the caller cannot vouch for (Bundle.Unmoved, the
// agent's watch) exactly as a full sync would: a hand edit — of a
// ConfigMap, of a Secret (which has no digest, but is unchanged with its
// bundle) — is reported under driftPolicy report, each pass again, and
// corrected under correct; the others cost no request, and an inventory
// that would not change is not written.
func TestIncrementalChecksWhatMoved(t *testing.T) {
	counter := &verbCounter{counts: map[string]int{}}
	f := newFixture(t)
	f.mgr = newManager(t, counter.config(), f.opts)
	ns := f.ns("moved")
	secret := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{"name": "token", "namespace": ns}, "stringData": map[string]any{"t": "s3cret"}}}
	objs := []*unstructured.Unstructured{namespace(ns), secret}
	for i := range 10 {
		objs = append(objs, configMap(ns, fmt.Sprintf("cm-%02d", i), map[string]string{"v": "1"}))
	}
	b := bundle("moved", objs...)
	b.DriftPolicy = spec.DriftReport
	phase(t, f.sync(b), "moved", apply.PhaseReady)
	f.set(ns, "cm-02", "by-hand")
	var live corev1.Secret
	if err := kube.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "token"}, &live); err != nil {
		t.Fatal(err)
	}
	live.Data["t"] = []byte("by-hand")
	if err := kube.Update(context.Background(), &live); err != nil {
		t.Fatal(err)
	}
	b.Incremental = true
	b.Unmoved = func(e apply.Entry) bool { return e.ID.Name != "cm-02" && e.ID.Name != "token" }
	take := counter.take
	take()
	for range 2 { // reported at each pass, as the watch keeps seeing them moved
		got := phase(t, f.sync(b), "moved", apply.PhaseDrifted)
		if got.Counts.Drifted != 2 || got.Counts.Unchanged != 10 {
			t.Errorf("counts %+v, want 2 drifted (cm-02 and the Secret), 10 unchanged", got.Counts)
		}
		if err := kube.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "token"}, &live); err != nil || string(live.Data["t"]) != "by-hand" {
			t.Fatalf("driftPolicy report, yet the Secret was changed: %q %v", live.Data["t"], err)
		}
		if c := take(); len(c) != 2 || c["GET"] != 1 || c["PATCH (dry run)"] != 1 {
			t.Errorf("an incremental sync with one object moved made %v, want its GET and dry run, no inventory write", c)
		}
		if v, _ := f.get(ns, "cm-02"); v != "by-hand" {
			t.Fatalf("driftPolicy report, yet cm-02 was changed to %q", v)
		}
	}
	b.DriftPolicy = spec.DriftCorrect
	phase(t, f.sync(b), "moved", apply.PhaseReady)
	if v, _ := f.get(ns, "cm-02"); v != "1" {
		t.Errorf("driftPolicy correct left cm-02 at %q", v)
	}
}

// TestInventoryWritesWhatChanged: a change rewrites the inventory's
// shards whose lines changed (and the head, which holds the bundle's
// digest), not every shard, and a sync that changes nothing writes none.
func TestInventoryWritesWhatChanged(t *testing.T) {
	defer apply.SetEntriesPerShard(5)()
	counter := &verbCounter{counts: map[string]int{}}
	f := newFixture(t)
	f.mgr = newManager(t, counter.config(), f.opts)
	ns := f.ns("shards")
	objs := func(v string) []*unstructured.Unstructured {
		out := []*unstructured.Unstructured{namespace(ns)}
		for i := range 20 {
			value := "1"
			if i == 12 {
				value = v
			}
			out = append(out, configMap(ns, fmt.Sprintf("cm-%02d", i), map[string]string{"v": value}))
		}
		return out
	}
	take := func() int { return counter.take()["inventory PATCH"] }
	phase(t, f.sync(bundle("shards", objs("1")...)), "shards", apply.PhaseReady)
	if n := take(); n != 5 {
		t.Fatalf("the first sync wrote %d shards, want 5 (21 entries, 5 a shard)", n)
	}
	b := bundle("shards", objs("2")...)
	b.Incremental = true
	phase(t, f.sync(b), "shards", apply.PhaseReady)
	if n := take(); n != 2 {
		t.Errorf("a change to cm-12 wrote %d shards, want 2 (the head and cm-12's)", n)
	}
	phase(t, f.sync(b), "shards", apply.PhaseReady)
	if n := take(); n != 0 {
		t.Errorf("a sync that changed nothing wrote %d shards", n)
	}
	invs, broken, err := apply.ReadInventories(context.Background(), kube, f.opts.InventoryNamespace)
	if err != nil || len(broken) > 0 || len(invs["shards"].Entries) != 21 {
		t.Fatalf("the inventory read back: %v %v %+v", err, broken, invs["shards"])
	}
}

// TestIncrementalWaitsForWhatItApplied: an incremental sync waits for the
// objects it applied, not for the bundle's others: a Deployment that
// never becomes ready (no controller runs on this control plane) keeps a
// full sync Progressing, not an incremental one that changed a ConfigMap.
func TestIncrementalWaitsForWhatItApplied(t *testing.T) {
	f := newFixture(t)
	ns := f.ns("waits")
	deployment := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": "app", "namespace": ns},
		"spec": map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"app": "app"}},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "app"}},
				"spec": map[string]any{"containers": []any{map[string]any{"name": "app", "image": "registry.example/app:1"}}}},
		},
	}}
	phase(t, f.sync(bundle("waits", namespace(ns), deployment, configMap(ns, "cm", map[string]string{"v": "1"}))), "waits", apply.PhaseReady)

	b := bundle("waits", namespace(ns), deployment, configMap(ns, "cm", map[string]string{"v": "2"}))
	b.Wait, b.Timeout.Duration, b.Incremental = true, 2*time.Second, true
	if got := phase(t, f.sync(b), "waits", apply.PhaseReady); !got.Incremental || got.Counts.Configured != 1 {
		t.Errorf("incremental sync: %+v", got)
	}
	b.Incremental, b.Digest = false, b.Digest+"-full"
	if got := phase(t, f.sync(b), "waits", apply.PhaseProgressing); !strings.Contains(got.Message, "Deployment") {
		t.Errorf("the full sync's wait: %q", got.Message)
	}
}

// inventoryLines is a bundle's inventory (its first shard) as stored.
func (f *fixture) inventoryLines(bundle string) string {
	f.t.Helper()
	var cm corev1.ConfigMap
	if err := kube.Get(context.Background(), client.ObjectKey{Namespace: f.opts.InventoryNamespace, Name: "flotilla-inv-" + bundle}, &cm); err != nil {
		f.t.Fatalf("inventory: %v", err)
	}
	return cm.Data["objects"]
}

// get is a test ConfigMap's "v".
func (f *fixture) get(ns, name string) (string, bool) {
	f.t.Helper()
	var cm corev1.ConfigMap
	if err := kube.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &cm); err != nil {
		return "", false
	}
	return cm.Data["v"], true
}

// set edits a test ConfigMap's "v" by hand (another client).
func (f *fixture) set(ns, name, v string) {
	f.t.Helper()
	var cm corev1.ConfigMap
	if err := kube.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &cm); err != nil {
		f.t.Fatal(err)
	}
	cm.Data["v"] = v
	if err := kube.Update(context.Background(), &cm); err != nil {
		f.t.Fatal(err)
	}
}
