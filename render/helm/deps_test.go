package helm_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"

	"github.com/flotilla-gitops/flotilla/internal/peers"
	"github.com/flotilla-gitops/flotilla/internal/registrytest"
	"github.com/flotilla-gitops/flotilla/internal/rendertest"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/helm"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

// helmCLI runs the helm command line with its configuration, cache and
// data in the test's folders (never the user's).
func helmCLI(t *testing.T, home string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(peers.Path(t, peers.Helm), args...)
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"), "HELM_DATA_HOME="+filepath.Join(home, "data"))
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = ee.Stderr
		}
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// lockedChart writes a chart of the fleet repository depending on a chart
// of an HTTP chart repository, one of an OCI registry and one of the
// repository itself (file://), and locks them with `helm dependency
// update`; then removes what that command vendored into charts/, as a
// team that commits only Chart.lock would.
func lockedChart(t *testing.T) (repoDir, registryHost string, want []render.Object) {
	t.Helper()
	url, _, _ := chartRepo(t)
	reg := registrytest.Start(t, false)
	notifyDir := t.TempDir()
	rendertest.WriteFile(t, notifyDir, "Chart.yaml", "apiVersion: v2\nname: notify\nversion: 0.3.1\n")
	rendertest.WriteFile(t, notifyDir, "values.yaml", "channel: ops\n")
	rendertest.WriteFile(t, notifyDir, "templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-notify\ndata:\n  channel: {{ .Values.channel }}\n")
	notify, err := loader.Load(notifyDir)
	if err != nil {
		t.Fatal(err)
	}
	reg.Push(t, "deps", notify)

	repoDir, helmHome := t.TempDir(), t.TempDir()
	rendertest.WriteFile(t, repoDir, "charts/lib/Chart.yaml", "apiVersion: v2\nname: lib\nversion: 0.2.0\n")
	rendertest.WriteFile(t, repoDir, "charts/lib/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-lib\n")
	rendertest.WriteFile(t, repoDir, "charts/app/Chart.yaml", `apiVersion: v2
name: app
version: 1.0.0
dependencies:
- name: shop
  version: "~1.2.0"
  repository: `+url+`
- name: notify
  version: 0.3.1
  repository: oci://`+reg.Host+`/deps
- name: lib
  version: 0.2.0
  repository: file://../lib
`)
	rendertest.WriteFile(t, repoDir, "charts/app/values.yaml", "shop:\n  replicas: 2\nnotify:\n  channel: fleet\n")
	rendertest.WriteFile(t, repoDir, "charts/app/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-app\n")
	helmCLI(t, helmHome, "repo", "add", "shops", url)
	helmCLI(t, helmHome, "dependency", "update", filepath.Join(repoDir, "charts/app"), "--plain-http")
	cli := helmCLI(t, helmHome, "template", "app", filepath.Join(repoDir, "charts/app"), "--namespace", "app",
		"--include-crds", "--kube-version", render.DefaultKubeVersion)
	if want, err = render.DecodeObjects(cli, "helm template"); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(repoDir, "charts/app/charts")); err != nil {
		t.Fatal(err)
	}
	return repoDir, reg.Host, want
}

func appRequest(repoDir string) *render.Request {
	return &render.Request{Bundle: "app", Namespace: "app", RepoDir: repoDir, Values: json.RawMessage(`{}`),
		Source: spec.Source{Kind: spec.KindHelm, Helm: &spec.Helm{Chart: "charts/app"}}}
}

// TestChartLockDependencies: dependencies locked by `helm dependency
// update` and not vendored are fetched (HTTP repository, OCI registry) or
// read (file://) at the locked versions, and the chart renders as `helm
// template` renders it vendored; the fleet repository is left untouched.
// Without downloads allowed, the render fails saying how to allow them.
func TestChartLockDependencies(t *testing.T) {
	repoDir, host, want := lockedChart(t)
	opts := helm.Options{CacheDir: t.TempDir(), PlainHTTPRegistries: []string{host}, AllowDownloads: true}

	out, err := helm.New(opts).Render(context.Background(), appRequest(repoDir))
	if err != nil {
		t.Fatal(err)
	}
	rendertest.CompareObjects(t, append(out.Objects, out.Hooks...), want)
	if _, err := os.Stat(filepath.Join(repoDir, "charts/app/charts")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the render wrote into the fleet repository: %v", err)
	}

	opts.AllowDownloads = false
	_, err = helm.New(opts).Render(context.Background(), appRequest(repoDir))
	if err == nil || !strings.Contains(err.Error(), "--allow-chart-downloads") || !strings.Contains(err.Error(), "dependency shop") {
		t.Errorf("without downloads: %v", err)
	}
	if !helm.NeedsNetwork(appRequest(repoDir), true) || helm.NeedsNetwork(appRequest(repoDir), false) {
		t.Error("NeedsNetwork: a locked chart needs the network exactly when downloads are allowed")
	}

	// A Chart.yaml changed after locking: the lock no longer says which
	// versions to take.
	chartYAML := filepath.Join(repoDir, "charts/app/Chart.yaml")
	data := must(os.ReadFile(chartYAML))
	if err := os.WriteFile(chartYAML, []byte(strings.Replace(string(data), `"~1.2.0"`, `"~1.3.0"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	opts.AllowDownloads = true
	_, err = helm.New(opts).Render(context.Background(), appRequest(repoDir))
	if err == nil || !strings.Contains(err.Error(), "Chart.lock is out of sync with Chart.yaml") {
		t.Errorf("an out-of-sync lock: %v", err)
	}
}

// TestFileDependencyStaysInTheRepository: a file:// dependency that leads
// out of the fleet repository is refused, even locked, and the chart it
// points at is never rendered.
func TestFileDependencyStaysInTheRepository(t *testing.T) {
	outside := t.TempDir()
	const canary = "canary-dependency-5d2a"
	rendertest.WriteFile(t, outside, "evil/Chart.yaml", "apiVersion: v2\nname: evil\nversion: 0.1.0\n")
	rendertest.WriteFile(t, outside, "evil/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: "+canary+"\n")
	repoDir, helmHome := t.TempDir(), t.TempDir()
	rel, err := filepath.Rel(filepath.Join(repoDir, "charts/app"), filepath.Join(outside, "evil"))
	if err != nil {
		t.Fatal(err)
	}
	rendertest.WriteFile(t, repoDir, "charts/app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: evil\n  version: 0.1.0\n  repository: file://"+rel+"\n")
	rendertest.WriteFile(t, repoDir, "charts/app/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n")
	helmCLI(t, helmHome, "dependency", "update", filepath.Join(repoDir, "charts/app"))
	if err := os.RemoveAll(filepath.Join(repoDir, "charts/app/charts")); err != nil {
		t.Fatal(err)
	}
	out, err := helm.New(helm.Options{CacheDir: t.TempDir(), AllowDownloads: true}).Render(context.Background(), appRequest(repoDir))
	if !errors.Is(err, render.ErrPathEscapes) {
		t.Fatalf("a file:// dependency outside the repository: %v (objects %v)", err, out)
	}
	if strings.Contains(err.Error(), canary) {
		t.Errorf("the error shows what is outside: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
