package render_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flotilla-gitops/flotilla/internal/rendertest"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/cue"
	"github.com/flotilla-gitops/flotilla/render/manifests"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

func engine() *render.Engine {
	return render.NewEngine(map[spec.Kind]render.Renderer{
		spec.KindManifests: manifests.Renderer{},
		spec.KindResources: cue.Renderer{},
	}, nil)
}

func manifestsRequest(path string, recursive bool) *render.Request {
	return &render.Request{
		Bundle:    "app",
		Namespace: "team-a",
		Cluster:   "prod-eu-1",
		RepoDir:   "testdata/repo",
		Source:    spec.Source{Kind: spec.KindManifests, Manifests: &spec.Manifests{Path: path, Recursive: recursive}},
	}
}

func keys(objs []*unstructured.Unstructured) string {
	var out []string
	for _, o := range objs {
		out = append(out, render.ObjectKey(o))
	}
	return strings.Join(out, "; ")
}

// TestManifests renders a folder: multi-document files, List expansion,
// namespaces only on namespaced kinds, ownership labels, sorted output,
// compared with a golden file.
func TestManifests(t *testing.T) {
	res, err := engine().Render(context.Background(), manifestsRequest("manifests", false))
	if err != nil {
		t.Fatal(err)
	}
	want := "ConfigMap team-a/settings; Service frontend/web; Deployment.apps team-a/web; ClusterRole.rbac.authorization.k8s.io reader"
	if got := keys(res.Objects); got != want {
		t.Errorf("objects\n got %s\nwant %s", got, want)
	}
	for _, o := range res.Objects {
		if l := o.GetLabels(); l[spec.ManagedByLabel] != "flotilla" || l[spec.BundleLabel] != "app" {
			t.Errorf("%s labels %v", render.ObjectKey(o), l)
		}
	}
	if replicas, _, _ := unstructured.NestedInt64(res.Objects[2].Object, "spec", "replicas"); replicas != 3 {
		t.Errorf("replicas decoded as %v, want the integer 3", res.Objects[2].Object["spec"])
	}
	rendertest.Golden(t, "testdata/manifests.golden.yaml", rendertest.Section{Name: "objects", Objects: rendertest.Wrap(res.Objects)})

	recursive, err := engine().Render(context.Background(), manifestsRequest("manifests", true))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(keys(recursive.Objects), "Secret team-a/extra") {
		t.Errorf("recursive render lacks sub/extra.yml: %s", keys(recursive.Objects))
	}
	if recursive.Digest == res.Digest {
		t.Error("different objects, same digest")
	}
	again, err := engine().Render(context.Background(), manifestsRequest("manifests", false))
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != res.Digest {
		t.Error("same objects, different digest")
	}
}

// TestScopeFromRenderedCRDs checks that a CRD rendered with its custom
// resources decides their scope, and that an unknown kind is assumed
// namespaced with a warning.
func TestScopeFromRenderedCRDs(t *testing.T) {
	res, err := engine().Render(context.Background(), manifestsRequest("crd", false))
	if err != nil {
		t.Fatal(err)
	}
	want := "CustomResourceDefinition.apiextensions.k8s.io gadgets.example.flotilla.dev; Gadget.example.flotilla.dev global; Widget.example.flotilla.dev team-a/local"
	if got := keys(res.Objects); got != want {
		t.Errorf("objects\n got %s\nwant %s", got, want)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "Widget.example.flotilla.dev") {
		t.Errorf("warnings %v", res.Warnings)
	}
}

// TestResources renders CUE objects, given as the JSON list the fleet
// produces.
func TestResources(t *testing.T) {
	req := &render.Request{Bundle: "ns", Namespace: "default", Source: spec.Source{Kind: spec.KindResources,
		Resources: []byte(`[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"web"}},
			{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"a":"1"}}]`)}}
	res, err := engine().Render(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(res.Objects); got != "ConfigMap default/c; Namespace web" {
		t.Errorf("objects %s", got)
	}
}

// TestRenderErrors checks that failures name the bundle and cluster and
// the offending source.
func TestRenderErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("dup/a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
	write("dup/b.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: team-a}\n")
	write("bad/x.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\nkind: [\n")
	write("noname/x.yaml", "apiVersion: v1\nkind: ConfigMap\n")
	// One Event, served in two groups: the API stores one object.
	write("linked/real/x.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
	write("linked/top/y.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: y}\n")
	if err := os.Symlink("../real", filepath.Join(dir, "linked/top/sub")); err != nil {
		t.Fatal(err)
	}
	write("events/a.yaml", "apiVersion: v1\nkind: Event\nmetadata: {name: e}\ninvolvedObject: {kind: Pod, name: p}\n")
	write("events/b.yaml", "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: e}\neventTime: null\n")
	write("empty/README.md", "nothing")

	cases := []struct{ path, want string }{
		{"dup", "ConfigMap team-a/c is rendered twice: by dup/a.yaml (document 1) and by dup/b.yaml (document 1)"},
		{"bad", "bad/x.yaml (document 2)"},
		{"noname", "noname/x.yaml (document 1): ConfigMap has no metadata.name"},
		{"events", "Event.events.k8s.io team-a/e is rendered twice: by events/a.yaml (document 1) and by events/b.yaml (document 1)"},
		{"empty", "empty has no .yaml, .yml or .json files"},
		{"missing", "missing does not exist in the fleet repository"},
	}
	for _, tc := range cases {
		req := manifestsRequest(tc.path, false)
		req.RepoDir = dir
		_, err := engine().Render(context.Background(), req)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "cluster prod-eu-1: bundle app:") {
			t.Errorf("%s: error %v, want it to say %q", tc.path, err, tc.want)
		}
		if !errors.Is(err, render.ErrRender) {
			t.Errorf("%s: error does not wrap ErrRender", tc.path)
		}
	}
	// A link to a folder in a recursive path fails the bundle (skipped, its
	// objects would be pruned from the cluster).
	req := manifestsRequest("linked/top", true)
	req.RepoDir = dir
	if _, err := engine().Render(context.Background(), req); err == nil || !strings.Contains(err.Error(), "linked/top/sub is a link to a folder") {
		t.Errorf("a linked folder: %v", err)
	}
}

// TestRenderRefusesWhatTheAPIRefuses: an object the API server would
// refuse for its identity fails the render, naming the object and its
// source, instead of failing (or half-applying) later in the cluster.
func TestRenderRefusesWhatTheAPIRefuses(t *testing.T) {
	cases := []struct{ name, object, want string }{
		{"no apiVersion", `{"kind":"ConfigMap","metadata":{"name":"c"}}`, `ConfigMap "c" has no apiVersion`},
		{"bad apiVersion", `{"apiVersion":"apps/v1/x","kind":"Deployment","metadata":{"name":"d"}}`, `Deployment "d": apiVersion "apps/v1/x" is not group/version`},
		{"empty kind", `{"apiVersion":"v1","kind":"","metadata":{"name":"c"}}`, `an object "c" has no kind`},
		{"generateName only", `{"apiVersion":"batch/v1","kind":"Job","metadata":{"generateName":"migrate-"}}`, `Job has generateName "migrate-" but no name: server-side apply needs a name`},
		{"no name", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}`, `ConfigMap has no metadata.name`},
		{"uppercase name", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Web_Config"}}`, `ConfigMap "Web_Config": invalid name: a lowercase RFC 1123 subdomain`},
		{"dotted Service", `{"apiVersion":"v1","kind":"Service","metadata":{"name":"web.internal"}}`, `Service "web.internal": invalid name: must not contain dots`},
		{"bad namespace", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","namespace":"Team_A"}}`, `ConfigMap "c": invalid namespace "Team_A"`},
		{"CRD named otherwise", `{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"widget.example.com"},"spec":{"group":"example.com","names":{"plural":"widgets","kind":"Widget"}}}`,
			`CustomResourceDefinition "widget.example.com": the name must be <spec.names.plural>.<spec.group>, "widgets.example.com"`},
		{"namespace on a cluster-scoped kind", `{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"r","namespace":"team-a"}}`, `ClusterRole r is cluster-scoped but names namespace "team-a"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := &render.Request{Bundle: "app", Cluster: "prod-eu-1", Namespace: "default", Source: spec.Source{Kind: spec.KindResources,
				Resources: []byte(`[` + tc.object + `]`)}}
			_, err := engine().Render(context.Background(), req)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "cluster prod-eu-1: bundle app: ") || !strings.Contains(err.Error(), "resources[0]: ") {
				t.Errorf("error %v, want it to say %q", err, tc.want)
			}
		})
	}
	// The errors never print the object (a Secret's data) nor the
	// fleet's escape sequences.
	for _, object := range []string{
		`{"apiVersion":"v1","metadata":{"name":"s"},"data":{"token":"c2VjcmV0LXZhbHVl"}}`,
		`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"\u001b[2J\u001b]0;pwned\u0007s"},"data":{"token":"c2VjcmV0LXZhbHVl"}}`,
	} {
		req := &render.Request{Bundle: "app", Namespace: "default", Source: spec.Source{Kind: spec.KindResources, Resources: []byte(`[` + object + `]`)}}
		_, err := engine().Render(context.Background(), req)
		if err == nil || strings.Contains(err.Error(), "c2VjcmV0LXZhbHVl") || strings.ContainsRune(err.Error(), 0x1b) || strings.ContainsRune(err.Error(), 0x07) {
			t.Errorf("error %q shows the object or escapes", err)
		}
	}

	// What the API accepts passes: RBAC names with colons, dotted names.
	req := &render.Request{Bundle: "app", Namespace: "default", Source: spec.Source{Kind: spec.KindResources,
		Resources: []byte(`[{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"system:team:reader"}},
			{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"web.config"}},
			{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"widgets.example.com"},"spec":{"group":"example.com","names":{"plural":"widgets","kind":"Widget"}}}]`)}}
	if _, err := engine().Render(context.Background(), req); err != nil {
		t.Errorf("valid objects refused: %v", err)
	}
}

// TestPathsStayInTheRepository checks `..`, absolute paths and symlinks
// leading outside.
func TestPathsStayInTheRepository(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret.yaml"), []byte("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	repo := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(repo, "linkdir")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(repo, "m"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret.yaml"), filepath.Join(repo, "m", "secret.yaml")); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"../" + filepath.Base(outside), outside, "linkdir", "m"} {
		req := manifestsRequest(path, false)
		req.RepoDir = repo
		_, err := engine().Render(context.Background(), req)
		if !errors.Is(err, render.ErrPathEscapes) {
			t.Errorf("path %q: error %v, want ErrPathEscapes", path, err)
		}
	}
}

// TestRenderRefusesWhatEveryAPIServerRefuses: a built-in kind or
// apiVersion in the wrong case, an invalid label key or value or
// annotation key, and a Secret's data that is not base64 fail the render,
// naming the object and the field, instead of the apply; a masked SOPS
// value in a Secret's data is a placeholder, not a mistake.
func TestRenderRefusesWhatEveryAPIServerRefuses(t *testing.T) {
	for doc, want := range map[string]string{
		"apiVersion: v1\nkind: configmap\nmetadata: {name: a}\n":                                         `no such kind (apiVersion: v1, kind: ConfigMap?)`,
		"apiVersion: V1\nkind: ConfigMap\nmetadata: {name: a}\n":                                         `no such kind (apiVersion: v1, kind: ConfigMap?)`,
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: {'bad key!': v}}\n":                `label key "bad key!"`,
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: {team: 'has spaces'}}\n":           `label team: invalid value`,
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, annotations: {'-x': v}}\n":                 `annotation key "-x"`,
		"apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ndata: {pw: 'not base64!!'}\n":                `data.pw: not base64`,
		"apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ndata: {pw: 'sops-encrypted:0123456789ab'}\n": "",
		"apiVersion: v1\nkind: Secret\nmetadata: {name: a, labels: {team: web}}\ndata: {pw: aGk=}\n":     "",
	} {
		dir := t.TempDir()
		rendertest.WriteFile(t, dir, "m/x.yaml", doc)
		engine := render.NewEngine(map[spec.Kind]render.Renderer{spec.KindManifests: manifests.Renderer{}}, nil)
		_, err := engine.Render(context.Background(), &render.Request{Bundle: "b", Namespace: "apps", RepoDir: dir,
			Source: spec.Source{Kind: spec.KindManifests, Manifests: &spec.Manifests{Path: "m"}}})
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: %v", doc, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%q: %v, want %q", doc, err, want)
		}
	}
}
