package helm_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/internal/peers"
	"github.com/flotilla-gitops/flotilla/internal/rendertest"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/helm"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

func valuesFilesRequest(values string, files ...string) *render.Request {
	req := shopRequest(values, false)
	req.Source.Helm.ValuesFiles = files
	return req
}

// TestValuesFiles: values files merge in order under the bundle's values,
// object for object as `helm template -f base -f prod -f <bundle values>`.
func TestValuesFiles(t *testing.T) {
	req := valuesFilesRequest(`{"replicas": 3}`, "values/base.yaml", "values/prod.yaml")
	out, err := helm.New(helm.Options{}).Render(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	objs := rendertest.ByKey(out.Objects)
	deploy := objs["Deployment.apps shop-shop"]
	checks := []struct {
		what      string
		got, want any
	}{
		{"the bundle's values win", nested(deploy, "spec", "replicas"), int64(3)},
		{"maps merge across files", nested(deploy, "spec", "template", "spec", "containers").([]any)[0].(map[string]any)["image"], "registry.example/shop-prod:1.0.0"},
		{"a later file wins", nested(objs["StatefulSet.apps shop-cache"], "spec", "template", "spec", "containers").([]any)[0].(map[string]any)["args"], []any{"--memory=512Mi"}},
		{"an earlier file's key stays", objs["Deployment.apps shop-metrics"] != nil, true},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %#v, want %#v", c.what, c.got, c.want)
		}
	}

	own := filepath.Join(t.TempDir(), "bundle.json")
	if err := os.WriteFile(own, req.Values, 0o644); err != nil {
		t.Fatal(err)
	}
	cli, err := exec.Command(peers.Path(t, peers.Helm), "template", "shop", "testdata/repo/charts/shop", "--namespace", "shop-ns",
		"--include-crds", "--kube-version", "v1.35.2", "--api-versions", "monitoring.coreos.com/v1",
		"-f", "testdata/repo/values/base.yaml", "-f", "testdata/repo/values/prod.yaml", "-f", own).Output()
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	want, err := render.DecodeObjects(cli, "helm template")
	if err != nil {
		t.Fatal(err)
	}
	rendertest.CompareObjects(t, append(out.Objects, out.Hooks...), want)
}

// TestValuesFilesOverrides: what plan says the bundle's values (and later
// files) replace.
func TestValuesFilesOverrides(t *testing.T) {
	files, err := helm.ReadValuesFiles(context.Background(), "testdata/repo", []string{"values/base.yaml", "values/prod.yaml"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := helm.Overrides(files, json.RawMessage(`{"replicas": 3, "image": {"tag": "2.0.0"}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"values/base.yaml": {"cache.size", "image.tag", "replicas"},
		"values/prod.yaml": {"replicas"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("overrides %v, want %v", got, want)
	}
}

// TestValuesFilesStayInTheRepository: a values file is read through the
// repository root; `..`, absolute paths and symlinks leading out are
// refused, and the canary's content is in no error.
func TestValuesFilesStayInTheRepository(t *testing.T) {
	outside := t.TempDir()
	const canary = "canary-values-7c1e"
	rendertest.WriteFile(t, outside, "secret.yaml", "token: "+canary+"\n")
	repo := t.TempDir()
	rendertest.WriteFile(t, repo, "charts/app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 0.1.0\n")
	rendertest.WriteFile(t, repo, "charts/app/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  token: {{ .Values.token | quote }}\n")
	rendertest.WriteFile(t, repo, "values/ok.yaml", "token: fine\n")
	rendertest.Symlink(t, filepath.Join(outside, "secret.yaml"), repo, "values/link.yaml")
	rendertest.Symlink(t, outside, repo, "values/dir")
	request := func(file string) *render.Request {
		return &render.Request{Bundle: "app", Namespace: "app", RepoDir: repo, Values: json.RawMessage(`{}`),
			Source: spec.Source{Kind: spec.KindHelm, Helm: &spec.Helm{Chart: "charts/app", ValuesFiles: []string{file}}}}
	}
	r := helm.New(helm.Options{})
	out, err := r.Render(context.Background(), request("values/ok.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := nested(rendertest.ByKey(out.Objects)["ConfigMap app"], "data", "token"); got != "fine" {
		t.Fatalf("token %v", got)
	}
	for _, file := range []string{"../" + filepath.Base(outside) + "/secret.yaml", filepath.Join(outside, "secret.yaml"), "values/link.yaml", "values/dir/secret.yaml"} {
		_, err := r.Render(context.Background(), request(file))
		if !errors.Is(err, render.ErrPathEscapes) {
			t.Errorf("%s: error %v, want a path escape", file, err)
			continue
		}
		if strings.Contains(err.Error(), canary) {
			t.Errorf("%s: the error shows the file's content: %v", file, err)
		}
	}
	if _, err := r.Render(context.Background(), request("values/missing.yaml")); err == nil || !strings.Contains(err.Error(), "values/missing.yaml") {
		t.Errorf("a missing values file: %v", err)
	}
}
