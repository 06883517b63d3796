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
