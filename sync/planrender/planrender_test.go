package planrender_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/fleet"
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
		for _, b := range r.RenderPlan(context.Background(), p) {
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
	var failed, rendered int
	for _, b := range planrender.New("../..", planrender.Options{}).RenderPlan(context.Background(), p) {
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

// TestRequestKeepsEverySourceField checks the JSON contract between the
// fleet's planned inputs and the render request (two sets of Go types, as
// fleet and render may not import each other): every source field set in
// a plan reaches the renderer.
func TestRequestKeepsEverySourceField(t *testing.T) {
	b := &fleet.Bundle{Inputs: fleet.Inputs{
		Name: "b", Namespace: "ns", Values: json.RawMessage(`{"a":1}`),
		Source: fleet.Source{
			Kind:      fleet.SourceKustomize,
			Helm:      &fleet.Helm{Chart: "c", Repo: "https://charts.example", Version: "1.0.0", ReleaseName: "r", IncludeHooks: true},
			Kustomize: &fleet.Kustomize{Path: "k", Images: []fleet.KustomizeImage{{Name: "i", NewName: "n", NewTag: "t", Digest: "d"}}, Patches: map[string]fleet.KustomizePatch{"p": {Patch: "x", Target: &fleet.KustomizeTarget{Group: "g", Version: "v", Kind: "K", Name: "n", Namespace: "ns", LabelSelector: "l", AnnotationSelector: "a"}}}, Labels: map[string]string{"l": "v"}, Components: []string{"c"}},
			Manifests: &fleet.Manifests{Path: "m", Recursive: true},
			Resources: json.RawMessage(`[{"kind":"X"}]`),
		},
	}}
	req, err := planrender.Request("repo", fleet.Cluster{Name: "c"}, b)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(b.Source)
	got, _ := json.Marshal(req.Source)
	if string(got) != string(want) {
		t.Errorf("source changed on the way:\nplan   %s\nrender %s", want, got)
	}
	if req.Bundle != "b" || req.Namespace != "ns" || string(req.Values) != `{"a":1}` || req.RepoDir != "repo" || req.Cluster != "c" {
		t.Errorf("request %+v", req)
	}
}
