package helm_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flotilla-gitops/flotilla/internal/peers"
	"github.com/flotilla-gitops/flotilla/internal/rendertest"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/helm"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

func shopRequest(values string, includeHooks bool) *render.Request {
	return &render.Request{
		Bundle:    "shop",
		Namespace: "shop-ns",
		Cluster:   "prod-eu-1",
		RepoDir:   "testdata/repo",
		Values:    json.RawMessage(values),
		Source: spec.Source{Kind: spec.KindHelm, Helm: &spec.Helm{
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
	engine := render.NewEngine(map[spec.Kind]render.Renderer{spec.KindHelm: helm.New(helm.Options{})}, nil)
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

// TestChartSymlinksStayInTheRepository is the hostile case of the
// adversarial review: a symlink to a folder inside the repository passes
// the path check, and links inside that folder lead anywhere — for
// templates, for .Files.Get and for subcharts. Every one is refused and the
// canary outside the repository never reaches an object or an error; links
// that stay inside the repository still work, and a link cycle ends.
func TestChartSymlinksStayInTheRepository(t *testing.T) {
	const canary = "CANARY-outside-the-repository"
	outside := t.TempDir()
	rendertest.WriteFile(t, outside, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stolen\ndata:\n  x: "+canary+"\n")
	rendertest.WriteFile(t, outside, "token", canary)
	rendertest.WriteFile(t, outside, "evil/Chart.yaml", "apiVersion: v2\nname: evil\nversion: 0.1.0\n")
	rendertest.WriteFile(t, outside, "evil/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: evil\ndata:\n  x: "+canary+"\n")

	repo := t.TempDir()
	chartYAML := func(name string) string { return "apiVersion: v2\nname: " + name + "\nversion: 0.1.0\n" }
	// templates/ -> lib/ (inside), lib/cm.yaml -> outside
	rendertest.WriteFile(t, repo, "charts/a/Chart.yaml", chartYAML("a"))
	rendertest.Symlink(t, "../../lib", repo, "charts/a/templates")
	rendertest.Symlink(t, filepath.Join(outside, "cm.yaml"), repo, "lib/cm.yaml")
	// files/ -> data/ (inside), data/token -> outside, read by .Files.Get
	rendertest.WriteFile(t, repo, "charts/b/Chart.yaml", chartYAML("b"))
	rendertest.WriteFile(t, repo, "charts/b/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\ndata:\n  x: {{ .Files.Get \"files/token\" | quote }}\n")
	rendertest.Symlink(t, "../../data", repo, "charts/b/files")
	rendertest.Symlink(t, filepath.Join(outside, "token"), repo, "data/token")
	// charts/ -> subs/ (inside), subs/evil -> a chart outside
	rendertest.WriteFile(t, repo, "charts/c/Chart.yaml", chartYAML("c"))
	rendertest.Symlink(t, "../../subs", repo, "charts/c/charts")
	rendertest.Symlink(t, filepath.Join(outside, "evil"), repo, "subs/evil")
	// Links that stay inside the repository are fine.
	rendertest.WriteFile(t, repo, "charts/d/Chart.yaml", chartYAML("d"))
	rendertest.Symlink(t, "../../shared", repo, "charts/d/templates")
	rendertest.WriteFile(t, repo, "shared/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\n")
	// A cycle.
	rendertest.WriteFile(t, repo, "charts/e/Chart.yaml", chartYAML("e"))
	rendertest.Symlink(t, ".", repo, "charts/e/templates/loop")

	r := helm.New(helm.Options{})
	request := func(chart string) *render.Request {
		return &render.Request{Bundle: "x", Namespace: "x", RepoDir: repo, Values: json.RawMessage(`{}`),
			Source: spec.Source{Kind: spec.KindHelm, Helm: &spec.Helm{Chart: chart}}}
	}
	for _, chart := range []string{"charts/a", "charts/b", "charts/c"} {
		out, err := r.Render(context.Background(), request(chart))
		if !errors.Is(err, render.ErrPathEscapes) {
			t.Errorf("%s: error %v, want %v", chart, err, render.ErrPathEscapes)
		}
		if out != nil || (err != nil && strings.Contains(err.Error(), canary)) {
			t.Errorf("%s: the canary leaked: %v %v", chart, out, err)
		}
	}
	out, err := r.Render(context.Background(), request("charts/d"))
	if err != nil || len(out.Objects) != 1 || out.Objects[0].Object.GetName() != "shared" {
		t.Errorf("charts/d (links inside the repository): %v %v", out, err)
	}
	// The cycle ends, by Flotilla's depth bound or the system's link limit.
	if _, err := r.Render(context.Background(), request("charts/e")); err == nil || !strings.Contains(err.Error(), "charts/e/templates/loop") {
		t.Errorf("charts/e (a cycle): %v", err)
	}
}

// TestSchemaReferencesStayInTheSchema: a values.schema.json (of the chart
// or a subchart) that refers to a host file or a URL is refused before
// Helm's validator would load it — no request reaches a local server, the
// canary file is not read — while references inside the schema and the
// standard meta-schemas still validate.
func TestSchemaReferencesStayInTheSchema(t *testing.T) {
	const canary = "CANARY-outside-the-repository"
	outside := t.TempDir()
	rendertest.WriteFile(t, outside, "canary.json", `{"type": "object", "description": "`+canary+`"}`)
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		_, _ = w.Write([]byte(`{"type": "object"}`))
	}))
	defer srv.Close()

	repo := t.TempDir()
	chart := func(dir, schema string) {
		rendertest.WriteFile(t, repo, dir+"/Chart.yaml", "apiVersion: v2\nname: "+filepath.Base(dir)+"\nversion: 0.1.0\n")
		rendertest.WriteFile(t, repo, dir+"/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: "+filepath.Base(dir)+"\n")
		rendertest.WriteFile(t, repo, dir+"/values.schema.json", schema)
	}
	chart("charts/file", `{"$ref": "file://`+filepath.Join(outside, "canary.json")+`"}`)
	chart("charts/relative", `{"properties": {"a": {"$ref": "../../..`+filepath.Join(outside, "canary.json")+`"}}}`)
	chart("charts/http", `{"$ref": "`+srv.URL+`/schema.json"}`)
	chart("charts/meta", `{"$schema": "`+srv.URL+`/meta.json", "type": "object"}`)
	chart("charts/sub", `{"type": "object"}`)
	chart("charts/sub/charts/inner", `{"allOf": [{"$ref": "`+srv.URL+`/inner.json"}]}`)
	chart("charts/fine", `{"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"n": {"type": "integer"}}, "properties": {"replicas": {"$ref": "#/definitions/n"}}}`)

	r := helm.New(helm.Options{})
	request := func(chart string, values string) *render.Request {
		return &render.Request{Bundle: "x", Namespace: "x", RepoDir: repo, Values: json.RawMessage(values),
			Source: spec.Source{Kind: spec.KindHelm, Helm: &spec.Helm{Chart: chart}}}
	}
	for _, chart := range []string{"charts/file", "charts/relative", "charts/http", "charts/meta", "charts/sub"} {
		_, err := r.Render(context.Background(), request(chart, `{}`))
		if err == nil || !strings.Contains(err.Error(), "references outside the schema are not resolved") || strings.Contains(err.Error(), canary) {
			t.Errorf("%s: %v", chart, err)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests reached the server", n)
	}
	if _, err := r.Render(context.Background(), request("charts/fine", `{"replicas": 2}`)); err != nil {
		t.Errorf("a schema with internal references: %v", err)
	}
	if _, err := r.Render(context.Background(), request("charts/fine", `{"replicas": "two"}`)); err == nil {
		t.Error("the internal reference was not used to validate")
	}
	// Every spelling of a standard meta-schema that Helm's validator knows
	// offline renders (and validates) here too.
	for i, meta := range []string{
		"http://json-schema.org/schema#", "https://json-schema.org/schema", "https://json-schema.org/draft-07/schema#",
		"http://json-schema.org/draft-04/schema", "https://json-schema.org/draft-06/schema#",
		"http://json-schema.org/draft/2019-09/schema#", "https://json-schema.org/draft/2020-12/schema",
	} {
		dir := fmt.Sprintf("charts/meta%d", i)
		chart(dir, `{"$schema": "`+meta+`", "properties": {"replicas": {"type": "integer"}}}`)
		if _, err := r.Render(context.Background(), request(dir, `{"replicas": 2}`)); err != nil {
			t.Errorf("$schema %s: %v", meta, err)
		}
		if _, err := r.Render(context.Background(), request(dir, `{"replicas": "two"}`)); err == nil {
			t.Errorf("$schema %s: the schema was not used to validate", meta)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests reached the server", n)
	}
}

// TestMissingSubchartIsAnError: a dependency Chart.yaml names that is not
// in charts/ fails the render, naming it, as `helm template` refuses it.
func TestMissingSubchartIsAnError(t *testing.T) {
	repo := t.TempDir()
	rendertest.WriteFile(t, repo, "charts/app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n- name: redis\n  version: 1.0.0\n  repository: https://charts.example.com\n")
	rendertest.WriteFile(t, repo, "charts/app/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n")
	req := &render.Request{Bundle: "app", Namespace: "app", RepoDir: repo, Values: json.RawMessage(`{}`),
		Source: spec.Source{Kind: spec.KindHelm, Helm: &spec.Helm{Chart: "charts/app"}}}
	_, err := helm.New(helm.Options{}).Render(context.Background(), req)
	if err == nil || !strings.Contains(err.Error(), "missing in charts/ directory: redis") {
		t.Errorf("error %v", err)
	}
}
