package helm_test

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flotilla-gitops/flotilla/internal/peers"
	"github.com/flotilla-gitops/flotilla/internal/rendertest"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/helm"
)

func shopRequest(values string, includeHooks bool) *render.Request {
	return &render.Request{
		Bundle:    "shop",
		Namespace: "shop-ns",
		Cluster:   "prod-eu-1",
		RepoDir:   "testdata/repo",
		Values:    json.RawMessage(values),
		Source: render.Source{Kind: render.KindHelm, Helm: &render.Helm{
			Chart: "charts/shop", IncludeHooks: includeHooks,
		}},
		Capabilities: render.Capabilities{KubeVersion: "v1.35.2", APIVersions: []string{"monitoring.coreos.com/v1"}},
	}
}

const shopValues = `{"replicas": 3, "metrics": {"enabled": true}, "cache": {"size": "128Mi"}}`

// TestRenderChart checks the hard features one by one.
func TestRenderChart(t *testing.T) {
	out, err := helm.New(helm.Options{}).Render(context.Background(), shopRequest(shopValues, false))
	if err != nil {
		t.Fatal(err)
	}
	objs := rendertest.ByKey(out.Objects)
	deploy := objs["Deployment.apps shop-shop"]
	if deploy == nil {
		t.Fatalf("no deployment among %v", slices.Sorted(maps.Keys(objs)))
	}
	checks := []struct {
		what string
		got  any
		want any
	}{
		{"replicas from values", nested(deploy, "spec", "replicas"), int64(3)},
		{"tpl", nested(deploy, "metadata", "annotations", "shop.example.dev/rendered"), "release=shop,ns=shop-ns"},
		{"kube version capability", nested(deploy, "metadata", "annotations", "shop.example.dev/kube"), "v1.35.2"},
		{"image tag defaults to appVersion", nested(deploy, "spec", "template", "spec", "containers").([]any)[0].(map[string]any)["image"], "registry.example/shop:4.5.6"},
		{".Files.Get", nested(objs["ConfigMap shop-shop-config"], "data", "app.conf"), "listen = 8080\nmode = production\n"},
		{"subchart with condition on, parent value", nested(objs["StatefulSet.apps shop-cache"], "spec", "template", "spec", "containers").([]any)[0].(map[string]any)["args"], []any{"--memory=128Mi"}},
		{"subchart enabled by values", objs["Deployment.apps shop-metrics"] != nil, true},
		{"crds/ included", objs["CustomResourceDefinition.apiextensions.k8s.io gadgets.shop.example.dev"] != nil, true},
		{"custom resource", objs["Gadget.shop.example.dev shop-shop"] != nil, true},
		{"APIVersions capability", objs["ServiceMonitor.monitoring.coreos.com shop-shop"] != nil, true},
		{"lookup returns nothing offline", objs["Secret shop-password"] != nil, true},
		{"hooks kept apart", objs["Job.batch shop-shop-migrate"] == nil && objs["Pod shop-shop-test"] == nil, true},
		{"hooks rendered", len(out.Hooks), 2},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %#v, want %#v", c.what, c.got, c.want)
		}
	}

	withHooks, err := helm.New(helm.Options{}).Render(context.Background(), shopRequest(shopValues, true))
	if err != nil {
		t.Fatal(err)
	}
	if len(withHooks.Hooks) != 0 || rendertest.ByKey(withHooks.Objects)["Job.batch shop-shop-migrate"] == nil {
		t.Errorf("includeHooks: hooks not among the objects")
	}
	rendertest.Golden(t, "testdata/shop.golden.yaml",
		rendertest.Section{Name: "objects", Objects: out.Objects}, rendertest.Section{Name: "hooks", Objects: out.Hooks})
}

// TestValuesSchema checks that values.schema.json is enforced and that
// the engine's error names the bundle and cluster.
func TestValuesSchema(t *testing.T) {
	engine := render.NewEngine(map[string]render.Renderer{render.KindHelm: helm.New(helm.Options{})}, nil)
	_, err := engine.Render(context.Background(), shopRequest(`{"replicas": 0}`, false))
	if err == nil {
		t.Fatal("replicas 0 accepted")
	}
	for _, want := range []string{"cluster prod-eu-1: bundle shop:", "replicas", "minimum"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestEquivalentToHelmTemplate compares the objects with those of the
// `helm template` command line of the same Helm version, hooks included.
func TestEquivalentToHelmTemplate(t *testing.T) {
	helmBin := peers.Path(t, peers.Helm)
	valuesFile := filepath.Join(t.TempDir(), "values.json")
	if err := os.WriteFile(valuesFile, []byte(shopValues), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		caps render.Capabilities
	}{
		{"with capabilities", []string{"--kube-version", "v1.35.2", "--api-versions", "monitoring.coreos.com/v1"},
			render.Capabilities{KubeVersion: "v1.35.2", APIVersions: []string{"monitoring.coreos.com/v1"}}},
		{"defaults", []string{"--kube-version", render.DefaultKubeVersion}, render.Capabilities{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"template", "shop", "testdata/repo/charts/shop", "--namespace", "shop-ns",
				"--include-crds", "-f", valuesFile}, tc.args...)
			cli, err := exec.Command(helmBin, args...).Output()
			if err != nil {
				t.Fatalf("helm template: %v", err)
			}
			want, err := render.DecodeObjects(cli, "helm template")
			if err != nil {
				t.Fatal(err)
			}
			req := shopRequest(shopValues, false)
			req.Capabilities = tc.caps
			out, err := helm.New(helm.Options{}).Render(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			rendertest.CompareObjects(t, append(out.Objects, out.Hooks...), want)
		})
	}
}

func nested(o *unstructured.Unstructured, path ...string) any {
	if o == nil {
		return nil
	}
	v, _, _ := unstructured.NestedFieldNoCopy(o.Object, path...)
	return v
}

// BenchmarkRender renders the shop chart in-process; bench/render.sh
// compares it with `helm template` on the same chart.
func BenchmarkRender(b *testing.B) {
	r := helm.New(helm.Options{})
	req := shopRequest(shopValues, false)
	for b.Loop() {
		if _, err := r.Render(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}
