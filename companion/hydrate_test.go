package companion_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/companion"
	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// fleetV1: two inventory clusters in two rollout waves; web per region,
// db from a manifests folder that web depends on, a Secret, and a team
// bundle applied as its ServiceAccount.
const fleetV1 = `package fleet

clusters: {
	"eu-1": {region: "eu-west-1", labels: class: "standard"}
	"us-1": {region: "us-east-1", labels: class: "standard"}
}
rollout: waves: [{name: "eu", regions: ["eu-*"]}, {name: "rest"}]
bundles: web: {
	namespace: "web"
	dependsOn: ["db"]
	resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "web", data: region: cluster.region}]
}
bundles: db: {namespace: "db", manifests: path: "manifests/db", timeout: "2m"}
bundles: creds: {namespace: "web", resources: [{apiVersion: "v1", kind: "Secret", metadata: name: "creds", stringData: token: "s3cret"}]}
bundles: team: {namespace: "team-a", serviceAccountName: "deployer", resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "team"}]}
`

const dbManifest = `apiVersion: v1
kind: Namespace
metadata:
  name: db
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: db
  namespace: db
data:
  size: small
`

// fleetV3 changes web for EU clusters only, removes db, and breaks creds
// (its manifests folder does not exist).
var fleetV3 = strings.NewReplacer(
	`data: region: cluster.region}]`, `data: {region: cluster.region, if cluster.region == "eu-west-1" {tier: "gold"}}}]`,
	`dependsOn: ["db"]`, ``,
	`bundles: db: {namespace: "db", manifests: path: "manifests/db", timeout: "2m"}`, ``,
	`bundles: creds: {namespace: "web", resources: [{apiVersion: "v1", kind: "Secret", metadata: name: "creds", stringData: token: "s3cret"}]}`,
	`bundles: creds: {namespace: "web", manifests: path: "manifests/creds"}`,
).Replace(fleetV1)

func hydrate(t *testing.T, dir string) *companion.Output {
	t.Helper()
	out, err := companion.Hydrate(context.Background(), companion.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// show is a file of a revision of the repository in dir.
func show(t *testing.T, dir, rev, path string) string {
	t.Helper()
	return gittest.Git(t, dir, "show", rev+":"+path)
}

func metadataOf(t *testing.T, dir, rev, path string) companion.Metadata {
	t.Helper()
	m, err := companion.ReadMetadata([]byte(show(t, dir, rev, path)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestHydrateBranch follows a hydrated branch through a fleet's history:
// the layout; a source commit that changes nothing rendered makes no
// commit but a note; a change for EU clusters only rewrites only their
// paths' metadata; a removed bundle's paths go; a bundle that fails keeps
// what was hydrated for it. Git itself reads what go-git wrote (fsck,
// notes, trailers).
func TestHydrateBranch(t *testing.T) {
	repo := gittest.New(t)
	v1 := repo.Commit(map[string]string{"fleet.cue": fleetV1, "manifests/db/db.yaml": dbManifest})
	// A cluster known only from its status branch is hydrated too.
	r, err := report.New(report.Options{URL: repo.URL})
	if err != nil {
		t.Fatal(err)
	}
	edge := &report.Status{Cluster: fleet.Cluster{Name: "edge-7", Region: "ap-south-1", Labels: map[string]string{"class": "edge"}},
		Phase: report.ClusterReady, Bundles: []report.BundleStatus{}}
	if _, err := r.Publish(context.Background(), edge, time.Now()); err != nil {
		t.Fatal(err)
	}
	gittest.Git(t, repo.Work, "fetch", "origin", "refs/heads/flotilla/status/*:refs/remotes/origin/flotilla/status/*")

	out := hydrate(t, repo.Work)
	if len(out.Problems) != 0 || out.Clusters != 3 {
		t.Fatalf("hydrated %d clusters, problems %v", out.Clusters, out.Problems)
	}
	res, err := companion.CommitBranch(context.Background(), repo.Work, out, companion.CommitOptions{Branch: "hydrated", Push: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || !res.Pushed {
		t.Fatalf("first hydration: %+v", res)
	}
	bare := repo.Bare
	gittest.Git(t, bare, "fsck", "--strict", "--no-dangling")
	tip := gittest.Git(t, bare, "rev-parse", "hydrated")
	if tip != res.Commit {
		t.Fatalf("remote tip %s, hydrated %s", tip, res.Commit)
	}
	msg := gittest.Git(t, bare, "log", "-1", "--format=%B", "hydrated")
	if got := companion.DrySHAOf(msg); got != v1 {
		t.Errorf("trailer names %q, want %s:\n%s", got, v1, msg)
	}
	if got := gittest.Git(t, bare, "log", "-1", "--format=%(trailers:key=Flotilla-Dry-Sha,valueonly)", "hydrated"); got != v1 {
		t.Errorf("git reads the trailer as %q, want %s", got, v1)
	}
	checkNote(t, bare, "hydrated", v1)

	files := strings.Fields(gittest.Git(t, bare, "ls-tree", "-r", "--name-only", "hydrated"))
	for _, want := range []string{
		"hydrator.metadata",
		"clusters/eu-1/kustomization.yaml", "clusters/eu-1/hydrator.metadata",
		"clusters/eu-1/web/manifest.yaml", "clusters/eu-1/web/kustomization.yaml", "clusters/eu-1/web/hydrator.metadata",
		"clusters/eu-1/flux/kustomization.yaml", "clusters/eu-1/flux/web.yaml", "clusters/eu-1/argocd/web.json",
		"clusters/edge-7/db/manifest.yaml", "clusters/us-1/team/manifest.yaml",
	} {
		if !contains(files, want) {
			t.Errorf("hydrated branch has no %s:\n%s", want, strings.Join(files, "\n"))
		}
	}
	if m := metadataOf(t, bare, "hydrated", "clusters/eu-1/web/hydrator.metadata"); m.DrySHA != v1 || m.RepoURL != "file://"+repo.Bare || m.Subject != "change" || m.Author == "" || m.Date == "" {
		t.Errorf("web's metadata: %+v", m)
	}

	// Flux: web waits for db; the wave is a label; the team bundle's
	// Kustomization is in its namespace, as its ServiceAccount.
	var web, team map[string]any
	mustYAML(t, show(t, bare, "hydrated", "clusters/eu-1/flux/web.yaml"), &web)
	mustYAML(t, show(t, bare, "hydrated", "clusters/eu-1/flux/team.yaml"), &team)
	if got := get(web, "spec", "dependsOn"); !reflect.DeepEqual(got, []any{map[string]any{"name": "flotilla-db", "namespace": "flux-system"}}) {
		t.Errorf("web's dependsOn: %v", got)
	}
	if get(web, "spec", "path") != "./clusters/eu-1/web" || get(web, "metadata", "labels", "flotilla.dev/wave") != "eu" || get(web, "spec", "prune") != true {
		t.Errorf("web's Flux Kustomization: %v", web)
	}
	if get(team, "metadata", "namespace") != "team-a" || get(team, "spec", "serviceAccountName") != "deployer" {
		t.Errorf("team's Flux Kustomization: %v", team)
	}
	var db map[string]any
	mustYAML(t, show(t, bare, "hydrated", "clusters/us-1/flux/db.yaml"), &db)
	if get(db, "spec", "timeout") != "2m0s" || get(db, "metadata", "labels", "flotilla.dev/wave") != "rest" || get(db, "metadata", "labels", "flotilla.dev/wave-index") != "1" {
		t.Errorf("db's Flux Kustomization in us-1: %v", db)
	}
	// Argo CD: the generator's parameters.
	var params map[string]any
	if err := json.Unmarshal([]byte(show(t, bare, "hydrated", "clusters/eu-1/argocd/web.json")), &params); err != nil {
		t.Fatal(err)
	}
	if params["cluster"] != "eu-1" || params["bundle"] != "web" || params["namespace"] != "web" || params["hydratedPath"] != "clusters/eu-1/web" ||
		params["wave"] != "eu" || params["waveIndex"] != "0" || get(params, "labels", "class") != "standard" || params["region"] != "eu-west-1" {
		t.Errorf("web's parameters: %v", params)
	}

	// kustomize build of a cluster's folder is what flotilla renders.
	checkout := t.TempDir()
	gittest.Git(t, bare, "worktree", "add", "--detach", checkout, "hydrated")
	for _, c := range []string{"eu-1", "us-1", "edge-7"} {
		built := kustomizeBuild(t, filepath.Join(checkout, "clusters", c))
		rendered := renderCluster(t, repo.Work, c)
		if !reflect.DeepEqual(built, rendered) {
			t.Errorf("kustomize build clusters/%s differs from flotilla render:\n%s\n---- render ----\n%s", c, toYAML(built), toYAML(rendered))
		}
	}
	gittest.Git(t, bare, "worktree", "remove", "--force", checkout)

	// v2 changes nothing rendered: no commit, the tip is noted with v2.
	v2 := repo.Commit(map[string]string{"README.md": "the fleet\n"})
	res, err = companion.CommitBranch(context.Background(), repo.Work, hydrate(t, repo.Work), companion.CommitOptions{Branch: "hydrated", Push: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed || res.Commit != tip || gittest.Git(t, bare, "rev-parse", "hydrated") != tip {
		t.Fatalf("a source commit that changes nothing made a commit: %+v", res)
	}
	checkNote(t, bare, "hydrated", v2)

	// v3: web changes in eu-1 only; db leaves; creds fails to render.
	v3 := repo.Commit(map[string]string{"fleet.cue": fleetV3})
	out = hydrate(t, repo.Work)
	if len(out.Problems) != 3 || !strings.Contains(out.Problems[0].Error(), "manifests/creds") {
		t.Fatalf("want creds failing for the 3 clusters, got %v", out.Problems)
	}
	res, err = companion.CommitBranch(context.Background(), repo.Work, out, companion.CommitOptions{Branch: "hydrated", Push: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || res.Removed == 0 {
		t.Fatalf("v3: %+v", res)
	}
	checkNote(t, bare, "hydrated", v3)
	if m := metadataOf(t, bare, "hydrated", "clusters/eu-1/web/hydrator.metadata"); m.DrySHA != v3 {
		t.Errorf("eu-1's web changed at v3, its metadata says %s", m.DrySHA)
	}
	if m := metadataOf(t, bare, "hydrated", "clusters/us-1/web/hydrator.metadata"); m.DrySHA != v1 {
		t.Errorf("us-1's web did not change since v1, its metadata says %s", m.DrySHA)
	}
	if m := metadataOf(t, bare, "hydrated", "hydrator.metadata"); m.DrySHA != v3 {
		t.Errorf("root metadata says %s, want v3", m.DrySHA)
	}
	files = strings.Fields(gittest.Git(t, bare, "ls-tree", "-r", "--name-only", "hydrated"))
	for _, f := range files {
		if strings.Contains(f, "/db/") || strings.HasSuffix(f, "/db.yaml") || strings.HasSuffix(f, "/db.json") {
			t.Errorf("removed bundle db still hydrated: %s", f)
		}
	}
	if got := show(t, bare, "hydrated", "clusters/eu-1/creds/manifest.yaml"); !strings.Contains(got, "s3cret") {
		t.Errorf("creds failed to render at v3: its last hydrated state must stay, got %q", got)
	}
	if m := metadataOf(t, bare, "hydrated", "clusters/eu-1/creds/hydrator.metadata"); m.DrySHA != v1 {
		t.Errorf("failed creds' metadata says %s, want v1 (kept)", m.DrySHA)
	}
	if k := show(t, bare, "hydrated", "clusters/eu-1/kustomization.yaml"); !strings.Contains(k, "- creds/") || strings.Contains(k, "db/") {
		t.Errorf("eu-1's kustomization.yaml:\n%s", k)
	}
	gittest.Git(t, bare, "fsck", "--strict", "--no-dangling")
}

// TestHydratePushBuildsOnTheRemoteTip: a clone whose hydrated branch is
// behind (another CI job hydrated since) builds on the remote's tip, and
// its notes keep the other job's.
func TestHydratePushBuildsOnTheRemoteTip(t *testing.T) {
	repo := gittest.New(t)
	v1 := repo.Commit(map[string]string{"fleet.cue": fleetV1, "manifests/db/db.yaml": dbManifest})
	if _, err := companion.CommitBranch(context.Background(), repo.Work, hydrate(t, repo.Work), companion.CommitOptions{Branch: "hydrated", Push: true}); err != nil {
		t.Fatal(err)
	}
	first := gittest.Git(t, repo.Bare, "rev-parse", "hydrated")

	// Another clone hydrates v3 and pushes.
	other := filepath.Join(t.TempDir(), "other")
	gittest.Git(t, filepath.Dir(other), "clone", "-q", repo.Bare, other)
	if err := os.WriteFile(filepath.Join(other, "fleet.cue"), []byte(fleetV3), 0o644); err != nil {
		t.Fatal(err)
	}
	gittest.Git(t, other, "commit", "-qam", "v3")
	gittest.Git(t, other, "push", "-q", "origin", "main")
	v3 := gittest.Git(t, other, "rev-parse", "HEAD")
	res, err := companion.CommitBranch(context.Background(), other, hydrate(t, other), companion.CommitOptions{Branch: "hydrated", Push: true})
	if err != nil {
		t.Fatal(err)
	}
	second := res.Commit

	// The first clone, still at v1 locally, hydrates v1 again: its result
	// differs from the remote's tip, so it commits on top of it.
	res, err = companion.CommitBranch(context.Background(), repo.Work, hydrate(t, repo.Work), companion.CommitOptions{Branch: "hydrated", Push: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || gittest.Git(t, repo.Bare, "rev-parse", "hydrated^") != second {
		t.Fatalf("did not build on the remote tip %s: %+v", second, res)
	}
	checkNote(t, repo.Bare, first, v1)
	checkNote(t, repo.Bare, second, v3)
	checkNote(t, repo.Bare, "hydrated", v1)
}

// TestHydrateFolder writes into a folder: unchanged files are not
// rewritten, gone clusters are removed, other files stay, and a link
// planted in the folder is replaced, never written through.
func TestHydrateFolder(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": fleetV1, "manifests/db/db.yaml": dbManifest})
	dir := filepath.Join(t.TempDir(), "hydrated")
	out := hydrate(t, repo.Work)
	res, err := companion.WriteFolder(out, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || res.Added != res.Files {
		t.Fatalf("first write: %+v", res)
	}
	canary := filepath.Join(t.TempDir(), "canary")
	if err := os.WriteFile(canary, []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(dir, "clusters/eu-1/web/manifest.yaml")
	if err := os.Remove(manifest); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(canary, manifest); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"clusters/gone-1/web/manifest.yaml", "README.md"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err = companion.WriteFolder(out, dir)
	if err != nil {
		t.Fatal(err)
	}
	if res.Updated != 1 || res.Removed != 1 || res.Added != 0 {
		t.Errorf("second write: %+v, want the link replaced and gone-1 removed", res)
	}
	if data, _ := os.ReadFile(canary); string(data) != "outside" {
		t.Fatalf("the write went through the planted link: canary now %q", data)
	}
	if fi, err := os.Lstat(manifest); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("the link was not replaced by a file: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "clusters/gone-1")); !os.IsNotExist(err) {
		t.Errorf("a gone cluster's folder stays: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
		t.Errorf("a file outside clusters/ was removed: %v", err)
	}
	res, err = companion.WriteFolder(out, dir)
	if err != nil || res.Changed {
		t.Fatalf("third write of the same: %+v %v", res, err)
	}
}

// TestHydrateWritesNoCredentials: a remote URL carrying a token is
// recorded without it.
func TestHydrateWritesNoCredentials(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": fleetV1, "manifests/db/db.yaml": dbManifest})
	gittest.Git(t, repo.Work, "remote", "set-url", "origin", "https://ci-bot:tok3n-value@git.example.com/fleet.git")
	out := hydrate(t, repo.Work)
	if out.Metadata.RepoURL != "https://git.example.com/fleet.git" {
		t.Errorf("repoURL %q", out.Metadata.RepoURL)
	}
	res, err := companion.CommitBranch(context.Background(), repo.Work, out, companion.CommitOptions{Branch: "hydrated"})
	if err != nil {
		t.Fatal(err)
	}
	dump := gittest.Git(t, repo.Work, "log", "-p", "--format=%B", res.Commit)
	if strings.Contains(dump, "tok3n-value") {
		t.Error("the token was written to the hydrated branch")
	}
	if _, err := companion.CommitBranch(context.Background(), repo.Work, out, companion.CommitOptions{Branch: "main"}); err == nil || !strings.Contains(err.Error(), "checked out") {
		t.Errorf("hydrating into the checked-out branch: %v", err)
	}
}

func checkNote(t *testing.T, dir, rev, drySha string) {
	t.Helper()
	note := gittest.Git(t, dir, "notes", "--ref", "hydrator.metadata", "show", rev)
	var n struct {
		DrySHA string `json:"drySha"`
	}
	if err := json.Unmarshal([]byte(note), &n); err != nil || n.DrySHA != drySha {
		t.Errorf("note on %s: %q (%v), want drySha %s", rev, note, err, drySha)
	}
}

func kustomizeBuild(t *testing.T, dir string) []map[string]any {
	t.Helper()
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionUnspecified // the kustomization's sortOptions decide, as in kustomize build
	m, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out []map[string]any
	for _, r := range m.Resources() {
		obj, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, obj)
	}
	return out
}

// renderCluster is what `flotilla render --cluster` gives, as plain maps.
func renderCluster(t *testing.T, dir, cluster string) []map[string]any {
	t.Helper()
	f, err := fleet.Load(dir, fleet.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var c fleet.Cluster
	if c, err = f.InventoryCluster(cluster); err != nil {
		// Known from its status branch.
		c = fleet.Cluster{Name: cluster, Region: "ap-south-1", Labels: map[string]string{"class": "edge"}}
	}
	plan, err := f.Plan(c)
	if err != nil {
		t.Fatal(err)
	}
	bundles, err := planrender.New(dir, planrender.Options{}).RenderPlan(context.Background(), plan)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, b := range bundles {
		if b.Err != nil {
			t.Fatal(b.Err)
		}
		for _, o := range b.Result.Objects {
			out = append(out, roundTrip(t, o))
		}
	}
	return out
}

// roundTrip is an object as YAML would read it back (numbers as in YAML).
func roundTrip(t *testing.T, o *unstructured.Unstructured) map[string]any {
	t.Helper()
	data, err := yaml.Marshal(o.Object)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	mustYAML(t, string(data), &m)
	return m
}

func mustYAML(t *testing.T, s string, v any) {
	t.Helper()
	if err := yaml.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("%v:\n%s", err, s)
	}
}

func toYAML(v any) string {
	data, _ := yaml.Marshal(v)
	return string(data)
}

func get(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[p]
	}
	return v
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
