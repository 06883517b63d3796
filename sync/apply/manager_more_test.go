package apply_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/internal/testenv"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/apply"
)

// editByHand changes a ConfigMap's data as a person with kubectl would.
func editByHand(t *testing.T, ns, name, key, value string) {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := kube.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, cm); err != nil {
		t.Fatal(err)
	}
	cm.Data[key] = value
	if err := kube.Update(context.Background(), cm, client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
}

func dataOf(t *testing.T, ns, name, key string) string {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := kube.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, cm); err != nil {
		t.Fatal(err)
	}
	return cm.Data[key]
}

// TestDrift checks that a change made by hand is put back (Git wins) and
// reported with its fields, or only reported with driftPolicy report.
func TestDrift(t *testing.T) {
	f := newFixture(t)
	ns := f.ns("drift")
	for _, policy := range []spec.DriftPolicy{spec.DriftCorrect, spec.DriftReport} {
		t.Run(policy.String(), func(t *testing.T) {
			name := "settings-" + policy.String()
			b := bundle("drift-"+policy.String(), namespace(ns), configMap(ns, name, map[string]string{"mode": "git"}))
			b.DriftPolicy = policy
			f.sync(b)
			editByHand(t, ns, name, "mode", "hand")

			res := f.sync(b)
			want := map[spec.DriftPolicy]apply.Phase{spec.DriftCorrect: apply.PhaseReady, spec.DriftReport: apply.PhaseDrifted}[policy]
			got := phase(t, res, b.Name, want)
			if got.Counts.Drifted != 1 {
				t.Errorf("drifted %d, want 1: %+v", got.Counts.Drifted, got.Objects)
			}
			var fields []string
			for _, o := range got.Objects {
				fields = append(fields, o.Fields...)
			}
			if !strings.Contains(strings.Join(fields, ","), "/data/mode") {
				t.Errorf("drifted fields %v, want /data/mode", fields)
			}
			wantValue := map[spec.DriftPolicy]string{spec.DriftCorrect: "git", spec.DriftReport: "hand"}[policy]
			if v := dataOf(t, ns, name, "mode"); v != wantValue {
				t.Errorf("after sync the value is %q, want %q", v, wantValue)
			}
		})
	}
}

// TestOptOutAnnotations checks the per-object opt-outs: reconcile
// disabled (never applied, never pruned) and IfNotPresent (created once,
// then left to others).
func TestOptOutAnnotations(t *testing.T) {
	f := newFixture(t)
	ns := f.ns("opt")
	once := configMap(ns, "once", map[string]string{"v": "git"})
	once.SetAnnotations(map[string]string{spec.SSAAnnotation: "IfNotPresent"})
	f.sync(bundle("opt", namespace(ns), once))
	editByHand(t, ns, "once", "v", "other-controller")

	changed := once.DeepCopy()
	_ = unstructured.SetNestedField(changed.Object, "git-2", "data", "v")
	f.sync(bundle("opt", namespace(ns), changed))
	if v := dataOf(t, ns, "once", "v"); v != "other-controller" {
		t.Errorf("IfNotPresent object was changed to %q", v)
	}
}

// TestIgnoredFields checks that a field another controller owns (listed
// in the ignore-fields annotation) is neither reverted nor reported as
// drift.
func TestIgnoredFields(t *testing.T) {
	f := newFixture(t)
	ns := f.ns("ignore")
	scaled := func(a string) *unstructured.Unstructured {
		cm := configMap(ns, "scaled", map[string]string{"a": a, "replicas": "3"})
		cm.SetAnnotations(map[string]string{spec.IgnoreFieldsAnnotation: "/data/replicas"})
		return cm
	}
	f.sync(bundle("scaled", namespace(ns), scaled("1")))
	editByHand(t, ns, "scaled", "replicas", "7")

	res := f.sync(bundle("scaled", namespace(ns), scaled("1")))
	if got := phase(t, res, "scaled", apply.PhaseReady); got.Counts.Drifted != 0 {
		t.Errorf("an ignored field was reported as drift: %+v", got.Objects)
	}
	f.sync(bundle("scaled", namespace(ns), scaled("2")))
	if a, r := dataOf(t, ns, "scaled", "a"), dataOf(t, ns, "scaled", "replicas"); a != "2" || r != "7" {
		t.Errorf("a=%s replicas=%s, want a=2 and the other controller's replicas=7", a, r)
	}
}

// TestImpersonation applies a bundle as a ServiceAccount with real RBAC:
// what its Role allows is applied, what it does not fails the bundle with
// the API server's reason.
func TestImpersonation(t *testing.T) {
	f := newFixture(t)
	ns := f.ns("team")
	ctx := context.Background()
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns}, Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"},
		}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "deployer"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "deployer", Namespace: ns}}},
	} {
		if err := kube.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	allowed := bundle("team-ok", configMap(ns, "ok", nil))
	allowed.Namespace, allowed.ServiceAccountName = ns, "deployer"
	secret := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "nope", "namespace": ns},
	}}
	denied := bundle("team-denied", secret)
	denied.Namespace, denied.ServiceAccountName = ns, "deployer"

	res := f.sync(allowed, denied)
	phase(t, res, "team-ok", apply.PhaseReady)
	got := phase(t, res, "team-denied", apply.PhaseFailed)
	if !strings.Contains(got.Message, "forbidden") || !strings.Contains(got.Message, "system:serviceaccount:"+ns+":deployer") {
		t.Errorf("denial message %q", got.Message)
	}
	if f.exists(secret) {
		t.Error("a denied object was created")
	}
}

// TestDeselectedBundleIsDeletedAsItsServiceAccount: a bundle that leaves
// the plan is deleted with the identity it was applied with. Its
// ServiceAccount may create but not delete, so the deletion is refused
// naming the account (the administrator running this manager could have
// deleted it) and the objects stay recorded; once the account may delete,
// the next sync deletes them.
func TestDeselectedBundleIsDeletedAsItsServiceAccount(t *testing.T) {
	f := newFixture(t)
	ns := f.ns("team")
	ctx := context.Background()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch"},
	}}}
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns}},
		role,
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "deployer"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "deployer", Namespace: ns}}},
	} {
		if err := kube.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	cm := configMap(ns, "team-config", nil)
	team := bundle("team", cm)
	team.Namespace, team.ServiceAccountName = ns, "deployer"
	phase(t, f.sync(team), "team", apply.PhaseReady)

	// Deselected: deleted as deployer, who may not delete.
	got := phase(t, f.sync(), "team", apply.PhaseFailed)
	if msg := strings.Join(got.Errors, "; "); !strings.Contains(msg, "forbidden") || !strings.Contains(msg, "system:serviceaccount:"+ns+":deployer") {
		t.Errorf("the deletion was not made as the bundle's ServiceAccount: %q", msg)
	}
	if !f.exists(cm) {
		t.Fatal("the object is gone although its ServiceAccount may not delete it")
	}

	// Allowed to delete: the next sync (the bundle still recorded) deletes.
	role.Rules[0].Verbs = append(role.Rules[0].Verbs, "delete")
	if err := kube.Update(ctx, role); err != nil {
		t.Fatal(err)
	}
	phase(t, f.sync(), "team", apply.PhasePruned)
	if f.exists(cm) {
		t.Error("the deselected bundle's object is still there")
	}
}

// TestReadinessWait uses a full cluster: a Deployment that becomes
// Available is Ready; one whose node selector matches no node stays
// Progressing and says so after the bundle's timeout.
func TestReadinessWait(t *testing.T) {
	full := testenv.StartT(t, testenv.Options{Name: "apply-full", Full: true, Region: "eu-west-1"})
	opts := apply.DefaultOptions()
	opts.WaitInterval = 200 * time.Millisecond
	m := newManager(t, full.Config, opts)

	deployment := func(name string, nodeSelector map[string]any) *unstructured.Unstructured {
		spec := map[string]any{"containers": []any{map[string]any{"name": "app", "image": "registry.example/app:1"}}}
		if nodeSelector != nil {
			spec["nodeSelector"] = nodeSelector
		}
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apps/v1", "kind": "Deployment",
			"metadata": map[string]any{"name": name, "namespace": "default"},
			"spec": map[string]any{
				"replicas": int64(2),
				"selector": map[string]any{"matchLabels": map[string]any{"app": name}},
				"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": name}}, "spec": spec},
			},
		}}
	}
	ok := bundle("ok", deployment("ok", nil))
	ok.Wait, ok.Timeout.Duration = true, 60*time.Second
	stuck := bundle("stuck", deployment("stuck", map[string]any{"topology.kubernetes.io/region": "mars-1"}))
	stuck.Wait, stuck.Timeout.Duration = true, 3*time.Second

	res, err := m.Sync(context.Background(), []apply.Bundle{ok, stuck})
	if err != nil {
		t.Fatal(err)
	}
	phase(t, res, "ok", apply.PhaseReady)
	got := phase(t, res, "stuck", apply.PhaseProgressing)
	if !strings.Contains(got.Message, "not ready after 3s") || !strings.Contains(got.Message, "stuck") {
		t.Errorf("message %q", got.Message)
	}

	// The end of the context (a newer revision, shutdown) ends a wait at
	// once, whatever the bundle's timeout: the message says the wait was
	// cancelled, where an hour's timeout would say "not ready after 1h".
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	stuck.Timeout.Duration = time.Hour
	stuck.Digest += "-2"
	res, err = m.Sync(ctx, []apply.Bundle{stuck})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Bundle("stuck"); got.Phase != apply.PhaseProgressing || !strings.Contains(got.Message, "cancelled") {
		t.Errorf("after the context ended: %s %q", got.Phase, got.Message)
	}
}

// TestLargeBundle applies 5,000 objects in one bundle: the inventory is
// sharded, and shrinking the bundle prunes and drops shards.
func TestLargeBundle(t *testing.T) {
	f := newFixture(t, func(o *apply.Options) { o.ObjectConcurrency = 16 })
	ns := f.ns("big")
	objs := []*unstructured.Unstructured{namespace(ns)}
	for i := range 5000 {
		objs = append(objs, configMap(ns, fmt.Sprintf("cm-%04d", i), map[string]string{"i": fmt.Sprint(i)}))
	}
	res := f.sync(bundle("big", objs...))
	if got := phase(t, res, "big", apply.PhaseReady); got.Counts.Created != 5001 {
		t.Fatalf("created %d", got.Counts.Created)
	}
	if n := shards(t, f, "big"); n != 6 {
		t.Errorf("%d inventory shards for 5,001 objects, want 6", n)
	}
	res = f.sync(bundle("big", objs[:4001]...))
	if got := phase(t, res, "big", apply.PhaseReady); got.Counts.Deleted != 1000 {
		t.Errorf("deleted %d, want 1000", got.Counts.Deleted)
	}
	if n := shards(t, f, "big"); n != 5 {
		t.Errorf("%d shards after shrinking, want 5", n)
	}
	t.Logf("5,001 objects: %d API requests for the shrinking sync", res.Requests)
}

func shards(t *testing.T, f *fixture, bundle string) int {
	t.Helper()
	var cms corev1.ConfigMapList
	if err := kube.List(context.Background(), &cms, client.InNamespace(f.opts.InventoryNamespace), client.MatchingLabels{spec.InventoryLabel: bundle}); err != nil {
		t.Fatal(err)
	}
	return len(cms.Items)
}

// TestDiff checks the dry-run comparison: created, configured (field
// changes), deleted, Secret values masked; and that it changes nothing.
func TestDiff(t *testing.T) {
	f := newFixture(t)
	ns := f.ns("diff")
	secret := func(token string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "creds", "namespace": ns},
			"stringData": map[string]any{"token": token},
		}}
	}
	f.sync(bundle("app", namespace(ns), configMap(ns, "a", map[string]string{"k": "1"}), configMap(ns, "old", nil), secret("s3cret-1")))

	next := bundle("app", namespace(ns), configMap(ns, "a", map[string]string{"k": "2"}), configMap(ns, "new", nil), secret("s3cret-2"))
	diffs, err := f.mgr.Diff(context.Background(), []apply.Bundle{next})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]apply.ObjectDiff{}
	for _, d := range diffs {
		got[d.Object] = d
	}
	if d := got["ConfigMap/"+ns+"/a"]; d.Action != "configured" || len(d.Changes) != 1 || d.Changes[0].Path != "/data/k" || d.Changes[0].New != "2" {
		t.Errorf("configured: %+v", d)
	}
	if got["ConfigMap/"+ns+"/new"].Action != "created" || got["ConfigMap/"+ns+"/old"].Action != "deleted" {
		t.Errorf("created/deleted: %+v", diffs)
	}
	all := fmt.Sprintf("%+v", diffs)
	if strings.Contains(all, "s3cret") {
		t.Errorf("a Secret value reached the diff: %s", all)
	}
	if !f.exists(configMap(ns, "old", nil)) || dataOf(t, ns, "a", "k") != "1" {
		t.Error("diff changed the cluster")
	}
}

// TestPartialSyncKeepsOtherBundles checks KeepUnlisted (apply --bundle).
func TestPartialSyncKeepsOtherBundles(t *testing.T) {
	f := newFixture(t)
	ns := f.ns("partial")
	other := configMap(ns, "other", nil)
	f.sync(bundle("one", namespace(ns)), bundle("other", other))
	partial := newManager(t, cluster.Config, func() apply.Options { o := f.opts; o.KeepUnlisted = true; return o }())
	res, err := partial.Sync(context.Background(), []apply.Bundle{bundle("one", namespace(ns))})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bundle("other") != nil || !f.exists(other) {
		t.Errorf("a partial sync touched another bundle: %+v", res.Bundles)
	}
}

// TestImmutableChange checks that a change to an immutable field fails the
// bundle, unless the bundle allows recreating (force).
func TestImmutableChange(t *testing.T) {
	f := newFixture(t)
	ns := f.ns("immutable")
	frozen := func(v string) *unstructured.Unstructured {
		cm := configMap(ns, "frozen", map[string]string{"v": v})
		cm.Object["immutable"] = true
		return cm
	}
	f.sync(bundle("frozen", namespace(ns), frozen("1")))

	res := f.sync(bundle("frozen", namespace(ns), frozen("2")))
	got := phase(t, res, "frozen", apply.PhaseFailed)
	if !strings.Contains(got.Message, "immutable") {
		t.Errorf("message %q does not say immutable", got.Message)
	}
	if dataOf(t, ns, "frozen", "v") != "1" {
		t.Error("the immutable object changed")
	}

	forced := bundle("frozen", namespace(ns), frozen("2"))
	forced.Force = true
	phase(t, f.sync(forced), "frozen", apply.PhaseReady)
	if dataOf(t, ns, "frozen", "v") != "2" {
		t.Error("force did not recreate the object")
	}
}
