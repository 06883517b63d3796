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

	boot, err := companion.FluxBootstrap("flux-1", companion.BootstrapOptions{URL: url, Branch: "hydrated"})
	if err != nil {
		t.Fatal(err)
	}
	objects, err := ssautils.ReadObjects(bytes.NewReader(boot))
	if err != nil {
		t.Fatal(err)
	}
	rm := ssa.NewResourceManager(kube, nil, ssa.Owner{Field: "test"})
	if _, err := rm.ApplyAll(ctx, objects, ssa.DefaultApplyOptions()); err != nil {
		t.Fatal(err)
	}

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
