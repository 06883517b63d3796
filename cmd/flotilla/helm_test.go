package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"

	"github.com/flotilla-gitops/flotilla/internal/registrytest"
)

// helmFleet writes a fleet whose bundle renders a chart from a registry
// that wants credentials, with a values file under its CUE values.
func helmFleet(t *testing.T) (repo string, reg *registrytest.Registry) {
	t.Helper()
	reg = registrytest.Start(t, true)
	chartDir := t.TempDir()
	writeTestFile(t, filepath.Join(chartDir, "Chart.yaml"), "apiVersion: v2\nname: web\nversion: 0.1.0\n")
	writeTestFile(t, filepath.Join(chartDir, "values.yaml"), "replicas: 1\ncolor: grey\n")
	writeTestFile(t, filepath.Join(chartDir, "templates/cm.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  replicas: {{ .Values.replicas | quote }}\n  color: {{ .Values.color }}\n")
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	reg.Push(t, "charts", c)
	repo = t.TempDir()
	writeTestFile(t, filepath.Join(repo, "fleet.cue"), `package fleet

clusters: c1: {}
bundles: web: {
	namespace: "web"
	helm: {chart: "oci://`+reg.Host+`/charts/web", version: "0.1.0", valuesFiles: ["values/eu.yaml"]}
	values: replicas: 3
}
`)
	writeTestFile(t, filepath.Join(repo, "values/eu.yaml"), "replicas: 2\ncolor: blue\n")
	return repo, reg
}

// TestHelmSourcesThroughTheCommands: `render` pulls an OCI chart in its
// (online) render worker with the credentials of --registry-config only,
// merges the values file under the bundle's values, and `plan` says which
// keys the values override. Without the credentials the bundle fails,
// saying where they go; the password is printed nowhere.
func TestHelmSourcesThroughTheCommands(t *testing.T) {
	repo, reg := helmFleet(t)
	common := func() []string { return []string{"--plain-http-registry", reg.Host, "--chart-cache-dir", t.TempDir()} }
	var stdout, stderr bytes.Buffer
	args := append([]string{"render", repo, "--cluster", "c1", "--registry-config", reg.ConfigFile(t)}, common()...)
	if code := run(t.Context(), args, &stdout, &stderr); code != exitOK {
		t.Fatalf("render: exit %d\n%s", code, stderr.String())
	}
	for _, want := range []string{`replicas: "3"`, "color: blue"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("render output lacks %q:\n%s", want, stdout.String())
		}
	}

	stdout.Reset()
	stderr.Reset()
	// A cache of its own: a cached chart is not asked for again.
	args = append([]string{"render", repo, "--cluster", "c1"}, common()...)
	if code := run(t.Context(), args, &stdout, &stderr); code == exitOK || !strings.Contains(stderr.String(), "--registry-config") {
		t.Errorf("render without credentials: exit %d\n%s", code, stderr.String())
	}
	if strings.Contains(stdout.String()+stderr.String(), reg.Password) {
		t.Error("the registry password was printed")
	}

	stdout.Reset()
	stderr.Reset()
	if code := run(t.Context(), []string{"plan", repo, "--cluster", "c1"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("plan: exit %d\n%s", code, stderr.String())
	}
	for _, want := range []string{"values files (merged in order, under values): values/eu.yaml", "values/eu.yaml: overridden by a later file or values: replicas"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("plan lacks %q:\n%s", want, stdout.String())
		}
	}
}

// TestVetChecksValuesAgainstTheChartSchema: vet reports a value that
// violates the chart's values.schema.json at the fleet.cue line that set
// it, for a chart of the repository and for a registry's chart (cached or
// fetched with --allow-chart-downloads; noted otherwise), before anything
// renders.
func TestVetChecksValuesAgainstTheChartSchema(t *testing.T) {
	reg := registrytest.Start(t, false)
	chartDir := t.TempDir()
	const schema = `{"type": "object", "properties": {"replicas": {"type": "integer", "minimum": 1}, "tier": {"enum": ["web", "batch"]}}}`
	writeTestFile(t, filepath.Join(chartDir, "Chart.yaml"), "apiVersion: v2\nname: api\nversion: 2.0.0\n")
	writeTestFile(t, filepath.Join(chartDir, "values.schema.json"), schema)
	writeTestFile(t, filepath.Join(chartDir, "templates/cm.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: api\n")
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	reg.Push(t, "charts", c)

	repo := t.TempDir()
	writeTestFile(t, filepath.Join(repo, "charts/web/Chart.yaml"), "apiVersion: v2\nname: web\nversion: 0.1.0\n")
	writeTestFile(t, filepath.Join(repo, "charts/web/values.schema.json"), schema)
	writeTestFile(t, filepath.Join(repo, "charts/web/templates/cm.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n")
	writeTestFile(t, filepath.Join(repo, "fleet.cue"), `package fleet

clusters: {
	"eu-1": {labels: class: "regulated"}
	"us-1": {}
}
bundles: web: {
	helm: chart: "charts/web"
	values: replicas: *2 | int
	overlays: [{clusterSelector: matchLabels: class: "regulated", values: replicas: 0}]
}
bundles: api: {
	helm: {chart: "oci://`+reg.Host+`/charts/api", version: "2.0.0"}
	values: tier: "frontend"
}
`)
	var stdout, stderr bytes.Buffer
	cache := t.TempDir()
	args := []string{"vet", repo, "--chart-cache-dir", cache, "--plain-http-registry", reg.Host}
	code := run(t.Context(), args, &stdout, &stderr)
	if code != exitFailed || !strings.Contains(stderr.String(), "fleet.cue:10:") ||
		!strings.Contains(stderr.String(), "cluster eu-1: bundle web: values.replicas: invalid value 0 (out of bound >=1) (the chart's values.schema.json) (and charts/web/values.schema.json:1:") {
		t.Errorf("vet: exit %d\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "note: chart oci://"+reg.Host+"/charts/api 2.0.0 is not in the chart cache") || strings.Contains(stderr.String(), "bundle api") {
		t.Errorf("vet without downloads:\n%s", stderr.String())
	}

	stderr.Reset()
	code = run(t.Context(), append(args, "--allow-chart-downloads"), &stdout, &stderr)
	if code != exitFailed || !strings.Contains(stderr.String(), "fleet.cue:14:") ||
		!strings.Contains(stderr.String(), "clusters eu-1, us-1: bundle api: values.tier:") {
		t.Errorf("vet --allow-chart-downloads: exit %d\n%s", code, stderr.String())
	}
}
