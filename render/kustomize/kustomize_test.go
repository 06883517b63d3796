package kustomize_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/internal/peers"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/kustomize"
)

func request(k *render.Kustomize) *render.Request {
	return &render.Request{
		Bundle: "shop", Namespace: "shop-ns", Cluster: "prod-eu-1", RepoDir: "testdata/repo",
		Source: render.Source{Kind: render.KindKustomize, Kustomize: k},
	}
}

// cueAdditions are what a bundle could add in CUE; overlays/like-cue is the
// same written as a kustomization.
var cueAdditions = &render.Kustomize{
	Path:       "base",
	Components: []string{"components/sidecar"},
	Images:     []render.Image{{Name: "registry.example/shop", NewTag: "2.0.0"}},
	Patches: map[string]render.Patch{
		"replicas": {Target: &render.PatchTarget{Kind: "Deployment", Name: "shop-web"},
			Patch: "- op: replace\n  path: /spec/replicas\n  value: 5"},
		"region": {Patch: "apiVersion: v1\nkind: Service\nmetadata:\n  name: shop-web\n  annotations:\n    region: eu-west-1\n"},
	},
	Labels: map[string]string{"example.dev/cluster": "prod-eu-1"},
}

// TestEquivalentToKustomizeBuild compares with `kustomize build` v5.8.1:
// an overlay using generators, name prefixes, components, JSON 6902 and
// strategic-merge patches; and the CUE additions against the same
// additions written as a kustomization.
func TestEquivalentToKustomizeBuild(t *testing.T) {
	bin := peers.Path(t, peers.Kustomize)
	for _, tc := range []struct {
		name, cliDir string
		src          *render.Kustomize
	}{
		{"overlay", "overlays/prod", &render.Kustomize{Path: "overlays/prod"}},
		{"CUE additions", "overlays/like-cue", cueAdditions},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, err := exec.Command(bin, "build", filepath.Join("testdata/repo", tc.cliDir)).Output()
			if err != nil {
				t.Fatalf("kustomize build: %v", err)
			}
			want, err := render.DecodeObjects(cli, "kustomize build")
			if err != nil {
				t.Fatal(err)
			}
			out, err := kustomize.New(kustomize.Options{}).Render(context.Background(), request(tc.src))
			if err != nil {
				t.Fatal(err)
			}
			compareObjects(t, out.Objects, want)
		})
	}
}

// TestFeatures checks a few results directly, and the golden output.
func TestFeatures(t *testing.T) {
	r := kustomize.New(kustomize.Options{})
	out, err := r.Render(context.Background(), request(cueAdditions))
	if err != nil {
		t.Fatal(err)
	}
	objs := byKey(out.Objects)
	deploy := objs["Deployment.apps shop-web"]
	if deploy == nil {
		t.Fatalf("no deployment: %v", keys(out.Objects))
	}
	replicas, _, _ := unstructured.NestedInt64(deploy.Object, "spec", "replicas")
	containers, _, _ := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	if replicas != 5 || len(containers) != 2 || deploy.GetLabels()["example.dev/cluster"] != "prod-eu-1" {
		t.Errorf("replicas %d, %d containers, labels %v", replicas, len(containers), deploy.GetLabels())
	}
	var hashed bool
	for k := range objs {
		hashed = hashed || strings.HasPrefix(k, "ConfigMap shop-settings-")
	}
	if !hashed {
		t.Errorf("generated ConfigMap has no hash suffix: %v", keys(out.Objects))
	}
	// The same renderer builds again identically (kustomize's global state
	// does not leak between builds).
	again, err := r.Render(context.Background(), request(cueAdditions))
	if err != nil {
		t.Fatal(err)
	}
	compareObjects(t, again.Objects, out.Objects)
	compareGolden(t, "testdata/cue-additions.golden.yaml", out.Objects)
}

// TestRemoteBasesAreRefused checks that a remote base fails clearly
// instead of being fetched.
func TestRemoteBasesAreRefused(t *testing.T) {
	_, err := kustomize.New(kustomize.Options{}).Render(context.Background(), request(&render.Kustomize{Path: "remote"}))
	if !errors.Is(err, kustomize.ErrRemoteBase) || !strings.Contains(err.Error(), "remote/kustomization.yaml refers to \"https://github.com/example/fleet//base?ref=v1.0.0\"") {
		t.Errorf("error %v", err)
	}
}

// TestPathsStayInTheRepository checks that neither the bundle's path nor
// a kustomization inside the repository can reach outside it.
func TestPathsStayInTheRepository(t *testing.T) {
	outside := t.TempDir()
	write(t, outside, "kustomization.yaml", "resources: [cm.yaml]\n")
	write(t, outside, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: secret}\n")
	repo := t.TempDir()
	write(t, repo, "up/kustomization.yaml", "resources: [../../"+filepath.Base(outside)+"]\n")
	if err := os.Symlink(outside, filepath.Join(repo, "link")); err != nil {
		t.Fatal(err)
	}
	write(t, repo, "via-link/kustomization.yaml", "resources: [../link]\n")

	cases := []struct {
		path string
		want error
	}{
		{"../" + filepath.Base(outside), render.ErrPathEscapes},
		{"link", render.ErrPathEscapes},
		{"up", kustomize.ErrRemoteBase},
		{"via-link", kustomize.ErrRemoteBase},
	}
	for _, tc := range cases {
		req := request(&render.Kustomize{Path: tc.path})
		req.RepoDir = repo
		_, err := kustomize.New(kustomize.Options{}).Render(context.Background(), req)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.path, err, tc.want)
		}
	}
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func byKey(objs []render.Object) map[string]*unstructured.Unstructured {
	m := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		m[render.ObjectKey(o.Object)] = o.Object
	}
	return m
}

func keys(objs []render.Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, render.ObjectKey(o.Object))
	}
	return out
}

func compareObjects(t *testing.T, got, want []render.Object) {
	t.Helper()
	if len(want) == 0 {
		t.Fatal("the reference rendered nothing")
	}
	g, w := byKey(got), byKey(want)
	if len(g) != len(w) {
		t.Errorf("%d objects, want %d: %v vs %v", len(g), len(w), keys(got), keys(want))
	}
	for k, wo := range w {
		if go_, ok := g[k]; !ok {
			t.Errorf("missing %s", k)
		} else if !reflect.DeepEqual(go_.Object, wo.Object) {
			gy, _ := yaml.Marshal(go_.Object)
			wy, _ := yaml.Marshal(wo.Object)
			t.Errorf("%s differs:\n--- flotilla\n%s\n--- reference\n%s", k, gy, wy)
		}
	}
}

func compareGolden(t *testing.T, path string, objs []render.Object) {
	t.Helper()
	var b strings.Builder
	for _, o := range objs {
		data, err := yaml.Marshal(o.Object.Object)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("---\n")
		b.Write(data)
	}
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (UPDATE_GOLDEN=1 creates it)", err)
	}
	if string(want) != b.String() {
		t.Errorf("%s differs; run with UPDATE_GOLDEN=1 and review:\n%s", path, b.String())
	}
}

// BenchmarkRender builds overlays/prod in-process; bench/render.sh compares
// it with `kustomize build` on the same overlay.
func BenchmarkRender(b *testing.B) {
	r := kustomize.New(kustomize.Options{})
	req := request(&render.Kustomize{Path: "overlays/prod"})
	for b.Loop() {
		if _, err := r.Render(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}
