package kustomize_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flotilla-gitops/flotilla/internal/peers"
	"github.com/flotilla-gitops/flotilla/internal/rendertest"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/kustomize"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

func request(k *spec.Kustomize) *render.Request {
	return &render.Request{
		Bundle: "shop", Namespace: "shop-ns", Cluster: "prod-eu-1", RepoDir: "testdata/repo",
		Source: spec.Source{Kind: spec.KindKustomize, Kustomize: k},
	}
}

// cueAdditions are what a bundle could add in CUE; overlays/like-cue is the
// same written as a kustomization.
var cueAdditions = &spec.Kustomize{
	Path:       "base",
	Components: []string{"components/sidecar"},
	Images:     []spec.Image{{Name: "registry.example/shop", NewTag: "2.0.0"}},
	Patches: map[string]spec.Patch{
		"replicas": {Target: &spec.PatchTarget{Kind: "Deployment", Name: "shop-web"},
			Patch: "- op: replace\n  path: /spec/replicas\n  value: 5"},
		"region": {Patch: "apiVersion: v1\nkind: Service\nmetadata:\n  name: shop-web\n  annotations:\n    region: eu-west-1\n"},
	},
	Labels: map[string]string{"example.dev/cluster": "prod-eu-1"},
}

// TestEquivalentToKustomizeBuild compares with `kustomize build --reorder
// none` v5.8.1 (the order of accumulation, as Flux builds), objects and
// their order: an overlay using generators, name prefixes,
// components, JSON 6902 and strategic-merge patches; and the CUE
// additions against the same additions written as a kustomization.
func TestEquivalentToKustomizeBuild(t *testing.T) {
	bin := peers.Path(t, peers.Kustomize)
	for _, tc := range []struct {
		name, cliDir string
		src          *spec.Kustomize
	}{
		{"overlay", "overlays/prod", &spec.Kustomize{Path: "overlays/prod"}},
		{"CUE additions", "overlays/like-cue", cueAdditions},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, err := exec.Command(bin, "build", "--reorder", "none", filepath.Join("testdata/repo", tc.cliDir)).Output()
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
			rendertest.CompareObjects(t, out.Objects, want)
			if got, w := rendertest.Keys(out.Objects), rendertest.Keys(want); !slices.Equal(got, w) {
				t.Errorf("objects in another order than kustomize build's:\n%v\n%v", got, w)
			}
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
	objs := rendertest.ByKey(out.Objects)
	deploy := objs["Deployment.apps shop-web"]
	if deploy == nil {
		t.Fatalf("no deployment: %v", rendertest.Keys(out.Objects))
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
		t.Errorf("generated ConfigMap has no hash suffix: %v", rendertest.Keys(out.Objects))
	}
	// The same renderer builds again identically (kustomize's global state
	// does not leak between builds).
	again, err := r.Render(context.Background(), request(cueAdditions))
	if err != nil {
		t.Fatal(err)
	}
	rendertest.CompareObjects(t, again.Objects, out.Objects)
	rendertest.Golden(t, "testdata/cue-additions.golden.yaml", rendertest.Section{Name: "objects", Objects: out.Objects})
}

// TestRemoteBasesAreRefused checks that a remote base fails clearly
// instead of being fetched.
func TestRemoteBasesAreRefused(t *testing.T) {
	_, err := kustomize.New(kustomize.Options{}).Render(context.Background(), request(&spec.Kustomize{Path: "remote"}))
	if !errors.Is(err, kustomize.ErrRemoteBase) || !strings.Contains(err.Error(), "remote/kustomization.yaml refers to \"https://github.com/example/fleet//base?ref=v1.0.0\"") {
		t.Errorf("error %v", err)
	}
}

// TestPathsStayInTheRepository checks that neither the bundle's path nor
// a kustomization inside the repository can reach outside it.
func TestPathsStayInTheRepository(t *testing.T) {
	outside := t.TempDir()
	rendertest.WriteFile(t, outside, "kustomization.yaml", "resources: [cm.yaml]\n")
	rendertest.WriteFile(t, outside, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: secret}\n")
	repo := t.TempDir()
	rendertest.WriteFile(t, repo, "up/kustomization.yaml", "resources: [../../"+filepath.Base(outside)+"]\n")
	if err := os.Symlink(outside, filepath.Join(repo, "link")); err != nil {
		t.Fatal(err)
	}
	rendertest.WriteFile(t, repo, "via-link/kustomization.yaml", "resources: [../link]\n")
	rendertest.WriteFile(t, repo, "absolute/kustomization.yaml", "resources: ["+outside+"]\n")
	rendertest.WriteFile(t, repo, "typo/kustomization.yaml", "resources: [../bsae]\n")
	// A folder named like a remote is still fetched by kustomize, which
	// tries a reference as a URL first.
	rendertest.WriteFile(t, repo, "github.com/org/repo/kustomization.yaml", "resources: []\n")
	rendertest.WriteFile(t, repo, "like-remote/kustomization.yaml", "resources: [github.com/org/repo]\n")

	cases := []struct {
		path string
		want error
		says string
	}{
		{"../" + filepath.Base(outside), render.ErrPathEscapes, "must be a relative path inside the repository"},
		{"link", render.ErrPathEscapes, "link is a symlink to outside the repository"},
		{"up", render.ErrPathEscapes, `up/kustomization.yaml: resources "../../` + filepath.Base(outside) + `": path leaves the fleet repository`},
		{"via-link", render.ErrPathEscapes, `via-link/kustomization.yaml: resources "../link": path leaves the fleet repository: link is a symlink to outside the repository`},
		{"absolute", render.ErrPathEscapes, `absolute/kustomization.yaml: resources "` + outside + `": path leaves the fleet repository`},
		{"typo", nil, `typo/kustomization.yaml: resources "../bsae": not in the fleet repository`},
		{"like-remote", kustomize.ErrRemoteBase, `refers to "github.com/org/repo", which kustomize would fetch`},
	}
	for _, tc := range cases {
		req := request(&spec.Kustomize{Path: tc.path})
		req.RepoDir = repo
		_, err := kustomize.New(kustomize.Options{}).Render(context.Background(), req)
		switch {
		case err == nil:
			t.Errorf("%s: no error", tc.path)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("%s: error %v, want %v", tc.path, err, tc.want)
		case tc.want == nil && (errors.Is(err, kustomize.ErrRemoteBase) || errors.Is(err, render.ErrPathEscapes)):
			t.Errorf("%s: error %v, want a missing path", tc.path, err)
		case !strings.Contains(err.Error(), tc.says):
			t.Errorf("%s: error %q does not say %q", tc.path, err, tc.says)
		}
	}
}

// TestRemoteRefs checks which references kustomize would fetch.
func TestRemoteRefs(t *testing.T) {
	for ref, remote := range map[string]bool{
		"https://github.com/example/fleet//base?ref=v1": true,
		"ssh://git@git.example.com/fleet.git//base":     true,
		"git::https://example.com/fleet.git":            true,
		"file:///srv/fleet.git":                         true,
		"github.com/example/fleet/base":                 true,
		"git@github.com:example/fleet.git":              true,
		"deploy@git.example.com:fleet.git//base":        true,
		"../base":                                       false,
		"overlays/prod":                                 false,
		"cm.yaml":                                       false,
		"gitlab.example.com/group/repo":                 false, // no scheme: kustomize reads it as a folder
		// user@host/org/repo is cloned over SSH; a folder named like it
		// is taken for a remote too (kustomize would try git first).
		"deploy@git.internal/org/app": true,
		"team@a/b":                    true,
		"team/a@b":                    false,
	} {
		if got := kustomize.RemoteRef(ref); got != remote {
			t.Errorf("%s: remote %v, want %v", ref, got, remote)
		}
	}
}

// BenchmarkRender builds overlays/prod in-process; bench/render.sh compares
// it with `kustomize build` on the same overlay.
func BenchmarkRender(b *testing.B) {
	r := kustomize.New(kustomize.Options{})
	req := request(&spec.Kustomize{Path: "overlays/prod"})
	for b.Loop() {
		if _, err := r.Render(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}

// TestNoNetworkFromAnyField: every field of a kustomization that kustomize
// would fetch a URL or clone a repository from is refused before the
// build — no request reaches a local server, no `git` runs (a fake one on
// the PATH would leave a mark) — including from a plugin configuration
// file, while URLs in data fields (annotations) are fine.
func TestNoNetworkFromAnyField(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		_, _ = w.Write([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fetched}\n"))
	}))
	defer srv.Close()
	fakeGit := t.TempDir()
	mark := filepath.Join(fakeGit, "git-ran")
	rendertest.WriteFile(t, fakeGit, "git", "#!/bin/sh\ntouch "+mark+"\nexit 1\n")
	if err := os.Chmod(filepath.Join(fakeGit, "git"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", fakeGit+string(os.PathListSeparator)+os.Getenv("PATH"))

	url := srv.URL + "/x.yaml"
	repo := t.TempDir()
	rendertest.WriteFile(t, repo, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n")
	cases := map[string]string{
		"patches path":          "patches: [{path: " + url + "}]",
		"patchesJson6902":       "patchesJson6902: [{target: {kind: ConfigMap, name: cm}, path: " + url + "}]",
		"patchesStrategicMerge": "patchesStrategicMerge: [" + url + "]",
		"generator files":       "configMapGenerator: [{name: g, files: [" + url + "]}]",
		"generator files key=":  "configMapGenerator: [{name: g, files: [creds=http://169.254.169.254/latest/meta-data]}]",
		// A space does not make a value an inline document: kustomize's
		// loader fetches it all the same.
		"patches path, a space":    "patches: [{path: '" + srv.URL + "/p b.json'}]",
		"generator files, a space": "configMapGenerator: [{name: g, files: ['x=" + srv.URL + "/c b.txt']}]",
		"resources, a space":       "resources: ['" + srv.URL + "/r b.yaml']",
		"generator envs":           "configMapGenerator: [{name: g, envs: [" + url + "]}]",
		"openapi":                  "openapi: {path: " + url + "}",
		"replacements":             "replacements: [{path: " + url + "}]",
		"crds":                     "crds: [" + url + "]",
		"transformers":             "transformers: [" + url + "]",
		"generators git":           "generators: ['github.com/org/repo//plugins?ref=v1']",
		"validators":               "validators: [" + url + "]",
		"configurations":           "configurations: [" + url + "]",
		"plugin config file":       "generators: [../gen.yaml]",
		// kustomize clones before it looks for a folder: a local folder
		// named like user@host/org/repo is a git remote to it.
		"resources, user@host/path": "resources: [deploy@git.internal/org/app]",
		"resources, git:: scp":      "resources: ['git::Deploy@git.internal/org/app?ref=main']",
	}
	for _, local := range []string{"resources,-user@host/path/deploy@git.internal/org/app", "resources,-git::-scp/git::Deploy@git.internal/org/app?ref=main"} {
		rendertest.WriteFile(t, repo, local+"/kustomization.yaml", "resources: [cm.yaml]\n")
		rendertest.WriteFile(t, repo, local+"/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: local}\n")
	}
	rendertest.WriteFile(t, repo, "gen.yaml", "apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata: {name: g}\nfiles: ["+url+"]\n")
	for name, field := range cases {
		dir := strings.ReplaceAll(name, " ", "-")
		rendertest.WriteFile(t, repo, dir+"/kustomization.yaml", "resources: [../cm.yaml]\n"+field+"\n")
		req := request(&spec.Kustomize{Path: dir})
		req.RepoDir = repo
		if _, err := kustomize.New(kustomize.Options{}).Render(context.Background(), req); !errors.Is(err, kustomize.ErrRemoteBase) {
			t.Errorf("%s: error %v, want %v", name, err, kustomize.ErrRemoteBase)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests reached the server", n)
	}
	if _, err := os.Stat(mark); err == nil {
		t.Error("git ran")
	}

	// URLs in data fields are data.
	rendertest.WriteFile(t, repo, "docs/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n")
	rendertest.WriteFile(t, repo, "docs/kustomization.yaml", "resources: [cm.yaml]\ncommonAnnotations: {docs: "+url+"}\n")
	req := request(&spec.Kustomize{Path: "docs"})
	req.RepoDir = repo
	if _, err := kustomize.New(kustomize.Options{}).Render(context.Background(), req); err != nil {
		t.Errorf("a URL in an annotation: %v", err)
	}
}

// TestCheckFindsEveryMissingReference: Check reports, in one pass and
// without building, every path a tree of kustomizations names that the
// repository lacks or that leaves it — resources, bases, components,
// patches, generators' files and env files, CRDs, replacements — each
// naming its kustomization file, field and path (with the near name of a
// typo, as the kustomization would write it), and reads nothing outside
// the repository (a canary there never shows).
func TestCheckFindsEveryMissingReference(t *testing.T) {
	const canary = "CANARY-outside-the-repository"
	outside := t.TempDir()
	rendertest.WriteFile(t, outside, "kustomization.yaml", "resources: [cm.yaml]\n")
	rendertest.WriteFile(t, outside, "cm.yaml", "# "+canary+"\n")
	repo := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(repo, "link")); err != nil {
		t.Fatal(err)
	}
	rendertest.WriteFile(t, repo, "base/kustomization.yaml", "resources: [deploy.yaml, missing-in-base.yaml]\n")
	rendertest.WriteFile(t, repo, "base/deploy.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
	rendertest.WriteFile(t, repo, "empty/README", "no kustomization here\n")
	rendertest.WriteFile(t, repo, "app/patch.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
	rendertest.WriteFile(t, repo, "app/kustomization.yaml", `resources:
- ../base
- ../bsae
- ../empty
- ../link
- ../../`+filepath.Base(outside)+`
components: [../comp]
patches:
- path: patch.yaml
- path: ptach.yaml
- patch: |-
    - op: add
      path: /metadata/labels/x
      value: y
  target: {kind: ConfigMap}
patchesStrategicMerge: [gone.yaml]
configMapGenerator:
- name: cfg
  files: [app.properties, key=data/missing.txt]
  envs: [missing.env]
crds: [crds/thing.yaml]
replacements:
- path: repl.yaml
`)
	check := func(allowRemote bool) error {
		return kustomize.Check(repo, &spec.Kustomize{Path: "app"}, allowRemote)
	}
	err := check(false)
	if err == nil {
		t.Fatal("no error")
	}
	got := err.Error()
	for _, want := range []string{
		`base/kustomization.yaml: resources "missing-in-base.yaml": not in the fleet repository`,
		`app/kustomization.yaml: resources "../bsae": not in the fleet repository (did you mean "../base"?)`,
		`app/kustomization.yaml: resources "../empty": the folder has no kustomization.yaml`,
		`app/kustomization.yaml: resources "../link": path leaves the fleet repository: link is a symlink to outside the repository`,
		`app/kustomization.yaml: resources "../../` + filepath.Base(outside) + `": path leaves the fleet repository`,
		`app/kustomization.yaml: components "../comp": not in the fleet repository`,
		`app/kustomization.yaml: patches.path "ptach.yaml": not in the fleet repository (did you mean "patch.yaml"?)`,
		`app/kustomization.yaml: patchesStrategicMerge "gone.yaml": not in the fleet repository`,
		`app/kustomization.yaml: files "app.properties": not in the fleet repository`,
		`app/kustomization.yaml: files "data/missing.txt": not in the fleet repository`,
		`app/kustomization.yaml: envs "missing.env": not in the fleet repository`,
		`app/kustomization.yaml: crds "crds/thing.yaml": not in the fleet repository`,
		`app/kustomization.yaml: replacements.path "repl.yaml": not in the fleet repository`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Check lacks %q", want)
		}
	}
	if n := strings.Count(got, "\n") + 1; n != 13 {
		t.Errorf("%d problems, want 13:\n%s", n, got)
	}
	if strings.Contains(got, canary) || strings.Contains(got, `"patch.yaml"`+":") {
		t.Errorf("Check says too much:\n%s", got)
	}

	// A remote base is refused unless remote content is allowed; allowed,
	// it is not fetched and the local problems are still found.
	rendertest.WriteFile(t, repo, "app/kustomization.yaml", "resources:\n- https://github.com/org/repo//base?ref=v1\n- ../bsae\n")
	if err := check(false); !errors.Is(err, kustomize.ErrRemoteBase) {
		t.Errorf("remote base: %v", err)
	}
	if err := check(true); err == nil || errors.Is(err, kustomize.ErrRemoteBase) || !strings.Contains(err.Error(), `"../bsae"`) {
		t.Errorf("remote base allowed: %v", err)
	}
	rendertest.WriteFile(t, repo, "app/kustomization.yaml", "resources: [../base]\n")
	rendertest.WriteFile(t, repo, "base/kustomization.yaml", "resources: [deploy.yaml]\n")
	if err := check(false); err != nil {
		t.Errorf("a complete tree: %v", err)
	}
}

// TestManyResourcesAsKustomizeBuild: a kustomization listing many files of
// mixed kinds, in no particular order, and a base of its own, builds to
// the objects `kustomize build --reorder none` v5.8.1 prints, in its
// order, or with the kustomization's sortOptions, in theirs; a
// kustomization naming one object twice fails as it does.
func TestManyResourcesAsKustomizeBuild(t *testing.T) {
	bin := peers.Path(t, peers.Kustomize)
	repo := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(repo, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(repo, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	kinds := []string{
		"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c-%[1]d\ndata:\n  on: yes\n  n: \"0%[1]d\"\n",
		"apiVersion: v1\nkind: Service\nmetadata:\n  name: s-%[1]d\nspec:\n  ports:\n  - port: 80\n",
		"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d-%[1]d\nspec:\n  selector:\n    matchLabels: {app: d-%[1]d}\n  template:\n    metadata:\n      labels: {app: d-%[1]d}\n    spec:\n      containers:\n      - name: c\n        image: registry.example/app:1\n",
		"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-%[1]d\n",
		"apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: r-%[1]d\nrules: []\n",
	}
	var k strings.Builder
	k.WriteString("resources:\n- base\n")
	for i := range 300 {
		name := fmt.Sprintf("app/f-%03d.yaml", (i*7919)%300)
		write(name, fmt.Sprintf(kinds[i%len(kinds)], i))
		fmt.Fprintf(&k, "- %s\n", strings.TrimPrefix(name, "app/"))
	}
	write("app/base/kustomization.yaml", "resources:\n- crd.yaml\n")
	write("app/base/crd.yaml", "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  names: {kind: Widget, plural: widgets}\n  scope: Namespaced\n  versions: []\n")
	write("app/kustomization.yaml", k.String())
	cli, err := exec.Command(bin, "build", "--reorder", "none", filepath.Join(repo, "app")).Output()
	if err != nil {
		t.Fatalf("kustomize build: %v", err)
	}
	want, err := render.DecodeObjects(cli, "kustomize build")
	if err != nil {
		t.Fatal(err)
	}
	req := &render.Request{Bundle: "many", Namespace: "many", Cluster: "c", RepoDir: repo,
		Source: spec.Source{Kind: spec.KindKustomize, Kustomize: &spec.Kustomize{Path: "app"}}}
	out, err := kustomize.New(kustomize.Options{}).Render(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	rendertest.CompareObjects(t, out.Objects, want)
	accumulated := rendertest.Keys(want)
	if got := rendertest.Keys(out.Objects); !slices.Equal(got, accumulated) {
		t.Errorf("objects in another order than kustomize build's:\n%v\n%v", got[:10], accumulated[:10])
	}

	// The kustomization's own sortOptions, as kustomize build honours them.
	write("app/kustomization.yaml", "sortOptions:\n  order: legacy\n"+k.String())
	cli, err = exec.Command(bin, "build", filepath.Join(repo, "app")).Output()
	if err != nil {
		t.Fatalf("kustomize build: %v", err)
	}
	if want, err = render.DecodeObjects(cli, "kustomize build"); err != nil {
		t.Fatal(err)
	}
	if out, err = kustomize.New(kustomize.Options{}).Render(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if got, w := rendertest.Keys(out.Objects), rendertest.Keys(want); !slices.Equal(got, w) || slices.Equal(w, accumulated) {
		t.Errorf("sortOptions legacy: another order than kustomize build's (or the order of accumulation):\n%v\n%v", got[:10], w[:10])
	}

	write("app/dup.yaml", fmt.Sprintf(kinds[0], 0))
	write("app/kustomization.yaml", k.String()+"- dup.yaml\n")
	if err := exec.Command(bin, "build", filepath.Join(repo, "app")).Run(); err == nil {
		t.Fatal("kustomize build accepted an object named twice")
	}
	if _, err := kustomize.New(kustomize.Options{}).Render(context.Background(), req); err == nil || !strings.Contains(err.Error(), "already registered id") {
		t.Errorf("an object named twice: %v", err)
	}
}
