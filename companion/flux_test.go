package companion_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/ssa"
	ssautils "github.com/fluxcd/pkg/ssa/utils"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/companion"
	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/internal/testenv"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/identity"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

const fluxFleet = `package fleet

clusters: "flux-1": {region: "eu-west-1", labels: class: "standard"}
bundles: web: {
	namespace: "web"
	dependsOn: ["db"]
	resources: [
		{apiVersion: "v1", kind: "Namespace", metadata: name: "web"},
		{apiVersion: "v1", kind: "ConfigMap", metadata: name: "web", data: region: cluster.region},
	]
}
bundles: db: {
	namespace: "db"
	resources: [
		{apiVersion: "v1", kind: "Namespace", metadata: name: "db"},
		{apiVersion: "v1", kind: "ConfigMap", metadata: name: "db", data: size: "small"},
	]
}
`

// fluxFleetWithoutDB drops db (and web's dependency on it).
var fluxFleetWithoutDB = strings.NewReplacer(`dependsOn: ["db"]`, ``, `bundles: db:`, `_db:`).Replace(fluxFleet)

// TestFluxAppliesTheHydratedBranch runs Flux's real source-controller and
// kustomize-controller against a local control plane: bootstrapped with
// what --flux-bootstrap prints, Flux follows the hydrated branch served
// over HTTP, the bundles' objects appear and their Kustomizations are
// Ready; a hydration that drops a bundle makes Flux prune it; an agent
// observing Flux reports both states on the status branch, each bundle at
// its source commit.
func TestFluxAppliesTheHydratedBranch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cluster := testenv.StartT(t, testenv.Options{Name: "flux"})
	if err := cluster.StartFlux(ctx); err != nil {
		t.Fatal(err)
	}
	kube, err := client.New(cluster.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}

	repo := gittest.New(t)
	v1 := repo.Commit(map[string]string{"fleet.cue": fluxFleet})
	push := func() {
		t.Helper()
		if _, err := companion.CommitBranch(ctx, repo.Work, hydrate(t, repo.Work), companion.CommitOptions{Branch: "hydrated", Push: true}); err != nil {
			t.Fatal(err)
		}
	}
	push()
	url := repo.ServeHTTPOpen()

	bootstrapFlux(t, ctx, kube, "flux-1", url)

	waitFor(t, ctx, "Flux applies web and db, and their Kustomizations are Ready", cluster, func() error {
		for _, name := range []string{"flotilla-db", "flotilla-web"} {
			if err := kustomizationReady(ctx, kube, name); err != nil {
				return err
			}
		}
		for _, ns := range []string{"web", "db"} {
			if err := kube.Get(ctx, client.ObjectKey{Namespace: ns, Name: ns}, &corev1.ConfigMap{}); err != nil {
				return err
			}
		}
		return nil
	})

	observer, err := companion.NewObserver(cluster.Config, companion.ObserveOptions{
		Identity: identity.Options{Name: "flux-1", Region: "eu-west-1", Labels: map[string]string{"class": "standard"}},
		Interval: time.Minute, Status: report.Options{URL: repo.URL},
		HydratedURL: repo.URL, HydratedBranch: "hydrated",
	}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	st, err := observer.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkObserved(t, ctx, repo.URL, st, v1, "db", "web")

	// v2 drops db: Flux prunes it.
	v2 := repo.Commit(map[string]string{"fleet.cue": fluxFleetWithoutDB})
	push()
	requestReconcile(t, ctx, kube)
	waitFor(t, ctx, "Flux prunes the dropped bundle db", cluster, func() error {
		err := kube.Get(ctx, client.ObjectKey{Namespace: "db", Name: "db"}, &corev1.ConfigMap{})
		if err == nil {
			return fmt.Errorf("ConfigMap db/db is still there")
		}
		if !apierrors.IsNotFound(err) {
			return err
		}
		return kustomizationAt(ctx, kube, "flotilla-web", gittest.Git(t, repo.Bare, "rev-parse", "hydrated"))
	})
	if err := kube.Get(ctx, client.ObjectKey{Namespace: "web", Name: "web"}, &corev1.ConfigMap{}); err != nil {
		t.Fatalf("web must stay: %v", err)
	}
	st, err = observer.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkObserved(t, ctx, repo.URL, st, v2, "web")
}

// bootstrapFlux applies what --flux-bootstrap prints for cluster, as
// `kubectl apply -f -` would.
func bootstrapFlux(t *testing.T, ctx context.Context, kube client.Client, cluster, url string) {
	t.Helper()
	boot, err := companion.FluxBootstrap(cluster, companion.BootstrapOptions{URL: url, Branch: "hydrated"})
	if err != nil {
		t.Fatal(err)
	}
	objects, err := ssautils.ReadObjects(bytes.NewReader(boot))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ssa.NewResourceManager(kube, nil, ssa.Owner{Field: "test"}).ApplyAll(ctx, objects, ssa.DefaultApplyOptions()); err != nil {
		t.Fatal(err)
	}
}

// checkObserved checks the observer's status, and the same read back from
// the cluster's status branch.
func checkObserved(t *testing.T, ctx context.Context, url string, st *report.Status, revision string, bundles ...string) {
	t.Helper()
	back, err := report.ReadCluster(ctx, url, "", "flux-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*report.Status{st, back} {
		var names []string
		for _, b := range s.Bundles {
			names = append(names, b.Name)
			if b.Phase != apply.PhaseReady || b.Revision != revision {
				t.Errorf("bundle %s: phase %s at %s (%s), want Ready at %s", b.Name, b.Phase, b.Revision, b.Message, revision)
			}
		}
		if strings.Join(names, ",") != strings.Join(bundles, ",") || s.Phase != report.ClusterReady || s.AppliedRevision != revision || s.SeenRevision != revision {
			t.Errorf("status: bundles %v phase %s applied %s seen %s (%s); want %v Ready at %s", names, s.Phase, s.AppliedRevision, s.SeenRevision, s.Message, bundles, revision)
		}
	}
}

var kustomizationKind = schema.GroupVersionKind{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Kind: "Kustomization"}

func getKustomization(ctx context.Context, kube client.Client, name string) (*unstructured.Unstructured, error) {
	k := &unstructured.Unstructured{}
	k.SetGroupVersionKind(kustomizationKind)
	err := kube.Get(ctx, client.ObjectKey{Namespace: testenv.FluxNamespace, Name: name}, k)
	return k, err
}

func kustomizationReady(ctx context.Context, kube client.Client, name string) error {
	k, err := getKustomization(ctx, kube, name)
	if err != nil {
		return err
	}
	conds, _, _ := unstructured.NestedSlice(k.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
			if m["status"] == "True" {
				return nil
			}
			return fmt.Errorf("Kustomization %s: %v: %v", name, m["reason"], m["message"])
		}
	}
	return fmt.Errorf("Kustomization %s has no Ready condition yet", name)
}

// kustomizationAt waits for a Kustomization Ready at a hydrated commit.
func kustomizationAt(ctx context.Context, kube client.Client, name, commit string) error {
	if err := kustomizationReady(ctx, kube, name); err != nil {
		return err
	}
	k, _ := getKustomization(ctx, kube, name)
	rev, _, _ := unstructured.NestedString(k.Object, "status", "lastAppliedRevision")
	if !strings.HasSuffix(rev, commit) {
		return fmt.Errorf("Kustomization %s applied %s, not yet %s", name, rev, commit)
	}
	return nil
}

// requestReconcile asks source-controller to fetch the hydrated branch now
// (as `flux reconcile source git` does) instead of at its interval.
func requestReconcile(t *testing.T, ctx context.Context, kube client.Client) {
	t.Helper()
	repo := &unstructured.Unstructured{}
	repo.SetGroupVersionKind(schema.GroupVersionKind{Group: "source.toolkit.fluxcd.io", Version: "v1", Kind: "GitRepository"})
	repo.SetNamespace(testenv.FluxNamespace)
	repo.SetName("flotilla")
	patch := fmt.Sprintf(`{"metadata":{"annotations":{"reconcile.fluxcd.io/requestedAt":%q}}}`, time.Now().Format(time.RFC3339Nano))
	if err := kube.Patch(ctx, repo, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls check until it passes, bounded by time; on failure it
// shows the controllers' logs.
func waitFor(t *testing.T, ctx context.Context, what string, c *testenv.Cluster, check func() error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 4*time.Minute, true, func(context.Context) (bool, error) {
		last = check()
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("%s: %v (last: %v)\nlogs in %s", what, err, last, c.Dir)
	}
}

const fluxWavesFleet = `package fleet

clusters: {
	"flux-canary": {region: "eu-west-1", labels: {}}
	"flux-eu":     {region: "eu-west-2", labels: {}}
}
rollout: {
	waves: [{name: "canary", names: ["flux-canary"]}, {name: "eu", approve: true}]
	bake: "0s"
}
bundles: web: {namespace: "web", resources: [
	{apiVersion: "v1", kind: "Namespace", metadata: name: "web"},
	{apiVersion: "v1", kind: "ConfigMap", metadata: name: "web", data: version: "%s"},
	%s
]}
`

// TestFluxWavesFollowTheRollout: two clusters, each with the real Flux,
// in two waves. A change reaches the canary's Flux; the eu cluster's Flux
// applies the new hydrated commit but keeps its objects (its folder is
// held) until the approval; an observer beside each reports what Flux
// applied at the source commit of its own folder; a change that fails in
// the canary's Flux halts the eu wave even approved.
func TestFluxWavesFollowTheRollout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	repo := gittest.New(t)
	commit := func(version, extra string) string {
		return repo.Commit(map[string]string{"fleet.cue": fmt.Sprintf(fluxWavesFleet, version, extra)})
	}
	approve := func(rev string) {
		t.Helper()
		if _, err := report.Approve(ctx, report.ApproveOptions{URL: repo.URL, Author: object.Signature{Name: "Ops", Email: "ops@example.com", When: time.Now()}},
			report.Approval{Revision: rev, Wave: "eu", By: "Ops <ops@example.com>", At: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	push := func() *companion.Output {
		t.Helper()
		out, err := companion.Hydrate(ctx, companion.Options{Dir: repo.Work, Status: report.Branches{URL: repo.URL}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := companion.CommitBranch(ctx, repo.Work, out, companion.CommitOptions{Branch: "hydrated", Push: true}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	v1 := commit("1", "")
	approve(v1)
	push()
	url := repo.ServeHTTPOpen()

	type fluxCluster struct {
		name     string
		env      *testenv.Cluster
		kube     client.Client
		observer *companion.Observer
	}
	var clusters []*fluxCluster
	for _, name := range []string{"flux-canary", "flux-eu"} {
		env := testenv.StartT(t, testenv.Options{Name: name})
		if err := env.StartFlux(ctx); err != nil {
			t.Fatal(err)
		}
		kube, err := client.New(env.Config, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		bootstrapFlux(t, ctx, kube, name, url)
		region := map[string]string{"flux-canary": "eu-west-1", "flux-eu": "eu-west-2"}[name]
		observer, err := companion.NewObserver(env.Config, companion.ObserveOptions{
			Identity: identity.Options{Name: name, Region: region, Labels: map[string]string{}},
			Interval: time.Minute, Status: report.Options{URL: repo.URL}, HydratedURL: repo.URL, HydratedBranch: "hydrated",
		}, logr.Discard())
		if err != nil {
			t.Fatal(err)
		}
		clusters = append(clusters, &fluxCluster{name: name, env: env, kube: kube, observer: observer})
	}
	canary, eu := clusters[0], clusters[1]
	configVersion := func(c *fluxCluster) string {
		var cm corev1.ConfigMap
		if err := c.kube.Get(ctx, client.ObjectKey{Namespace: "web", Name: "web"}, &cm); err != nil {
			return "none"
		}
		return cm.Data["version"]
	}
	// reconciled waits until Flux in c applied the hydrated tip.
	reconciled := func(c *fluxCluster, what string, check func() error) {
		t.Helper()
		requestReconcile(t, ctx, c.kube)
		tip := gittest.Git(t, repo.Bare, "rev-parse", "hydrated")
		waitFor(t, ctx, c.name+": "+what, c.env, func() error {
			if err := kustomizationAt(ctx, c.kube, "flotilla-web", tip); err != nil && check == nil {
				return err
			}
			if check != nil {
				return check()
			}
			return nil
		})
	}
	observe := func(c *fluxCluster) *report.Status {
		t.Helper()
		st, err := c.observer.Observe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}

	for _, c := range clusters {
		reconciled(c, "Flux applies v1", nil)
		if v := configVersion(c); v != "1" {
			t.Fatalf("%s: version %s", c.name, v)
		}
		if st := observe(c); st.AppliedRevision != v1 || st.Phase != report.ClusterReady {
			t.Fatalf("%s observed %s at %.7s", c.name, st.Phase, st.AppliedRevision)
		}
	}

	// v2: the canary takes it; eu's Flux applies the new hydrated commit
	// and keeps version 1; its observer says v1.
	v2 := commit("2", "")
	if out := push(); len(out.Gates) != 1 || out.Gates[0].Cluster != "flux-eu" {
		t.Fatalf("held: %+v", out.Gates)
	}
	reconciled(canary, "Flux applies v2", nil)
	reconciled(eu, "Flux applies the new hydrated commit", nil)
	if configVersion(canary) != "2" || configVersion(eu) != "1" {
		t.Fatalf("canary at %s, eu at %s", configVersion(canary), configVersion(eu))
	}
	if st := observe(eu); st.AppliedRevision != v1 {
		t.Errorf("eu's observer says it applied %.7s, its folder is at v1 %.7s", st.AppliedRevision, v1)
	}
	if st := observe(canary); st.AppliedRevision != v2 || st.Phase != report.ClusterReady {
		t.Fatalf("canary observed %s at %.7s", st.Phase, st.AppliedRevision)
	}
	if out := push(); len(out.Gates) != 1 || !strings.Contains(out.Gates[0].Reason, "waits for an approval") {
		t.Fatalf("before the approval: %+v", out.Gates)
	}
	approve(v2)
	if out := push(); len(out.Gates) != 0 {
		t.Fatalf("approved: still held %+v", out.Gates)
	}
	approvedTip := gittest.Git(t, repo.Bare, "rev-parse", "hydrated")
	reconciled(eu, "Flux applies v2 after the approval", func() error {
		// Applied and recorded: the status Flux writes after the apply
		// is what the observer reads.
		if err := kustomizationAt(ctx, eu.kube, "flotilla-web", approvedTip); err != nil {
			return err
		}
		if v := configVersion(eu); v != "2" {
			return fmt.Errorf("version %s", v)
		}
		return nil
	})
	if st := observe(eu); st.AppliedRevision != v2 {
		t.Errorf("eu observed at %.7s, want v2", st.AppliedRevision)
	}

	// v3 fails in the canary's Flux: eu halts, approved or not.
	v3 := commit("3", `{apiVersion: "v1", kind: "Service", metadata: name: "bad", spec: {type: "Bogus", ports: [{port: 80}]}},`)
	approve(v3)
	push()
	reconciled(canary, "Flux fails v3", func() error {
		if err := kustomizationReady(ctx, canary.kube, "flotilla-web"); err == nil {
			return fmt.Errorf("still Ready")
		}
		if st := observe(canary); st.Phase != report.ClusterFailed || st.SeenRevision != v3 {
			return fmt.Errorf("observed %s, seen %.7s", st.Phase, st.SeenRevision)
		}
		return nil
	})
	out := push()
	if len(out.Gates) != 1 || out.Gates[0].Cluster != "flux-eu" || out.Gates[0].Halted != "flux-canary" {
		t.Fatalf("after the canary failed: %+v", out.Gates)
	}
	reconciled(eu, "Flux keeps v2", nil)
	if v := configVersion(eu); v != "2" {
		t.Errorf("eu at %s after the halt", v)
	}
}

const fluxTenantFleet = `package fleet

clusters: "flux-1": {region: "eu-west-1", labels: {}}
bundles: "team-a-space": resources: [
	{apiVersion: "v1", kind: "Namespace", metadata: name: "team-a"},
	{apiVersion: "v1", kind: "ServiceAccount", metadata: {name: "deployer", namespace: "team-a"}},
	{apiVersion: "rbac.authorization.k8s.io/v1", kind: "Role", metadata: {name: "deployer", namespace: "team-a"},
		rules: [{apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]}]},
	{apiVersion: "rbac.authorization.k8s.io/v1", kind: "RoleBinding", metadata: {name: "deployer", namespace: "team-a"},
		roleRef: {apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "deployer"},
		subjects: [{kind: "ServiceAccount", name: "deployer", namespace: "team-a"}]},
]
bundles: team: {
	namespace: "team-a"
	serviceAccountName: "deployer"
	dependsOn: ["team-a-space"]
	resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "team", data: owner: "team-a"}]
}
`

// TestFluxTenantFromAnEmptyCluster: a bundle applied as a tenant's
// ServiceAccount has its Kustomization in the tenant's namespace, which
// another bundle creates. From an empty cluster, the root Kustomization
// creates that namespace first (if absent, never pruned), so neither waits
// for the other, and Flux applies the tenant's objects as the tenant —
// also under Flux's multi-tenancy lockdown (--no-cross-namespace-refs),
// where the tenant's Kustomization reads a GitRepository of its own
// namespace (hydrate --flux-no-cross-namespace-refs).
func TestFluxTenantFromAnEmptyCluster(t *testing.T) {
	for _, lockdown := range []bool{false, true} {
		t.Run(map[bool]string{false: "default", true: "no-cross-namespace-refs"}[lockdown], func(t *testing.T) {
			fluxTenant(t, lockdown)
		})
	}
}

func fluxTenant(t *testing.T, lockdown bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cluster := testenv.StartT(t, testenv.Options{Name: "flux-tenant"})
	var flags []string
	if lockdown {
		flags = []string{"--no-cross-namespace-refs=true"}
	}
	if err := cluster.StartFlux(ctx, flags...); err != nil {
		t.Fatal(err)
	}
	kube, err := client.New(cluster.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	repo := gittest.New(t)
	url := repo.ServeHTTPOpen()
	repo.Commit(map[string]string{"fleet.cue": fluxTenantFleet})
	opts := companion.Options{Dir: repo.Work}
	if lockdown {
		opts.Flux.TenantSource = &companion.GitSource{URL: url, Branch: "hydrated"}
	}
	out, err := companion.Hydrate(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := companion.CommitBranch(ctx, repo.Work, out, companion.CommitOptions{Branch: "hydrated", Push: true}); err != nil {
		t.Fatal(err)
	}
	if ns := show(t, repo.Bare, "hydrated", "clusters/flux-1/flux/namespace-team-a.yaml"); !strings.Contains(ns, "IfNotPresent") {
		t.Fatalf("no namespace beside the Kustomizations:\n%s", ns)
	}
	files := gittest.Git(t, repo.Bare, "ls-tree", "-r", "--name-only", "hydrated", "clusters/flux-1/flux/")
	if strings.Contains(files, "source-team-a.yaml") != lockdown {
		t.Fatalf("a GitRepository in team-a only under the lockdown (%v):\n%s", lockdown, files)
	}
	bootstrapFlux(t, ctx, kube, "flux-1", url)
	waitFor(t, ctx, "Flux applies the tenant's bundle as the tenant", cluster, func() error {
		k := &unstructured.Unstructured{}
		k.SetGroupVersionKind(kustomizationKind)
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "team-a", Name: "flotilla-team"}, k); err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(k.Object, "status", "conditions")
		ready := false
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Ready" && m["status"] == "True" {
				ready = true
			}
		}
		if !ready {
			return fmt.Errorf("flotilla-team not Ready: %v", conds)
		}
		var cm corev1.ConfigMap
		return kube.Get(ctx, client.ObjectKey{Namespace: "team-a", Name: "team"}, &cm)
	})
}
