package apply_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/apply"
)

// inventoryNames lists the inventory ConfigMaps of the fixture.
func (f *fixture) inventoryNames() []string {
	f.t.Helper()
	var cms corev1.ConfigMapList
	if err := kube.List(context.Background(), &cms, client.InNamespace(f.opts.InventoryNamespace), client.HasLabels{spec.InventoryLabel}); err != nil {
		f.t.Fatal(err)
	}
	var names []string
	for _, cm := range cms.Items {
		names = append(names, cm.Name)
	}
	slices.Sort(names)
	return names
}

// TestInventoryNamesDoNotCollide: bundle web's second shard and bundle
// web-1's inventory have different names, so each sync reads both back
// whole (with "-1" shards, web-1 overwrote web's shard and every later
// sync failed).
func TestInventoryNamesDoNotCollide(t *testing.T) {
	defer apply.SetEntriesPerShard(2)()
	f := newFixture(t)
	ns := f.ns("apps")
	web := bundle("web", namespace(ns), configMap(ns, "a", nil), configMap(ns, "b", nil))
	web1 := bundle("web-1", configMap(ns, "c", nil))
	for range 2 {
		res := f.sync(web, web1)
		phase(t, res, "web", apply.PhaseReady)
		phase(t, res, "web-1", apply.PhaseReady)
	}
	want := []string{"flotilla-inv-web", "flotilla-inv-web-1", "flotilla-inv-web.1"}
	if got := f.inventoryNames(); !slices.Equal(got, want) {
		t.Errorf("inventories %v, want %v", got, want)
	}
	// Both stay whole: dropping one object from each prunes just it.
	web = bundle("web", namespace(ns), configMap(ns, "a", nil))
	web1 = bundle("web-1")
	res := f.sync(web, web1)
	if got := phase(t, res, "web", apply.PhaseReady); got.Counts.Deleted != 1 {
		t.Errorf("web: %+v", got)
	}
	if f.exists(configMap(ns, "b", nil)) || f.exists(configMap(ns, "c", nil)) || !f.exists(configMap(ns, "a", nil)) {
		t.Error("the wrong objects were pruned")
	}
}

// TestUnreadableInventoryStopsOnlyItsBundle: a bundle whose inventory is
// damaged (a shard gone) fails alone and keeps its objects, in the plan or
// out of it; the other bundles sync.
func TestUnreadableInventoryStopsOnlyItsBundle(t *testing.T) {
	defer apply.SetEntriesPerShard(1)()
	f := newFixture(t)
	ns := f.ns("apps")
	a, b := configMap(ns, "a", nil), configMap(ns, "b", nil)
	web := bundle("web", namespace(ns), a, b)
	other := bundle("other", configMap(ns, "c", nil))
	phase(t, f.sync(web, other), "web", apply.PhaseReady)
	shard := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: f.opts.InventoryNamespace, Name: "flotilla-inv-web.2"}}
	if err := kube.Delete(context.Background(), shard); err != nil {
		t.Fatal(err)
	}

	// In the plan, changed: not applied, nothing pruned.
	res := f.sync(bundle("web", namespace(ns), a), other)
	got := phase(t, res, "web", apply.PhaseFailed)
	if !strings.Contains(strings.Join(got.Errors, " ")+got.Message, "inventory of bundle web has 2 shards, its head says 3") {
		t.Errorf("web: %+v", got)
	}
	phase(t, res, "other", apply.PhaseReady)
	// Out of the plan: not deleted.
	res = f.sync(other)
	got = phase(t, res, "web", apply.PhaseFailed)
	if !strings.Contains(got.Message, "not deleted") {
		t.Errorf("web: %+v", got)
	}
	if !f.exists(a) || !f.exists(b) {
		t.Error("objects of a bundle with an unreadable inventory were deleted")
	}
}

// TestAPIServerRestartMidApply restarts the kube-apiserver (SIGTERM, then
// the same flags and etcd) while 1,500 objects are being applied: that
// sync fails, nothing is lost, and the next one completes with the
// objects and the inventory in agreement.
func TestAPIServerRestartMidApply(t *testing.T) {
	const total = 1500
	f := newFixture(t)
	ns := f.ns("restart")
	objs := []*unstructured.Unstructured{namespace(ns)}
	for i := range total {
		objs = append(objs, configMap(ns, fmt.Sprintf("cm-%d", i), map[string]string{"i": fmt.Sprint(i)}))
	}
	b := bundle("big", objs...)
	count := func() int {
		var cms corev1.ConfigMapList
		if err := kube.List(context.Background(), &cms, client.InNamespace(ns)); err != nil {
			return -1 // the server is restarting
		}
		return len(cms.Items)
	}

	done := make(chan *apply.Result, 1)
	go func() {
		res, err := f.mgr.Sync(context.Background(), []apply.Bundle{b})
		if err != nil {
			res = &apply.Result{Bundles: []apply.BundleResult{{Name: "big", Phase: apply.PhaseFailed, Errors: []string{err.Error()}}}}
		}
		done <- res
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for count() < 200 {
		if time.Now().After(deadline) {
			t.Fatal("200 objects not applied in 2m")
		}
		time.Sleep(20 * time.Millisecond) // polling the API: the sync gives no signal mid-apply
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cluster.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if first := <-done; first.Bundle("big").Phase == apply.PhaseReady {
		t.Fatal("the sync finished before the restart: nothing was tested")
	}

	res := f.sync(b)
	phase(t, res, "big", apply.PhaseReady)
	if n := count(); n != total {
		t.Errorf("%d ConfigMaps after the next sync, want %d", n, total)
	}
	invs, broken, err := apply.ReadInventories(context.Background(), kube, f.opts.InventoryNamespace)
	if err != nil || len(broken) > 0 || invs["big"] == nil {
		t.Fatalf("reading the inventory: %v %v", err, broken)
	}
	entries := len(invs["big"].Entries)
	if entries != total+1 { // and the Namespace
		t.Errorf("the inventory lists %d objects, want %d", entries, total+1)
	}
}

// TestEntryLinesReadBothWays: an entry's digest is a field an agent from
// before digests does not read (it reads the first three), and a line
// without one reads as no digest (the object is applied).
func TestEntryLinesReadBothWays(t *testing.T) {
	for line, want := range map[string]apply.Entry{
		"ns_cm__ConfigMap v1 created d=abc": {Version: "v1", Created: true, Digest: "abc"},
		"ns_cm__ConfigMap v1 d=abc":         {Version: "v1", Digest: "abc"},
		"ns_cm__ConfigMap v1 created":       {Version: "v1", Created: true},
		"ns_cm__ConfigMap v1":               {Version: "v1"},
	} {
		got, err := apply.ParseEntry(line)
		if err != nil || got.Version != want.Version || got.Created != want.Created || got.Digest != want.Digest {
			t.Errorf("%q: %+v %v, want %+v", line, got, err, want)
		}
		if got.String() != line {
			t.Errorf("%q written back as %q", line, got.String())
		}
	}
}
