package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"slices"
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

// TestVetChecksCharts: what a chart is, vet checks without rendering, each
// a problem positioned at the bundle's helm field: a local chart of
// another version than the bundle asks for, dependencies neither vendored
// nor locked, a registry version that is not there (with
// --allow-chart-downloads). Every spelling of a standard meta-schema is
// checked; a schema vet cannot read fails unless --allow-unchecked-schemas.
func TestVetChecksCharts(t *testing.T) {
	reg := registrytest.Start(t, false)
	pushed := t.TempDir()
	writeTestFile(t, filepath.Join(pushed, "Chart.yaml"), "apiVersion: v2\nname: api\nversion: 2.0.0\n")
	writeTestFile(t, filepath.Join(pushed, "templates/cm.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: api\n")
	c, err := loader.Load(pushed)
	if err != nil {
		t.Fatal(err)
	}
	reg.Push(t, "charts", c)

	repo := t.TempDir()
	chart := func(name, version, schema, extra string) {
		writeTestFile(t, filepath.Join(repo, "charts", name, "Chart.yaml"), "apiVersion: v2\nname: "+name+"\nversion: "+version+"\n"+extra)
		writeTestFile(t, filepath.Join(repo, "charts", name, "templates/cm.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: "+name+"\n")
		if schema != "" {
			writeTestFile(t, filepath.Join(repo, "charts", name, "values.schema.json"), schema)
		}
	}
	chart("web", "1.2.0", "", "")
	chart("ranged", "1.4.2", "", "")
	chart("app", "0.1.0", "", "dependencies:\n- name: redis\n  version: 1.0.0\n  repository: https://charts.example.com\n")
	chart("draft7", "0.1.0", `{"$schema": "https://json-schema.org/draft-07/schema#", "properties": {"replicas": {"type": "integer"}}}`, "")
	chart("latest", "0.1.0", `{"$schema": "http://json-schema.org/schema#", "properties": {"replicas": {"type": "integer"}}}`, "")
	chart("odd", "0.1.0", `{"properties": {"name": {"type": "string", "pattern": "(?<=x)y"}}}`, "")
	writeTestFile(t, filepath.Join(repo, "fleet.cue"), `package fleet

clusters: {"eu-1": {}, "us-1": {}}
bundles: {
	web: helm: {chart: "charts/web", version: "1.3.0"}
	ranged: helm: {chart: "charts/ranged", version: "^1.4.0"}
	app: helm: chart: "charts/app"
	api: helm: {chart: "oci://`+reg.Host+`/charts/api", version: "2.1.0"}
	draft7: {helm: chart: "charts/draft7", values: replicas: "two"}
	latest: {helm: chart: "charts/latest", values: replicas: "three"}
	odd: {helm: chart: "charts/odd", values: name: "y"}
}
`)
	var stdout, stderr bytes.Buffer
	args := []string{"vet", repo, "--chart-cache-dir", t.TempDir(), "--plain-http-registry", reg.Host, "--allow-chart-downloads"}
	code := run(t.Context(), args, &stdout, &stderr)
	got := stderr.String()
	for _, want := range []string{
		`fleet.cue:5:7: clusters eu-1, us-1: bundle web: helm: version "1.3.0": the chart charts/web/Chart.yaml is version "1.2.0"`,
		`fleet.cue:7:7: clusters eu-1, us-1: bundle app: helm: chart charts/app: found in Chart.yaml, but missing in charts/ directory: redis; and there is no Chart.lock`,
		`fleet.cue:8:7: clusters eu-1, us-1: bundle api: helm: chart oci://` + reg.Host + `/charts/api: no version 2.1.0 (the registry has 2.0.0)`,
		`clusters eu-1, us-1: bundle draft7: values.replicas: conflicting values "two" and int`,
		`clusters eu-1, us-1: bundle latest: values.replicas: conflicting values "three" and int`,
		`fleet.cue:11:8: clusters eu-1, us-1: bundle odd: helm: vet cannot check values against the chart's values.schema.json: charts/odd/values.schema.json:1:45: invalid regexp "(?<=x)y"`,
		"--allow-unchecked-schemas",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("vet lacks %q", want)
		}
	}
	if code != exitFailed || strings.Contains(got, "bundle ranged") || t.Failed() {
		t.Errorf("vet: exit %d\n%s", code, got)
	}

	// In -o json too. --allow-unchecked-schemas makes the odd schema a
	// note; Helm cannot read it either, so the bundle still fails, as not
	// rendering.
	stdout.Reset()
	stderr.Reset()
	code = run(t.Context(), append(args, "-o", "json", "--allow-unchecked-schemas"), &stdout, &stderr)
	var res vetResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("vet -o json: %v\n%s", err, stdout.String())
	}
	var bundles []string
	for _, d := range res.Diagnostics {
		bundles = append(bundles, d.Bundle)
	}
	slices.Sort(bundles)
	if code != exitFailed || !slices.Equal(bundles, []string{"api", "app", "draft7", "latest", "odd", "web"}) ||
		!strings.Contains(stdout.String(), `"message": "does not render: chart charts/odd: values don't meet the specifications`) ||
		!strings.Contains(stderr.String(), "note: values not checked against the chart's values.schema.json: charts/odd/values.schema.json:1:45: invalid regexp") {
		t.Errorf("vet -o json --allow-unchecked-schemas: exit %d, problems of %v\n%s", code, bundles, stderr.String())
	}
}
