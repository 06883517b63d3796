package render_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

// TestCheckSource: what a source names must be in the repository and of
// the right kind; nothing outside it is looked at or named (a canary
// folder outside, reached through a symlink, is refused without its name).
func TestCheckSource(t *testing.T) {
	base := t.TempDir()
	repo := filepath.Join(base, "repo")
	outside := filepath.Join(base, "outside-canary")
	for dir, files := range map[string]map[string]string{
		repo: {
			"charts/web/Chart.yaml":            "apiVersion: v2\nname: web\nversion: 0.1.0\n",
			"values/prod.yaml":                 "a: 1\n",
			"overlays/prod/kustomization.yaml": "resources: []\n",
			"overlays/bare/patch.yaml":         "a: b\n",
			"manifests/cm.yaml":                "kind: ConfigMap\n",
		},
		outside: {"Chart.yaml": "apiVersion: v2\nname: canary\nversion: 0.1.0\n", "kustomization.yaml": "resources: []\n"},
	} {
		for name, content := range files {
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Symlink(outside, filepath.Join(repo, "linked")); err != nil {
		t.Fatal(err)
	}
	helm := func(chart string, files ...string) spec.Source {
		return spec.Source{Kind: spec.KindHelm, Helm: &spec.Helm{Chart: chart, ValuesFiles: files}}
	}
	kustomize := func(path string, components ...string) spec.Source {
		return spec.Source{Kind: spec.KindKustomize, Kustomize: &spec.Kustomize{Path: path, Components: components}}
	}
	manifests := func(path string) spec.Source {
		return spec.Source{Kind: spec.KindManifests, Manifests: &spec.Manifests{Path: path}}
	}
	for _, tc := range []struct {
		name    string
		src     spec.Source
		want    string // "" for no error
		escapes bool
	}{
		{"local chart", helm("charts/web", "values/prod.yaml"), "", false},
		{"chart typo", helm("charts/wbe"), `helm.chart "charts/wbe": not in the fleet repository (did you mean "charts/web"?)`, false},
		{"not a chart", helm("values"), `helm.chart "values": not in the fleet repository: the folder has no Chart.yaml`, false},
		{"missing values file", helm("charts/web", "values/staging.yaml"), `helm.valuesFiles "values/staging.yaml": not in the fleet repository`, false},
		{"repository chart", spec.Source{Kind: spec.KindHelm, Helm: &spec.Helm{Chart: "web", Repo: "https://charts.example.com"}}, "", false},
		{"oci chart", helm("oci://registry.example.com/charts/web"), "", false},
		{"kustomization", kustomize("overlays/prod"), "", false},
		{"no kustomization file", kustomize("overlays/bare"), `kustomize.path "overlays/bare": not in the fleet repository: the folder has no kustomization.yaml`, false},
		{"missing component", kustomize("overlays/prod", "components/monitoring"), `kustomize.components "components/monitoring": not in the fleet repository`, false},
		{"manifests", manifests("manifests"), "", false},
		{"manifests is a file", manifests("manifests/cm.yaml"), "as a folder (it is a file)", false},
		{"resources", spec.Source{Kind: spec.KindResources, Resources: []byte("[]")}, "", false},
		{"climbs out", manifests("../outside-canary"), "path leaves the fleet repository", true},
		{"absolute", helm(outside), "path leaves the fleet repository", true},
		{"symlink out", helm("linked"), "linked is a symlink to outside the repository", true},
		{"symlink out, kustomize", kustomize("linked"), "linked is a symlink to outside the repository", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := render.CheckSource(repo, tc.src)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if tc.escapes != errors.Is(err, render.ErrPathEscapes) || tc.escapes == errors.Is(err, render.ErrSourceMissing) {
				t.Errorf("escapes %t, missing %t: %v", errors.Is(err, render.ErrPathEscapes), errors.Is(err, render.ErrSourceMissing), err)
			}
			// What the fleet wrote may be repeated; what a symlink leads to
			// is not.
			if !strings.Contains(pathOf(tc.src), "canary") && strings.Contains(err.Error(), "canary") {
				t.Errorf("the error names what is outside: %v", err)
			}
		})
	}
}

// pathOf is the path a source names.
func pathOf(src spec.Source) string {
	switch {
	case src.Helm != nil:
		return src.Helm.Chart
	case src.Kustomize != nil:
		return src.Kustomize.Path
	case src.Manifests != nil:
		return src.Manifests.Path
	}
	return ""
}
