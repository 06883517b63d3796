package apply_test

import (
	"context"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/sync/apply"
)

// TestNeverTakesOverAnotherControllersObjects: objects that Argo CD, Flux
// or a Helm release manage in the cluster fail the bundle that would take
// them over, naming the owner, and nothing of the bundle is applied —
// unless the bundle says adopt. An object Flotilla already holds in its
// inventory is not questioned again.
func TestNeverTakesOverAnotherControllersObjects(t *testing.T) {
	f := newFixture(t)
	ns := f.ns("app")
	ctx := context.Background()
	if err := kube.Create(ctx, namespace(ns)); err != nil {
		t.Fatal(err)
	}
	owned := map[string]struct {
		labels, annotations map[string]string
		owner               string
	}{
		"argo": {annotations: map[string]string{"argocd.argoproj.io/tracking-id": "guestbook:/ConfigMap:" + ns + "/argo"}, owner: "Argo CD application guestbook"},
		"flux": {labels: map[string]string{"kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}, owner: "Flux Kustomization flux-system/apps"},
		"helm": {annotations: map[string]string{"meta.helm.sh/release-name": "web", "meta.helm.sh/release-namespace": ns}, owner: "Helm release " + ns + "/web"},
	}
	for name, o := range owned {
		cm := configMap(ns, name, map[string]string{"owner": "them"})
		cm.SetLabels(o.labels)
		cm.SetAnnotations(o.annotations)
		if err := kube.Create(ctx, cm); err != nil {
			t.Fatal(err)
		}
	}
	// Labels that charts set on everything are no mark of Argo CD.
	plain := configMap(ns, "plain", map[string]string{"owner": "them"})
	plain.SetLabels(map[string]string{"app.kubernetes.io/instance": "web", "app.kubernetes.io/managed-by": "Helm"})
	if err := kube.Create(ctx, plain); err != nil {
		t.Fatal(err)
	}

	fresh := configMap(ns, "fresh", map[string]string{"owner": "flotilla"})
	for name, o := range owned {
		res := f.sync(bundle("app", fresh, configMap(ns, name, map[string]string{"owner": "flotilla"})))
		got := phase(t, res, "app", apply.PhaseFailed)
		msg := strings.Join(got.Errors, "\n")
		if !strings.Contains(msg, o.owner) || !strings.Contains(msg, "adopt: true") || !strings.Contains(msg, "/"+name) {
			t.Errorf("%s: error does not name the owner %q, the object and the way out: %s", name, o.owner, msg)
		}
		if f.exists(fresh) {
			t.Fatalf("%s: the bundle was partly applied although it takes over %s's object", name, o.owner)
		}
		if got := dataOf(t, ns, name, "owner"); got != "them" {
			t.Errorf("%s: the owner's object was changed: owner=%q", name, got)
		}
	}

	// The plain object is taken: its labels are common to Helm charts.
	res := f.sync(bundle("app", fresh, configMap(ns, "plain", map[string]string{"owner": "flotilla"})))
	phase(t, res, "app", apply.PhaseReady)
	if got := dataOf(t, ns, "plain", "owner"); got != "flotilla" {
		t.Errorf("plain object not applied: owner=%q", got)
	}

	// adopt: true takes the Flux object over; it is then the bundle's, and
	// stays so although it still carries Flux's labels.
	b := bundle("app", fresh, configMap(ns, "plain", map[string]string{"owner": "flotilla"}), configMap(ns, "flux", map[string]string{"owner": "flotilla"}))
	b.Adopt = true
	phase(t, f.sync(b), "app", apply.PhaseReady)
	if got := dataOf(t, ns, "flux", "owner"); got != "flotilla" {
		t.Errorf("adopted object not applied: owner=%q", got)
	}
	b.Adopt = false
	b.Digest += "changed"
	phase(t, f.sync(b), "app", apply.PhaseReady)
}

func TestForeignOwner(t *testing.T) {
	for _, c := range []struct {
		labels, annotations map[string]string
		want                string
	}{
		{nil, nil, ""},
		{map[string]string{"argocd.argoproj.io/instance": "web"}, nil, "Argo CD application web"},
		{map[string]string{"helm.toolkit.fluxcd.io/name": "web", "helm.toolkit.fluxcd.io/namespace": "apps"}, nil, "Flux HelmRelease apps/web"},
		{nil, map[string]string{"meta.helm.sh/release-name": "web"}, "Helm release web"},
		{map[string]string{"app.kubernetes.io/instance": "web", "app.kubernetes.io/managed-by": "flotilla"}, nil, ""},
	} {
		if got := apply.ForeignOwner(c.labels, c.annotations); got != c.want {
			t.Errorf("ForeignOwner(%v, %v) = %q, want %q", c.labels, c.annotations, got, c.want)
		}
	}
}
