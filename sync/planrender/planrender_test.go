package planrender_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
)

// TestDistinctInputsRenderOnce checks that clusters sharing a bundle's
// inputs and capabilities share one render, and that differing
// capabilities render again.
func TestDistinctInputsRenderOnce(t *testing.T) {
	f, err := fleet.Load("../..", fleet.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := planrender.New("../..", planrender.Options{})
	render := func(c fleet.Cluster) planrender.Bundle {
		t.Helper()
		p, err := f.Plan(c)
		if err != nil {
			t.Fatal(err)
		}
		rendered, err := r.RenderPlan(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range rendered {
			if b.Name == "team-storefront" {
				if b.Err != nil {
					t.Fatal(b.Err)
				}
				return b
			}
		}
		t.Fatalf("team-storefront not planned for %s", c.Name)
		return planrender.Bundle{}
	}
	// team-storefront does not depend on the cluster's name: two standard
	// clusters share its render.
	us, _ := f.InventoryCluster("prod-us-1")
	staging, _ := f.InventoryCluster("staging-eu-1")
	a, b := render(us), render(staging)
	if a.Result != b.Result {
		t.Errorf("equal inputs rendered twice")
	}
	before := r.Distinct()
	us.Facts.KubernetesVersion = "v1.34.0"
	if c := render(us); c.Result == a.Result || r.Distinct() <= before {
		t.Errorf("other capabilities shared a render")
	}
}

// TestRenderPlanReportsFailures checks that a bundle that failed to plan
// is reported with its positioned errors and the others still render.
func TestRenderPlanReportsFailures(t *testing.T) {
	f, err := fleet.Load("../..", fleet.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// An active regulated cluster outside the EU regions the storefront
	// team sizes: no overlay gives web a replica count.
	p, err := f.Plan(fleet.Cluster{Name: "odd", Region: "ap-south-1", Labels: map[string]string{"env": "prod", "class": "regulated", "role": "active"}})
	if err != nil {
		t.Fatal(err)
	}
	bundles, err := planrender.New("../..", planrender.Options{}).RenderPlan(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	var failed, rendered int
	for _, b := range bundles {
		switch {
		case b.Err != nil:
			failed++
			if b.Name != "web" || !strings.Contains(b.Err.Error(), "fleet.cue:") {
				t.Errorf("%s: %v", b.Name, b.Err)
			}
		default:
			rendered++
		}
	}
	if failed != 1 || rendered == 0 {
		t.Errorf("%d failed, %d rendered", failed, rendered)
	}
}

// TestRenderTypesMirrorFleetTypes checks, level by level, that render's
// Go form of a source has exactly the JSON fields of fleet's (whose own
// fields fleet's tests check against the schema), so that a field added to
// the schema and to fleet cannot be lost on its way to a renderer.
func TestRenderTypesMirrorFleetTypes(t *testing.T) {
	mirror(t, "source", reflect.TypeFor[spec.Source](), reflect.TypeFor[spec.Source]())
	// A request carries the inputs a renderer needs, under the same names.
	inputs := jsonNames(reflect.TypeFor[fleet.Inputs]())
	for name := range jsonNames(reflect.TypeFor[render.Request]()) {
		if _, ok := inputs[name]; !ok {
			t.Errorf("render.Request field %q is not among fleet.Inputs'", name)
		}
	}
}

// mirror compares two struct types by JSON field names, recursing into
// fields that hold structs.
func mirror(t *testing.T, at string, a, b reflect.Type) {
	t.Helper()
	fa, fb := jsonNames(a), jsonNames(b)
	if !slices.Equal(slices.Sorted(maps.Keys(fa)), slices.Sorted(maps.Keys(fb))) {
		t.Errorf("%s: %s has %v, %s has %v", at, a, slices.Sorted(maps.Keys(fa)), b, slices.Sorted(maps.Keys(fb)))
		return
	}
	for name, ta := range fa {
		ta, tb := structOf(ta), structOf(fb[name])
		if ta != nil && tb != nil {
			mirror(t, at+"."+name, ta, tb)
		} else if (ta == nil) != (tb == nil) || fa[name].Kind() != fb[name].Kind() {
			t.Errorf("%s.%s: %s vs %s", at, name, fa[name], fb[name])
		}
	}
}

// jsonNames maps a struct's JSON field names to their types.
func jsonNames(typ reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out[name] = f.Type
		}
	}
	return out
}

// structOf is the struct a field holds, directly or through a pointer,
// slice or map; nil for other types.
func structOf(typ reflect.Type) reflect.Type {
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
		typ = typ.Elem()
	}
	if typ.Kind() == reflect.Struct {
		return typ
	}
	return nil
}

// TestRequestKeepsEverySourceField checks the JSON contract between the
// fleet's planned inputs and the render request (two sets of Go types, as
// fleet and render may not import each other): every source field set in
// a plan reaches the renderer.
func TestRequestKeepsEverySourceField(t *testing.T) {
	b := &fleet.Bundle{Inputs: fleet.Inputs{
		Name: "b", Namespace: "ns", Values: json.RawMessage(`{"a":1}`),
		Source: spec.Source{
			Kind:      spec.KindKustomize,
			Helm:      &spec.Helm{Chart: "c", Repo: "https://charts.example", Version: "1.0.0", ReleaseName: "r", IncludeHooks: true},
			Kustomize: &spec.Kustomize{Path: "k", Images: []spec.Image{{Name: "i", NewName: "n", NewTag: "t", Digest: "d"}}, Patches: map[string]spec.Patch{"p": {Patch: "x", Target: &spec.PatchTarget{Group: "g", Version: "v", Kind: "K", Name: "n", Namespace: "ns", LabelSelector: "l", AnnotationSelector: "a"}}}, Labels: map[string]string{"l": "v"}, Components: []string{"c"}},
			Manifests: &spec.Manifests{Path: "m", Recursive: true},
			Resources: json.RawMessage(`[{"kind":"X"}]`),
		},
	}}
	req := planrender.Request("repo", fleet.Cluster{Name: "c"}, b)
	want, _ := json.Marshal(b.Source)
	got, _ := json.Marshal(req.Source)
	if string(got) != string(want) {
		t.Errorf("source changed on the way:\nplan   %s\nrender %s", want, got)
	}
	if req.Bundle != "b" || req.Namespace != "ns" || string(req.Values) != `{"a":1}` || req.RepoDir != "repo" || req.Cluster != "c" {
		t.Errorf("request %+v", req)
	}
}

// TestSharedObjectsAreRefused: two bundles of one cluster that render the
// same object would fight over it; the later one (in apply order) fails,
// naming the object and the other bundle, and the earlier one renders.
func TestSharedObjectsAreRefused(t *testing.T) {
	dir := t.TempDir()
	src := `package fleet

clusters: c1: {}
bundles: a: resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: {name: "shared", namespace: "default"}}]
bundles: b: resources: [
	{apiVersion: "v1", kind: "ConfigMap", metadata: {name: "shared", namespace: "default"}},
	{apiVersion: "v1", kind: "ConfigMap", metadata: {name: "own", namespace: "default"}},
]
`
	if err := os.WriteFile(filepath.Join(dir, "fleet.cue"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := fleet.Load(dir, fleet.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := f.InventoryCluster("c1")
	p, err := f.Plan(c)
	if err != nil {
		t.Fatal(err)
	}
	bundles, err := planrender.New(dir, planrender.Options{}).ApplyBundles(context.Background(), p, "rev")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bundles {
		switch b.Name {
		case "a":
			if b.Err != nil || len(b.Objects) != 1 {
				t.Errorf("a: %v, %d objects", b.Err, len(b.Objects))
			}
		case "b":
			if !errors.Is(b.Err, planrender.ErrSharedObject) || !strings.Contains(b.Err.Error(), "ConfigMap default/shared (also in bundle a)") || len(b.Objects) != 0 {
				t.Errorf("b: %v, %d objects", b.Err, len(b.Objects))
			}
		}
	}
}

// TestTenantObjectsStayInTheirGrant renders tenants' bundles whose objects
// leave the tenant: into another tenant's namespace, cluster-scoped kinds
// not granted, a Namespace not the tenant's. Each fails whole, before
// apply, naming the objects; a bundle within its grant, a platform bundle
// and the same bundle rendered for a second cluster behave as they should.
func TestTenantObjectsStayInTheirGrant(t *testing.T) {
	dir := t.TempDir()
	src := `package fleet

clusters: {c1: {}, c2: {}}
tenancy: {
	platform: ["platform"]
	tenants: "team-a": {
		bundles: ["a-*"]
		namespaces: ["team-a", "team-a-*"]
		serviceAccounts: ["deployer"]
		clusterKinds: ["Namespace"]
		files: []
	}
}
_team: {namespace: "team-a", serviceAccountName: "deployer"}
bundles: "a-good": _team & {resources: [
	{apiVersion: "v1", kind: "ConfigMap", metadata: name: "plain"},
	{apiVersion: "v1", kind: "ConfigMap", metadata: {name: "other", namespace: "team-a-jobs"}},
	{apiVersion: "v1", kind: "Namespace", metadata: name: "team-a-jobs"},
]}
bundles: "a-cross": _team & {resources: [
	{apiVersion: "v1", kind: "ConfigMap", metadata: name: "fine"},
	{apiVersion: "v1", kind: "Secret", metadata: {name: "steal", namespace: "team-b"}},
]}
bundles: "a-cluster": _team & {resources: [
	{apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRoleBinding", metadata: name: "me-admin"
	 roleRef: {apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "cluster-admin"}},
]}
bundles: "a-namespace": _team & {resources: [
	{apiVersion: "v1", kind: "Namespace", metadata: name: "kube-public"},
]}
bundles: platform: {namespace: "kube-system", resources: [
	{apiVersion: "v1", kind: "ConfigMap", metadata: name: "anywhere"},
	{apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", metadata: name: "anything"},
]}
`
	if err := os.WriteFile(filepath.Join(dir, "fleet.cue"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := fleet.Load(dir, fleet.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := planrender.New(dir, planrender.Options{})
	for _, name := range []string{"c1", "c2"} {
		c, _ := f.InventoryCluster(name)
		p, err := f.Plan(c)
		if err != nil {
			t.Fatal(err)
		}
		bundles, err := r.ApplyBundles(context.Background(), p, "rev")
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{
			"a-cross":     "Secret team-b/steal (namespace team-b is not the tenant's)",
			"a-cluster":   "ClusterRoleBinding.rbac.authorization.k8s.io me-admin (cluster-scoped ClusterRoleBinding.rbac.authorization.k8s.io is not one of the tenant's clusterKinds)",
			"a-namespace": "Namespace kube-public (the Namespace is not one of the tenant's)",
		}
		for _, b := range bundles {
			w, refused := want[b.Name]
			switch {
			case refused && (!errors.Is(b.Err, planrender.ErrNotGranted) || !strings.Contains(b.Err.Error(), w) ||
				!strings.Contains(b.Err.Error(), "cluster "+name+": bundle "+b.Name) || len(b.Objects) != 0):
				t.Errorf("%s: %s: %v, %d objects; want the error to name %q", name, b.Name, b.Err, len(b.Objects), w)
			case refused && strings.Contains(b.Err.Error(), "fine"):
				t.Errorf("%s: the error lists an object within the grant: %v", b.Name, b.Err)
			case !refused && b.Err != nil:
				t.Errorf("%s: %s failed: %v", name, b.Name, b.Err)
			}
		}
	}
}
