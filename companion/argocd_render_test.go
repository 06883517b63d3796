package companion_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	ssautils "github.com/fluxcd/pkg/ssa/utils"
	"github.com/go-git/go-git/v5/plumbing/object"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/companion"
	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/internal/testenv"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// argoFleet has a bundle of every kind (Helm chart of the repository, CUE
// objects, manifests, kustomize), four clusters in rollout waves — one
// without clusters, one behind an approval, one with maxUnavailable —
// and a bundle with a rollout of its own.
const argoFleet = `package fleet

clusters: {
	"canary-1": {region: "eu-west-1", labels: {}}
	"eu-1":     {region: "eu-west-1", labels: {}}
	"eu-2":     {region: "eu-central-1", labels: {}}
	"us-1":     {region: "us-east-1", labels: {}}
}
rollout: waves: [
	{name: "canary", names: ["canary-*"]},
	{name: "apac", regions: ["ap-*"]},
	{name: "eu", regions: ["eu-*"], approve: true},
	{name: "rest", maxUnavailable: 1},
]
bundles: web: {namespace: "web", helm: chart: "charts/web", values: greeting: "hi " + cluster.name}
bundles: app: {namespace: "app", resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "app", data: region: cluster.region}]}
bundles: db: {namespace: "db", manifests: path: "manifests/db"}
bundles: mon: {namespace: "mon", kustomize: path: "kustomize/mon"}
bundles: hotfix: {
	namespace: "app"
	rollout: waves: [{name: "us-first", regions: ["us-*"]}, {name: "others"}]
	resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "hotfix"}]
}
`

// remoteBundle is a chart from a Helm repository: only planned (by the
// plugin generator), never rendered here.
const remoteBundle = `
bundles: remote: {namespace: "remote", helm: {repo: "https://charts.example.com", chart: "podinfo", version: "6.0.0"}}
`

var argoFiles = map[string]string{
	"charts/web/Chart.yaml":            "apiVersion: v2\nname: web\nversion: 0.1.0\n",
	"charts/web/templates/cm.yaml":     "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
	"manifests/db/db.yaml":             dbManifest,
	"kustomize/mon/kustomization.yaml": "resources: [cm.yaml]\n",
	"kustomize/mon/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: mon\n",
}

// argoCluster is a control plane holding Argo CD's CRDs, its namespace
// and the default AppProject, on which Argo CD's ApplicationSet code runs.
func argoCluster(t *testing.T, ctx context.Context) (*testenv.Cluster, client.Client) {
	t.Helper()
	cluster := testenv.StartT(t, testenv.Options{Name: "argocd"})
	if err := cluster.InstallCRDs(ctx, "argocd"); err != nil {
		t.Fatal(err)
	}
	kube, err := client.New(cluster.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := kube.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "argocd"}}); err != nil {
		t.Fatal(err)
	}
	project := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
		"metadata": map[string]any{"name": "default", "namespace": "argocd"},
		"spec":     map[string]any{"sourceRepos": []any{"*"}, "destinations": []any{map[string]any{"server": "*", "namespace": "*", "name": "*"}}},
	}}
	if err := kube.Create(ctx, project); err != nil {
		t.Fatal(err)
	}
	return cluster, kube
}

// appsetsOf reads the ApplicationSets of a YAML stream (and creates the
// other objects: the plugin's ConfigMap and Secret).
func appsetsOf(t *testing.T, ctx context.Context, kube client.Client, data string) map[string][]byte {
	t.Helper()
	objects, err := ssautils.ReadObjects(strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, o := range objects {
		if o.GetKind() != "ApplicationSet" {
			if err := kube.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
			continue
		}
		y, err := yaml.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		out[o.GetName()] = y
	}
	return out
}

func field(app map[string]any, path ...string) string {
	v, _, _ := unstructured.NestedFieldNoCopy(app, path...)
	s, _ := v.(string)
	return s
}

func byName(t *testing.T, res *testenv.ArgoCDResult) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, a := range res.Applications {
		out[field(a, "metadata", "name")] = a
	}
	if len(out) != len(res.Applications) {
		t.Errorf("%d Applications, %d names", len(res.Applications), len(out))
	}
	return out
}

// TestArgoCDRendersTheHydratedBranch drives Argo CD's own ApplicationSet
// code (generators, templates, progressive sync) over the hydrated branch
// and the plugin generator: both documented ApplicationSets and the ones
// `hydrate --argocd-applicationsets` prints give one Application per
// cluster and bundle of every kind, with the hydrated path, the bundle's
// namespace and the cluster as destination; every parameter renders under
// missingkey=error; and the fleet's waves become steps in which Argo CD
// syncs the canary first, holds the wave behind an approval, and keeps to
// maxUnavailable.
func TestArgoCDRendersTheHydratedBranch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	repo := gittest.New(t)
	files := map[string]string{"fleet.cue": argoFleet}
	for k, v := range argoFiles {
		files[k] = v
	}
	rev := repo.Commit(files)
	// The first hydration of eu waits for its approval, as an agent would.
	if _, err := report.Approve(ctx, report.ApproveOptions{URL: repo.URL, Author: object.Signature{Name: "Ops", Email: "ops@example.com", When: time.Now()}},
		report.Approval{Revision: rev, Wave: "eu", By: "Ops <ops@example.com>", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	out, err := companion.Hydrate(ctx, companion.Options{Dir: repo.Work, Status: report.Branches{URL: repo.URL}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Problems) > 0 || len(out.Gates) > 0 {
		t.Fatalf("problems %v, gates %v", out.Problems, out.Gates)
	}
	if _, err := companion.CommitBranch(ctx, repo.Work, out, companion.CommitOptions{Branch: "hydrated", Push: true, Remote: "origin", Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	url := repo.ServeHTTPOpen()
	cluster, kube := argoCluster(t, ctx)

	doc, err := os.ReadFile("../docs/argocd/applicationset-hydrated.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sets := appsetsOf(t, ctx, kube, strings.ReplaceAll(string(doc), "https://git.example.com/platform/fleet.git", url))
	res, err := cluster.ArgoCDApplicationSet(ctx, sets["flotilla-fleet"], 0)
	if err != nil {
		t.Fatal(err)
	}
	apps := byName(t, res)
	if len(apps) != 20 {
		t.Fatalf("the documented ApplicationSet: %d Applications, want 4 clusters × 5 bundles", len(apps))
	}
	for _, c := range []string{"canary-1", "eu-1", "eu-2", "us-1"} {
		for b, ns := range map[string]string{"web": "web", "app": "app", "db": "db", "mon": "mon", "hotfix": "app"} {
			a := apps[c+"-"+b]
			if a == nil {
				t.Errorf("no Application %s-%s", c, b)
				continue
			}
			if p := field(a, "spec", "source", "path"); p != "clusters/"+c+"/"+b {
				t.Errorf("%s-%s: source.path %q", c, b, p)
			}
			if field(a, "spec", "destination", "name") != c || field(a, "spec", "destination", "namespace") != ns ||
				field(a, "spec", "source", "targetRevision") != "hydrated" || field(a, "metadata", "labels", "flotilla.dev/cluster") != c {
				t.Errorf("%s-%s: %v", c, b, a["spec"])
			}
		}
	}
	if res.Steps["canary-1-web"] != "1" || res.Steps["eu-1-web"] != "3" || res.Steps["us-1-db"] != "3" {
		t.Errorf("the documented steps (by wave index, apac empty: eu is index 2): %v", res.Steps)
	}

	t.Run("generated ApplicationSets", func(t *testing.T) {
		generated, err := companion.ApplicationSets(out.Rollouts, companion.ApplicationSetOptions{RepoURL: url, Branch: "hydrated"})
		if err != nil {
			t.Fatal(err)
		}
		sets := appsetsOf(t, ctx, kube, string(generated))
		if len(sets) != 2 || sets["flotilla-fleet"] == nil || sets["flotilla-hotfix"] == nil {
			t.Fatalf("want the fleet's and hotfix's:\n%s", generated)
		}
		if strings.Contains(string(generated), "apac") {
			t.Errorf("a wave without clusters has a step:\n%s", generated)
		}
		strict := client.FieldValidation(metav1.FieldValidationStrict)
		for name, y := range sets {
			o := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(y, &o.Object); err != nil {
				t.Fatal(err)
			}
			if err := kube.Create(ctx, o, strict); err != nil {
				t.Errorf("%s refused: %v", name, err)
			}
		}
		checkSteps := func(set string, healthy int, steps map[string]string, pending []string) {
			t.Helper()
			res, err := cluster.ArgoCDApplicationSet(ctx, sets[set], healthy)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Applications) != len(res.Steps) {
				t.Errorf("%s: %d Applications, %d with a step", set, len(res.Applications), len(res.Steps))
			}
			for app, step := range steps {
				if res.Steps[app] != step {
					t.Errorf("%s: %s in step %s, want %s (%v)", set, app, res.Steps[app], step, res.Steps)
				}
			}
			if !slices.Equal(res.Pending, pending) && (pending != nil || len(res.Pending) != 1) {
				t.Errorf("%s with %d steps healthy: Argo CD syncs %v, want %v", set, healthy, res.Pending, pending)
			}
			for _, a := range res.Applications {
				if strings.HasSuffix(field(a, "metadata", "name"), "-hotfix") != (set == "flotilla-hotfix") {
					t.Errorf("%s has %s", set, field(a, "metadata", "name"))
				}
			}
		}
		fleetSteps := map[string]string{"canary-1-web": "1", "eu-1-db": "2", "eu-2-mon": "2", "us-1-app": "3"}
		checkSteps("flotilla-fleet", 0, fleetSteps, []string{"canary-1-app", "canary-1-db", "canary-1-mon", "canary-1-web"})
		// eu waits for an approval: Argo CD syncs none of it.
		checkSteps("flotilla-fleet", 1, fleetSteps, []string{})
		// rest has maxUnavailable 1: one Application at a time (nil: any one).
		checkSteps("flotilla-fleet", 2, fleetSteps, nil)
		checkSteps("flotilla-hotfix", 0, map[string]string{"us-1-hotfix": "1", "eu-1-hotfix": "2"}, []string{"us-1-hotfix"})
	})

	t.Run("plugin generator", func(t *testing.T) {
		if err := os.WriteFile(repo.Work+"/fleet.cue", []byte(argoFleet+remoteBundle), 0o644); err != nil {
			t.Fatal(err)
		}
		const token = "replace-with-the-content-of-the-token-file"
		g, err := companion.NewGenerator(companion.GeneratorOptions{Dir: repo.Work, Token: token, PathPrefix: "/flotilla", Status: report.Branches{URL: repo.URL}})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(g)
		defer srv.Close()
		doc, err := os.ReadFile("../docs/argocd/plugin-generator.yaml")
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(doc), "http://flotilla-generator.flotilla-system.svc:4355", srv.URL+"/flotilla")
		text = strings.ReplaceAll(text, "https://git.example.com/platform/fleet.git", url)
		sets := appsetsOf(t, ctx, kube, text)
		res, err := cluster.ArgoCDApplicationSet(ctx, sets["flotilla-helm-bundles"], 0)
		if err != nil {
			t.Fatal(err)
		}
		apps := byName(t, res)
		if len(apps) != 4 {
			t.Fatalf("the documented plugin ApplicationSet: %d Applications, want web in 4 clusters", len(apps))
		}
		for c, a := range map[string]map[string]any{"canary-1": apps["canary-1-web"], "us-1": apps["us-1-web"]} {
			if field(a, "spec", "source", "path") != "charts/web" || field(a, "spec", "source", "targetRevision") != rev || field(a, "spec", "source", "helm", "releaseName") != "web" ||
				!strings.Contains(field(a, "spec", "source", "helm", "values"), "greeting: hi "+c) || field(a, "spec", "destination", "namespace") != "web" {
				t.Errorf("%s-web: %v", c, a["spec"])
			}
		}
		// The same template over every bundle, whatever its kind: every
		// key of source is there (missingkey=error).
		widened := strings.Replace(string(sets["flotilla-helm-bundles"]), "bundle:\n          - web\n", "", 1)
		if widened == string(sets["flotilla-helm-bundles"]) {
			t.Fatalf("no bundle filter to remove in:\n%s", widened)
		}
		res, err = cluster.ArgoCDApplicationSet(ctx, []byte(widened), 0)
		if err != nil {
			t.Fatal(err)
		}
		if apps := byName(t, res); len(apps) != 24 || field(apps["eu-1-remote"], "spec", "source", "helm", "releaseName") != "remote" {
			t.Errorf("widened to every bundle: %d Applications, want 4 clusters × 6 bundles; eu-1-remote %v", len(apps), apps["eu-1-remote"])
		}
	})
}

// promotedMessage is a fleet commit as a CI job promoting a code commit
// writes it: a two-line subject, a body, other trailers, the reference
// trailers Argo CD and GitOps Promoter read — and one SHA that does not
// validate (upper case), which stays in the body.
const promotedMessage = `Promote api to 1.4.2
for every region

The api image moves to 1.4.2.

Signed-off-by: Dev <dev@example.com>
Argocd-reference-commit-author: Jane Doe <jane@example.com>
Argocd-reference-commit-date: 2026-12-01T10:20:30+01:00
Argocd-reference-commit-subject: Fix the cache "eviction"
Argocd-reference-commit-body: "Line one.\n\nLine two."
Argocd-reference-commit-sha: 0123456789abcdef0123456789abcdef01234567
Argocd-reference-commit-repourl: https://git.example.com/team/api.git
Argocd-reference-commit-sha: ABCDEF1`

// TestHydratorMetadataIsArgoCDs compares the root hydrator.metadata that
// hydrate writes with the one Argo CD's source hydrator code writes for
// the same dry commit (its git client and util/hydrator, run from its
// module): subject, body without the reference trailers, and references,
// which GitOps Promoter shows as the code commit being promoted.
func TestHydratorMetadataIsArgoCDs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": fleetV1, "manifests/db/db.yaml": dbManifest})
	gittest.Git(t, repo.Work, "commit", "--allow-empty", "-m", promotedMessage)
	gittest.Git(t, repo.Work, "push", "origin", "main")
	dry := gittest.Git(t, repo.Work, "rev-parse", "HEAD")
	url := repo.ServeHTTPOpen()

	out, err := companion.Hydrate(ctx, companion.Options{Dir: repo.Work, RepoURL: url})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := companion.CommitBranch(ctx, repo.Work, out, companion.CommitOptions{Branch: "hydrated"}); err != nil {
		t.Fatal(err)
	}
	ours := metadataOf(t, repo.Work, "hydrated", companion.MetadataFile)
	argo, err := testenv.ArgoCDHydratorMetadata(ctx, t.TempDir(), url, dry)
	if err != nil {
		t.Fatal(err)
	}
	var theirs companion.Metadata
	if err := json.Unmarshal(argo, &theirs); err != nil {
		t.Fatal(err)
	}
	ourDate, err1 := time.Parse(time.RFC3339, ours.Date)
	theirDate, err2 := time.Parse(time.RFC3339, theirs.Date)
	if err1 != nil || err2 != nil || !ourDate.Equal(theirDate) {
		t.Errorf("date: ours %q, Argo CD's %q", ours.Date, theirs.Date)
	}
	ours.Date, theirs.Date = "", ""
	if !reflect.DeepEqual(ours, theirs) {
		o, _ := json.MarshalIndent(ours, "", "  ")
		t.Errorf("hydrator.metadata differs from Argo CD's:\nours:\n%s\nArgo CD's:\n%s", o, argo)
	}
	if len(ours.References) != 1 || ours.References[0].Commit.SHA != "0123456789abcdef0123456789abcdef01234567" ||
		ours.References[0].Commit.Body != "Line one.\n\nLine two." || strings.Contains(ours.Body, "Argocd-reference-commit-subject") ||
		!strings.Contains(ours.Body, "Argocd-reference-commit-sha: ABCDEF1") {
		t.Errorf("references: %+v, body %q", ours.References, ours.Body)
	}
}
