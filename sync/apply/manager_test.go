package apply_test

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/flotilla-gitops/flotilla/internal/testenv"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/apply"
)

// One real control plane for the package's tests, as fluxcd/pkg/ssa does;
// each test uses namespaces and an inventory namespace of its own.
var (
	cluster *testenv.Cluster
	kube    client.Client
	seq     atomic.Int64
)

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	os.Exit(testenv.RunMain(m, testenv.Options{Name: "apply"}, func(c *testenv.Cluster) error {
		cluster = c
		var err error
		kube, err = client.New(c.Config, client.Options{})
		return err
	}))
}

// fixture gives a test its own namespace names and a manager whose
// inventories live in a namespace of the test's own.
type fixture struct {
	t    *testing.T
	id   string
	mgr  *apply.Manager
	opts apply.Options
}

func newFixture(t *testing.T, tweak ...func(*apply.Options)) *fixture {
	t.Helper()
	id := fmt.Sprintf("t%d", seq.Add(1))
	opts := apply.DefaultOptions()
	opts.InventoryNamespace = id + "-inventory"
	opts.WaitInterval = 100 * time.Millisecond
	for _, f := range tweak {
		f(&opts)
	}
	return &fixture{t: t, id: id, mgr: newManager(t, cluster.Config, opts), opts: opts}
}

func newManager(t *testing.T, cfg *rest.Config, opts apply.Options) *apply.Manager {
	t.Helper()
	m, err := apply.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ns is a namespace name of the test.
func (f *fixture) ns(name string) string { return f.id + "-" + name }

func configMap(ns, name string, data map[string]string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": name, "namespace": ns},
	}}
	d := map[string]any{}
	for k, v := range data {
		d[k] = v
	}
	u.Object["data"] = d
	return u
}

func namespace(name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name},
	}}
}

// bundle builds a bundle whose digest is derived from its objects' names
// and data, as a render digest would be.
func bundle(name string, objects ...*unstructured.Unstructured) apply.Bundle {
	var sig strings.Builder
	for _, o := range objects {
		fmt.Fprintf(&sig, "%s/%s/%s=%v;", o.GetKind(), o.GetNamespace(), o.GetName(), o.Object["data"])
	}
	return apply.Bundle{Name: name, Namespace: "default", Objects: objects, Digest: sig.String(),
		ApplyOptions: spec.ApplyOptions{Prune: true, Timeout: metav1.Duration{Duration: 30 * time.Second}}}
}

func (f *fixture) sync(bundles ...apply.Bundle) *apply.Result {
	f.t.Helper()
	res, err := f.mgr.Sync(context.Background(), bundles)
	if err != nil {
		f.t.Fatalf("sync: %v", err)
	}
	return res
}

func (f *fixture) exists(obj *unstructured.Unstructured) bool {
	f.t.Helper()
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(obj.GroupVersionKind())
	err := kube.Get(context.Background(), client.ObjectKeyFromObject(obj), got)
	if err != nil && !apierrors.IsNotFound(err) {
		f.t.Fatal(err)
	}
	return err == nil && got.GetDeletionTimestamp() == nil
}

func phase(t *testing.T, res *apply.Result, name string, want apply.Phase) *apply.BundleResult {
	t.Helper()
	b := res.Bundle(name)
	if b == nil {
		t.Fatalf("no result for bundle %s: %+v", name, res.Bundles)
	}
	if b.Phase != want {
		t.Fatalf("bundle %s: phase %s (%s, errors %v), want %s", name, b.Phase, b.Message, b.Errors, want)
	}
	return b
}

// TestCreateNoopChangePrune runs a bundle through its life: created, then
// nothing to do, then changed with one object gone.
func TestCreateNoopChangePrune(t *testing.T) {
	f := newFixture(t)
	ns := f.ns("app")
	a := configMap(ns, "a", map[string]string{"k": "1"})
	b := configMap(ns, "b", map[string]string{"k": "1"})

	res := f.sync(bundle("app", namespace(ns), a, b))
	got := phase(t, res, "app", apply.PhaseReady)
	if got.Counts.Created != 3 {
		t.Errorf("created %d, want 3: %+v", got.Counts.Created, got.Objects)
	}

	res = f.sync(bundle("app", namespace(ns), a, b))
	got = phase(t, res, "app", apply.PhaseReady)
	if got.Counts.Unchanged != 3 || got.Counts.Created+got.Counts.Configured+got.Counts.Deleted != 0 {
		t.Errorf("second sync counts %+v, want 3 unchanged", got.Counts)
	}

	b2 := configMap(ns, "b", map[string]string{"k": "2"})
	c := configMap(ns, "c", map[string]string{"k": "1"})
	res = f.sync(bundle("app", namespace(ns), b2, c))
	got = phase(t, res, "app", apply.PhaseReady)
	if got.Counts.Created != 1 || got.Counts.Configured != 1 || got.Counts.Deleted != 1 {
		t.Errorf("change counts %+v, want 1 created, 1 configured, 1 deleted: %+v", got.Counts, got.Objects)
	}
	if f.exists(a) || !f.exists(c) {
		t.Errorf("a exists %v (want pruned), c exists %v", f.exists(a), f.exists(c))
	}
	var inv corev1.ConfigMap
	if err := kube.Get(context.Background(), client.ObjectKey{Namespace: f.opts.InventoryNamespace, Name: "flotilla-inv-app"}, &inv); err != nil {
		t.Fatalf("inventory: %v", err)
	}
	if n := strings.Count(inv.Data["objects"], "\n") + 1; n != 3 {
		t.Errorf("inventory lists %d objects, want 3:\n%s", n, inv.Data["objects"])
	}
}

// TestDeselectionDeletes checks that a bundle that leaves the plan is
// deleted, its namespace last because Flotilla created it, while a
// namespace that existed before is left.
func TestDeselectionDeletes(t *testing.T) {
	f := newFixture(t)
	own, preexisting := f.ns("own"), f.ns("pre")
	if err := kube.Create(context.Background(), namespace(preexisting)); err != nil {
		t.Fatal(err)
	}
	keep := configMap(f.ns("own"), "keep", nil)
	gone := configMap(preexisting, "gone", nil)
	f.sync(bundle("keep", namespace(own), keep), bundle("gone", namespace(preexisting), gone))

	res := f.sync(bundle("keep", namespace(own), keep))
	got := phase(t, res, "gone", apply.PhasePruned)
	if f.exists(gone) {
		t.Error("deselected bundle's object still exists")
	}
	if !f.exists(namespace(preexisting)) {
		t.Error("a namespace Flotilla did not create was deleted")
	}
	if !strings.Contains(fmt.Sprint(got.Objects), "orphaned") {
		t.Errorf("adopted namespace not reported as left: %+v", got.Objects)
	}
	if !f.exists(keep) {
		t.Error("kept bundle was touched")
	}
}

// TestDeselectionWithoutPrune checks that a bundle with prune off leaves
// its objects when the cluster stops getting it, and forgets them.
func TestDeselectionWithoutPrune(t *testing.T) {
	f := newFixture(t)
	ns := f.ns("keep")
	cm := configMap(ns, "cm", nil)
	b := bundle("kept", namespace(ns), cm)
	b.Prune = false
	f.sync(b, bundle("other", configMap(ns, "other", nil)))

	res := f.sync(bundle("other", configMap(ns, "other", nil)))
	got := phase(t, res, "kept", apply.PhasePruned)
	if !strings.Contains(got.Message, "prune: false") || !f.exists(cm) || !f.exists(namespace(ns)) {
		t.Errorf("objects of a prune: false bundle were deleted (%s)", got.Message)
	}
	if res := f.sync(bundle("other", configMap(ns, "other", nil))); res.Bundle("kept") != nil {
		t.Error("the inventory of the left bundle is still there")
	}
}

// TestFailedBundlePrunesNothing checks that a bundle that failed to render
// keeps its objects and inventory, and that its dependents are skipped.
func TestFailedBundlePrunesNothing(t *testing.T) {
	f := newFixture(t)
	ns := f.ns("app")
	cm := configMap(ns, "cm", nil)
	f.sync(bundle("app", namespace(ns), cm))

	broken := bundle("app")
	broken.Err = fmt.Errorf("fleet.cue:3:5: conflicting values")
	dependent := bundle("web", configMap(ns, "web", nil))
	dependent.DependsOn = []string{"app"}
	res := f.sync(broken, dependent)
	phase(t, res, "app", apply.PhaseFailed)
	skipped := phase(t, res, "web", apply.PhaseSkipped)
	if !strings.Contains(skipped.Message, "app (Failed)") {
		t.Errorf("skip reason %q", skipped.Message)
	}
	if !f.exists(cm) || !f.exists(namespace(ns)) {
		t.Error("a failed bundle's objects were pruned")
	}
	// The next good render finds the inventory intact: nothing to create.
	res = f.sync(bundle("app", namespace(ns), cm))
	if got := phase(t, res, "app", apply.PhaseReady); got.Counts.Unchanged != 2 {
		t.Errorf("counts %+v after recovery", got.Counts)
	}
}

// TestMassDeletionGuard checks that a sync that would delete most managed
// objects deletes nothing until allowed.
func TestMassDeletionGuard(t *testing.T) {
	f := newFixture(t)
	ns := f.ns("many")
	objs := []*unstructured.Unstructured{namespace(ns)}
	for i := range 10 {
		objs = append(objs, configMap(ns, fmt.Sprintf("cm-%d", i), nil))
	}
	f.sync(bundle("many", objs...), bundle("small", configMap(ns, "small", nil)))

	res := f.sync(bundle("small", configMap(ns, "small", nil)))
	if !strings.Contains(res.Guard, "would delete 11 of the 12 managed objects") {
		t.Fatalf("guard %q", res.Guard)
	}
	if !f.exists(objs[1]) {
		t.Fatal("the guard let an object be deleted")
	}
	allowed := newManager(t, cluster.Config, func() apply.Options { o := f.opts; o.AllowMassDeletion = true; return o }())
	res, err := allowed.Sync(context.Background(), []apply.Bundle{bundle("small", configMap(ns, "small", nil))})
	if err != nil {
		t.Fatal(err)
	}
	phase(t, res, "many", apply.PhasePruned)
	if f.exists(objs[1]) {
		t.Error("allowed deletion did not delete")
	}
	// The namespace bundle "many" created still holds bundle "small".
	if !f.exists(objs[0]) || !f.exists(configMap(ns, "small", nil)) {
		t.Error("a namespace in use by another bundle was deleted")
	}
}

// TestDependsOnOrder checks that a custom resource waits for the bundle
// that installs its CRD, and that CRD and custom resource also work in one
// bundle.
func TestDependsOnOrder(t *testing.T) {
	f := newFixture(t)
	group := f.id + ".example.flotilla.dev"
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "gizmos." + group},
		"spec": map[string]any{
			"group": group, "scope": "Namespaced",
			"names": map[string]any{"kind": "Gizmo", "plural": "gizmos", "singular": "gizmo"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
		},
	}}
	ns := f.ns("gizmos")
	gizmo := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": group + "/v1", "kind": "Gizmo",
		"metadata": map[string]any{"name": "g", "namespace": ns}, "spec": map[string]any{"size": int64(3)},
	}}
	crds := bundle("crds", crd, namespace(ns))
	users := bundle("users", gizmo)
	users.DependsOn = []string{"crds"}
	// Listed dependents first: the order comes from dependsOn.
	res := f.sync(users, crds)
	phase(t, res, "crds", apply.PhaseReady)
	phase(t, res, "users", apply.PhaseReady)
	if !f.exists(gizmo) {
		t.Error("custom resource not created")
	}

	g2 := newFixture(t)
	group2 := g2.id + ".example.flotilla.dev"
	crd2 := crd.DeepCopy()
	crd2.SetName("gizmos." + group2)
	_ = unstructured.SetNestedField(crd2.Object, group2, "spec", "group")
	gizmo2 := gizmo.DeepCopy()
	gizmo2.SetAPIVersion(group2 + "/v1")
	res = g2.sync(bundle("together", crd2, namespace(ns), gizmo2))
	phase(t, res, "together", apply.PhaseReady)
}
