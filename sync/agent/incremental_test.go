package agent_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxcd/cli-utils/pkg/object"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/agent"
	"github.com/flotilla-gitops/flotilla/sync/apply"
)

// objectRequests counts an agent's API requests about single objects
// named cm-*, by object name and by verb (a dry run apart); the drift
// watch's lists and watches, and the inventory, are not counted.
type objectRequests struct {
	mu     sync.Mutex
	byName map[string]int
	byVerb map[string]int
}

func (o *objectRequests) wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTrip(func(r *http.Request) (*http.Response, error) {
			if _, name, ok := strings.Cut(r.URL.Path, "/configmaps/"); ok && strings.HasPrefix(name, "cm-") {
				verb := r.Method
				if r.URL.Query().Get("dryRun") != "" {
					verb += " (dry run)"
				}
				o.mu.Lock()
				o.byName[name]++
				o.byVerb[verb]++
				o.mu.Unlock()
			}
			return rt.RoundTrip(r)
		})
	})
	return cfg
}

// take returns the names and verbs counted since the last take.
func (o *objectRequests) take() (names []string, verbs map[string]int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	names, verbs = slices.Sorted(maps.Keys(o.byName)), o.byVerb
	o.byName, o.byVerb = map[string]int{}, map[string]int{}
	return names, verbs
}

func newObjectRequests() *objectRequests {
	return &objectRequests{byName: map[string]int{}, byVerb: map[string]int{}}
}

// manyConfigMaps is a fleet of one bundle, many, of n ConfigMaps cm-00 …
// holding v: "1", or what changed says.
func manyConfigMaps(n int, changed map[int]string) string {
	var b strings.Builder
	b.WriteString("package fleet\n\nbundles: many: namespace: cluster.labels.ns\nbundles: many: resources: [\n")
	for i := range n {
		fmt.Fprintf(&b, "\t{apiVersion: \"v1\", kind: \"ConfigMap\", metadata: name: \"cm-%02d\", data: v: %q},\n", i, cmp.Or(changed[i], "1"))
	}
	b.WriteString("]\n")
	return b.String()
}

// configMapEntry is the inventory entry of a ConfigMap of namespace ns.
func configMapEntry(ns, name string) apply.Entry {
	return apply.Entry{ID: object.ObjMetadata{Namespace: ns, Name: name, GroupKind: schema.GroupKind{Kind: "ConfigMap"}}, Version: "v1"}
}

// editByHand sets a ConfigMap's v as another field manager would.
func editByHand(t *testing.T, ns, name, v string) {
	t.Helper()
	var cm corev1.ConfigMap
	if err := kube.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &cm); err != nil {
		t.Fatal(err)
	}
	cm.Data["v"] = v
	if err := kube.Update(context.Background(), &cm, client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
}

// incrementalPass runs a pass that must apply in proportion to the
// change, and returns its bundle's result and the cm-* objects it asked
// the API server about.
func incrementalPass(t *testing.T, a *testAgent, reqs *objectRequests) (*apply.BundleResult, []string, map[string]int) {
	t.Helper()
	p := a.RunOnce(context.Background())
	if p.Failed() || !p.Changed {
		t.Fatalf("pass: changed %v, err %v, result %+v", p.Changed, p.Err, p.Result)
	}
	if p.Full != "" {
		t.Fatalf("the pass was full (%s), want incremental", p.Full)
	}
	b := p.Result.Bundle("many")
	if !b.Incremental {
		t.Fatalf("bundle many synced in full: %+v", b)
	}
	names, verbs := reqs.take()
	return b, names, verbs
}

// TestIncrementalPasses: between full passes, an agent applies in
// proportion to the change, and drift correction stays as it was:
//   - a commit that changes 3 of 40 ConfigMaps asks the API server about
//     those 3 only (a GET, a dry run and a patch each);
//   - an object edited by hand between two passes is seen by the watch and
//     corrected, the only object asked about, also when the edit only
//     removed a field;
//   - an object deleted by hand is re-created, the only one asked about;
//   - a restarted agent does one full reconcile (every object checked, a
//     hand edit made while it was down corrected), then incremental ones.
func TestIncrementalPasses(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": manyConfigMaps(40, nil)})
	reqs := newObjectRequests()
	a := newAgent(t, reqs.wrap(cluster.Config), repo, "prod-1", nil)
	if p := a.RunOnce(context.Background()); p.Failed() || p.Full != "the agent's first pass" {
		t.Fatalf("first pass: full %q, err %v, result %+v", p.Full, p.Err, p.Result)
	}
	watching, stop := context.WithCancel(context.Background())
	defer stop()
	a.WatchApplied(watching)
	waitFor(t, func() bool { return a.Unmoved(configMapEntry(a.NS, "cm-39")) })
	reqs.take()

	repo.Commit(map[string]string{"fleet.cue": manyConfigMaps(40, map[int]string{3: "2", 17: "2", 29: "2"})})
	b, names, verbs := incrementalPass(t, a, reqs)
	if b.Counts.Configured != 3 || b.Counts.Unchanged != 37 {
		t.Errorf("counts %+v, want 3 configured and 37 unchanged", b.Counts)
	}
	if want := []string{"cm-03", "cm-17", "cm-29"}; !slices.Equal(names, want) {
		t.Errorf("a 3-object change asked about %v, want %v", names, want)
	}
	if want := map[string]int{"GET": 3, "PATCH (dry run)": 3, "PATCH": 3}; !maps.Equal(verbs, want) {
		t.Errorf("a 3-object change made %v, want %v", verbs, want)
	}
	if data, _ := a.configMapData(t, "cm-17"); data["v"] != "2" {
		t.Errorf("cm-17 after the change: %v", data)
	}

	// A hand edit: the watch sees it, the pass corrects that object alone.
	editByHand(t, a.NS, "cm-05", "by-hand")
	waitFor(t, func() bool { return !a.Unmoved(configMapEntry(a.NS, "cm-05")) })
	b, names, _ = incrementalPass(t, a, reqs)
	if data, _ := a.configMapData(t, "cm-05"); data["v"] != "1" || b.Counts.Drifted != 1 {
		t.Errorf("cm-05 after the pass: %v, counts %+v", data, b.Counts)
	}
	if !slices.Equal(names, []string{"cm-05"}) {
		t.Errorf("correcting cm-05 asked about %v", names)
	}
	settled(t, a, reqs, "cm-05")

	// A hand edit that only removes a field Flotilla set leaves no entry of
	// the editor's in managedFields: the watch sees Flotilla's shrink.
	var cm corev1.ConfigMap
	if err := kube.Get(context.Background(), client.ObjectKey{Namespace: a.NS, Name: "cm-13"}, &cm); err != nil {
		t.Fatal(err)
	}
	delete(cm.Data, "v")
	if err := kube.Update(context.Background(), &cm, client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return !a.Unmoved(configMapEntry(a.NS, "cm-13")) })
	if _, names, _ = incrementalPass(t, a, reqs); !slices.Equal(names, []string{"cm-13"}) {
		t.Errorf("putting back cm-13's removed field asked about %v", names)
	}
	if data, _ := a.configMapData(t, "cm-13"); data["v"] != "1" {
		t.Errorf("cm-13 after the pass: %v", data)
	}
	settled(t, a, reqs, "cm-13")

	// A hand deletion: re-created, alone.
	if err := kube.Delete(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: a.NS, Name: "cm-07"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return !a.Unmoved(configMapEntry(a.NS, "cm-07")) })
	_, names, _ = incrementalPass(t, a, reqs)
	if data, ok := a.configMapData(t, "cm-07"); !ok || data["v"] != "1" {
		t.Errorf("cm-07 not re-created: %v %v", data, ok)
	}
	if !slices.Equal(names, []string{"cm-07"}) {
		t.Errorf("re-creating cm-07 asked about %v", names)
	}
	settled(t, a, reqs, "cm-07")
	if p := a.RunOnce(context.Background()); p.Changed || p.Failed() {
		t.Errorf("a pass with nothing changed: changed %v, err %v", p.Changed, p.Err)
	}
	rec := httptest.NewRecorder()
	a.Handler(nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, want := range []string{`flotilla_bundle_syncs_total{mode="full"} 1`, `flotilla_bundle_syncs_total{mode="incremental"} `} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// The agent stops; cm-09 is edited while it is down; a new agent on
	// the same cluster checks everything once, then applies what changes.
	stop()
	editByHand(t, a.NS, "cm-09", "while-down")
	reqs.take()
	restarted := newAgent(t, reqs.wrap(cluster.Config), repo, "prod-1", nil, sameNamespace(a.NS))
	p := restarted.RunOnce(context.Background())
	if p.Failed() || p.Full != "the agent's first pass" || p.Result.Bundle("many").Incremental {
		t.Fatalf("the restarted agent's first pass: full %q, err %v", p.Full, p.Err)
	}
	if data, _ := a.configMapData(t, "cm-09"); data["v"] != "1" {
		t.Errorf("the restarted agent's full pass left cm-09 at %v", data)
	}
	if names, _ = reqs.take(); len(names) != 40 {
		t.Errorf("the full pass asked about %d of 40 objects", len(names))
	}
	watching, stop = context.WithCancel(context.Background())
	defer stop()
	restarted.WatchApplied(watching)
	waitFor(t, func() bool { return restarted.Unmoved(configMapEntry(a.NS, "cm-00")) })
	repo.Commit(map[string]string{"fleet.cue": manyConfigMaps(40, map[int]string{3: "2", 17: "2", 29: "2", 11: "3"})})
	if _, names, _ = incrementalPass(t, restarted, reqs); !slices.Equal(names, []string{"cm-11"}) {
		t.Errorf("after its full pass, the restarted agent's change asked about %v", names)
	}
}

// settled runs the passes the watch asks for until it vouches for the
// objects again: a pass checks once more an object Flotilla corrected
// within the second of the edit (managedFields times have one-second
// resolution), or before the watch saw the correction. The requests are
// then forgotten.
func settled(t *testing.T, a *testAgent, reqs *objectRequests, names ...string) {
	t.Helper()
	waitFor(t, func() bool {
		if p := a.RunOnce(context.Background()); p.Failed() {
			t.Fatalf("pass: %v", p.Err)
		}
		for _, name := range names {
			if !a.Unmoved(configMapEntry(a.NS, name)) {
				return false
			}
		}
		return true
	})
	reqs.take()
}

// sameNamespace makes a test agent apply to, and keep its inventory and
// identity in, namespace ns (another agent's: a restart).
func sameNamespace(ns string) func(*agent.Options) {
	return func(o *agent.Options) {
		o.Apply.InventoryNamespace, o.Identity.ConfigMapNamespace = ns, ns
		o.Identity.Labels["ns"] = ns
	}
}

// TestFullSyncInterval: past the interval a pass checks every object even
// when nothing changed and nothing was watched, and corrects a hand edit;
// with every pass full (a negative interval, --full-sync-interval 0) an
// unchanged revision still costs nothing.
func TestFullSyncInterval(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": manyConfigMaps(5, nil)})
	a := newAgent(t, cluster.Config, repo, "prod-1", nil, func(o *agent.Options) { o.FullSyncInterval = time.Nanosecond })
	if p := a.RunOnce(context.Background()); p.Failed() {
		t.Fatal(p.Err)
	}
	editByHand(t, a.NS, "cm-02", "by-hand") // no watch runs: only a full pass can see it
	p := a.RunOnce(context.Background())
	if p.Failed() || !p.Changed || p.Full != "the full-sync interval" {
		t.Fatalf("pass past the interval: changed %v, full %q, err %v", p.Changed, p.Full, p.Err)
	}
	if data, _ := a.configMapData(t, "cm-02"); data["v"] != "1" {
		t.Errorf("the full pass left cm-02 at %v", data)
	}

	every := newAgent(t, cluster.Config, repo, "prod-1", nil, func(o *agent.Options) { o.FullSyncInterval = -1 })
	if p := every.RunOnce(context.Background()); p.Failed() {
		t.Fatal(p.Err)
	}
	if p := every.RunOnce(context.Background()); p.Changed || p.Failed() {
		t.Errorf("every pass full, nothing changed: changed %v, err %v", p.Changed, p.Err)
	}
	repo.Commit(map[string]string{"fleet.cue": manyConfigMaps(5, map[int]string{1: "2"})})
	if p := every.RunOnce(context.Background()); p.Failed() || p.Full == "" || p.Result.Bundle("many").Incremental {
		t.Errorf("every pass full, a change: full %q, err %v", p.Full, p.Err)
	}
}

// TestBrokenWatchMakesAFullPass: after a watch of the applied objects
// fails, the next pass is full, even with nothing changed; then passes
// are idle again.
func TestBrokenWatchMakesAFullPass(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": manyConfigMaps(3, nil)})
	a := newAgent(t, cluster.Config, repo, "prod-1", nil)
	if p := a.RunOnce(context.Background()); p.Failed() {
		t.Fatal(p.Err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	a.WatchApplied(ctx)
	a.BreakWatch(ctx)
	p := a.RunOnce(context.Background())
	if p.Failed() || !p.Changed || p.Full != "a watch of the applied objects was interrupted" || p.Result.Bundle("many").Incremental {
		t.Fatalf("pass after a broken watch: changed %v, full %q, err %v", p.Changed, p.Full, p.Err)
	}
	if p := a.RunOnce(context.Background()); p.Changed || p.Failed() {
		t.Errorf("the pass after: changed %v, err %v", p.Changed, p.Err)
	}
}

// TestCRDUpgradeIsFull: a commit that changes a CRD of the bundle syncs
// every bundle in full (its objects may need applying again under the
// new definition), though the agent's pass was not due a full one.
func TestCRDUpgradeIsFull(t *testing.T) {
	repo := gittest.New(t)
	reqs := newObjectRequests()
	a := newAgent(t, reqs.wrap(cluster.Config), repo, "prod-1", nil)
	group := a.NS + ".example.com"
	fleetWith := func(field string) string {
		return manyConfigMaps(4, nil) + fmt.Sprintf(`
bundles: widgets: namespace: cluster.labels.ns
bundles: widgets: resources: [{
	apiVersion: "apiextensions.k8s.io/v1", kind: "CustomResourceDefinition"
	metadata: name: "widgets.%[1]s"
	spec: {
		group: "%[1]s", scope: "Namespaced"
		names: {plural: "widgets", singular: "widget", kind: "Widget", listKind: "WidgetList"}
		versions: [{name: "v1", served: true, storage: true, schema: openAPIV3Schema: {
			type: "object"
			properties: spec: {type: "object", properties: {size: type: "string", %[2]s: type: "string"}}
		}}]
	}
}, {apiVersion: "%[1]s/v1", kind: "Widget", metadata: name: "w", spec: size: "s"}]
`, group, field)
	}
	repo.Commit(map[string]string{"fleet.cue": fleetWith("colour")})
	for range 2 { // the second: the new CRD changed the cluster's API
		if p := a.RunOnce(context.Background()); p.Failed() || p.Full == "" {
			t.Fatalf("pass: full %q, err %v, result %+v", p.Full, p.Err, p.Result)
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	a.WatchApplied(ctx)
	waitFor(t, func() bool { return a.Unmoved(configMapEntry(a.NS, "cm-03")) })
	reqs.take()

	repo.Commit(map[string]string{"fleet.cue": fleetWith("shape")})
	p := a.RunOnce(context.Background())
	if p.Failed() || p.Full != "" {
		t.Fatalf("pass after the CRD changed: full %q, err %v, result %+v", p.Full, p.Err, p.Result)
	}
	for _, b := range p.Result.Bundles {
		if b.Incremental {
			t.Errorf("bundle %s synced incrementally with a CRD changed", b.Name)
		}
	}
	if names, _ := reqs.take(); len(names) != 4 {
		t.Errorf("the full sync asked about %v, want all 4 ConfigMaps", names)
	}
}

// TestAnnotatedObjectsAreCheckedOnce: an object another manager wrote
// without changing what Flotilla applied (a controller's annotation) is
// dry-run by the pass that follows, found as rendered, and then trusted
// while it stays so: the next change asks about its own object only.
func TestAnnotatedObjectsAreCheckedOnce(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": manyConfigMaps(6, nil)})
	reqs := newObjectRequests()
	a := newAgent(t, reqs.wrap(cluster.Config), repo, "prod-1", nil)
	if p := a.RunOnce(context.Background()); p.Failed() {
		t.Fatal(p.Err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	a.WatchApplied(ctx)
	waitFor(t, func() bool { return a.Unmoved(configMapEntry(a.NS, "cm-04")) })

	var cm corev1.ConfigMap
	if err := kube.Get(ctx, client.ObjectKey{Namespace: a.NS, Name: "cm-04"}, &cm); err != nil {
		t.Fatal(err)
	}
	cm.Annotations = map[string]string{"example.com/seen-by": "a-controller"}
	if err := kube.Update(ctx, &cm, client.FieldOwner("a-controller")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return !a.Unmoved(configMapEntry(a.NS, "cm-04")) })
	reqs.take()
	b, names, _ := incrementalPass(t, a, reqs)
	if !slices.Equal(names, []string{"cm-04"}) || b.Counts.Drifted != 0 {
		t.Errorf("the pass after the annotation asked about %v, counts %+v: want a check of cm-04, no drift", names, b.Counts)
	}
	if !a.Unmoved(configMapEntry(a.NS, "cm-04")) {
		t.Error("cm-04, found as rendered, is still taken as moved")
	}
	repo.Commit(map[string]string{"fleet.cue": manyConfigMaps(6, map[int]string{1: "2"})})
	if _, names, _ = incrementalPass(t, a, reqs); !slices.Equal(names, []string{"cm-01"}) {
		t.Errorf("the next change asked about %v, want cm-01 alone", names)
	}
}

// TestDriftSurvivesAFailedPass: a hand edit seen while Git is down, or
// whose correction the API server fails, is still corrected by a later
// pass, though the revision did not change; an object deleted before the
// watch started (no event will say so) is re-created by the pass the
// watch asks for once it has listed the kind.
func TestDriftSurvivesAFailedPass(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": manyConfigMaps(4, nil)})
	var failing atomic.Bool
	cfg := rest.CopyConfig(cluster.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTrip(func(r *http.Request) (*http.Response, error) {
			if failing.Load() && r.Method == http.MethodPatch && strings.Contains(r.URL.Path, "/configmaps/cm-") {
				return nil, errors.New("the API server is unreachable (a test)")
			}
			return rt.RoundTrip(r)
		})
	})
	a := newAgent(t, cfg, repo, "prod-1", nil)
	if p := a.RunOnce(context.Background()); p.Failed() {
		t.Fatal(p.Err)
	}
	if err := kube.Delete(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: a.NS, Name: "cm-03"}}); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	a.WatchApplied(ctx)
	waitFor(t, func() bool {
		if p := a.RunOnce(context.Background()); p.Failed() {
			t.Fatal(p.Err)
		}
		_, ok := a.configMapData(t, "cm-03")
		return ok
	})

	editByHand(t, a.NS, "cm-01", "by-hand")
	waitFor(t, func() bool { return !a.Unmoved(configMapEntry(a.NS, "cm-01")) })
	moved := repo.Bare + ".away"
	if err := os.Rename(repo.Bare, moved); err != nil {
		t.Fatal(err)
	}
	if p := a.RunOnce(context.Background()); !p.Failed() {
		t.Fatal("a pass with the repository gone did not fail")
	}
	if err := os.Rename(moved, repo.Bare); err != nil {
		t.Fatal(err)
	}
	if p := a.RunOnce(context.Background()); p.Failed() || !p.Changed {
		t.Fatalf("the pass with Git back: changed %v, err %v", p.Changed, p.Err)
	}
	if data, _ := a.configMapData(t, "cm-01"); data["v"] != "1" {
		t.Errorf("cm-01 after Git came back: %v", data)
	}

	settled(t, a, newObjectRequests(), "cm-01")
	editByHand(t, a.NS, "cm-02", "by-hand")
	waitFor(t, func() bool { return !a.Unmoved(configMapEntry(a.NS, "cm-02")) })
	failing.Store(true)
	if p := a.RunOnce(context.Background()); !p.Failed() {
		t.Fatal("a pass whose patches fail did not fail")
	}
	failing.Store(false)
	if p := a.RunOnce(context.Background()); p.Failed() || !p.Changed {
		t.Fatalf("the pass after: changed %v, err %v", p.Changed, p.Err)
	}
	if data, _ := a.configMapData(t, "cm-02"); data["v"] != "1" {
		t.Errorf("cm-02 after the API server came back: %v", data)
	}
}
