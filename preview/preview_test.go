package preview_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/internal/golden"
	"github.com/flotilla-gitops/flotilla/preview"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// baseFleet is the fleet before the change: three inventory clusters in
// two rollout waves; web's replicas per region; a legacy bundle; a Secret;
// a GPU driver for clusters whose facts show the GPU API.
const baseFleet = `package fleet

import "list"

clusters: {
	"eu-1": {region: "eu-west-1", labels: class: "standard"}
	"eu-2": {region: "eu-central-1", labels: class: "regulated"}
	"us-1": {region: "us-east-1", labels: class: "standard"}
}
rollout: waves: [{name: "eu", regions: ["eu-*"]}, {name: "rest"}]
_replicas: {"eu-west-1": "2", "eu-central-1": "2", "us-east-1": "2", "ap-south-1": "2"}
bundles: web: {namespace: "web", resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "web", data: replicas: _replicas[cluster.region]}]}
bundles: legacy: {namespace: "web", resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "legacy", data: v: "1"}]}
bundles: creds: {namespace: "web", resources: [{apiVersion: "v1", kind: "Secret", metadata: name: "creds", stringData: token: "old-token-value"}]}
bundles: "gpu-driver": {
	namespace: "gpu"
	target: when: list.Contains(cluster.facts.apiVersions, "gpu.example.com/v1")
	resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "driver", data: version: "1.0"}]
}
`

// headFleet is the change: EU clusters get 3 replicas; legacy leaves;
// monitoring arrives; the Secret's token changes; the GPU driver moves to
// 1.1; regulated clusters get a web namespace that does not evaluate; and
// us-1 becomes the canary of a new first wave.
var headFleet = strings.NewReplacer(
	`_replicas: {"eu-west-1": "2", "eu-central-1": "2"`, `_replicas: {"eu-west-1": "3", "eu-central-1": "3"`,
	`rollout: waves: [{name: "eu"`, `rollout: waves: [{name: "canary", names: ["us-1"]}, {name: "eu"`,
	"bundles: legacy:", "_legacy:",
	"old-token-value", "new-token-value",
	`version: "1.0"`, `version: "1.1"`,
).Replace(baseFleet) + `
bundles: monitoring: {namespace: "monitoring", resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "agent", data: name: cluster.name}]}
if cluster.labels.class == "regulated" {
	bundles: web: namespace: 5
}
`

// fleetWithHistory is a repository with the two revisions, and a cluster
// known only from its status branch (edge-7, whose facts select the GPU
// driver), fetched into the work clone as CI would.
func fleetWithHistory(t *testing.T) (repo *gittest.Repo, base, head string) {
	t.Helper()
	repo = gittest.New(t)
	base = repo.Commit(map[string]string{"fleet.cue": baseFleet})
	head = repo.Commit(map[string]string{"fleet.cue": headFleet})
	r, err := report.New(report.Options{URL: repo.URL})
	if err != nil {
		t.Fatal(err)
	}
	edge := &report.Status{Cluster: fleet.Cluster{Name: "edge-7", Region: "ap-south-1", Labels: map[string]string{"class": "standard"},
		Facts: fleet.Facts{KubernetesVersion: "v1.36.3", APIVersions: []string{"v1", "apps/v1", "gpu.example.com/v1"}}},
		Phase: report.ClusterReady, Bundles: []report.BundleStatus{}}
	if _, err := r.Publish(context.Background(), edge, time.Now()); err != nil {
		t.Fatal(err)
	}
	gittest.Git(t, repo.Work, "fetch", "origin", "refs/heads/flotilla/status/*:refs/remotes/origin/flotilla/status/*")
	return repo, base, head
}

// find returns a cluster of the preview and, when bundle is given, its
// bundle (nil when the cluster has none of that name).
func find(t *testing.T, rep *preview.Report, cluster, bundle string) (*preview.Cluster, *preview.Bundle) {
	t.Helper()
	for i := range rep.Clusters {
		c := &rep.Clusters[i]
		if c.Name != cluster {
			continue
		}
		if bundle == "" {
			return c, nil
		}
		for j := range c.Bundles {
			if c.Bundles[j].Name == bundle {
				return c, &c.Bundles[j]
			}
		}
		return c, nil
	}
	t.Fatalf("no cluster %s in the preview", cluster)
	return nil, nil
}

// TestPreview: every kind of change a pull request makes, for the
// inventory's clusters and one known from its status branch.
func TestPreview(t *testing.T) {
	repo, base, head := fleetWithHistory(t)
	rep, err := preview.Run(context.Background(), preview.Options{Dir: repo.Work, Base: base, Head: head})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Base != base || rep.Head != head || len(rep.Clusters) != 4 {
		t.Fatalf("base %s head %s, %d clusters: %+v", rep.Base, rep.Head, len(rep.Clusters), rep.Clusters)
	}

	// A values change that touches only the EU clusters.
	_, web := find(t, rep, "eu-1", "web")
	if web == nil || web.Change != preview.Changed || len(web.Objects) != 1 || web.Objects[0].Fields[0].Path != "/data/replicas" ||
		web.Objects[0].Fields[0].Old != "2" || web.Objects[0].Fields[0].New != "3" {
		t.Errorf("eu-1 web: %+v", web)
	}
	for _, name := range []string{"us-1", "edge-7"} {
		if _, web := find(t, rep, name, "web"); web.Change != preview.Unchanged {
			t.Errorf("%s web: %+v", name, web)
		}
	}
	// A change that does not evaluate for regulated clusters: positioned,
	// and new.
	if _, web := find(t, rep, "eu-2", "web"); web.Change != preview.Failed || !web.NewError ||
		!regexp.MustCompile(`fleet\.cue:\d+:\d+`).MatchString(web.Error) {
		t.Errorf("eu-2 web: %+v", web)
	}
	if f := rep.NewFailures(); len(f) != 1 || f[0] != "eu-2/web" {
		t.Errorf("new failures %v", f)
	}
	// A new bundle, a removed one (its objects would be pruned).
	if _, m := find(t, rep, "us-1", "monitoring"); m.Change != preview.Added || len(m.Objects) != 1 || m.Objects[0].Change != preview.Added {
		t.Errorf("us-1 monitoring: %+v", m)
	}
	if _, l := find(t, rep, "us-1", "legacy"); l.Change != preview.Removed || len(l.Objects) != 1 || !strings.Contains(l.Objects[0].Object, "legacy") {
		t.Errorf("us-1 legacy: %+v", l)
	}
	// A Secret change, masked.
	_, creds := find(t, rep, "eu-1", "creds")
	if creds.Change != preview.Changed || len(creds.Objects) != 1 || creds.Objects[0].Fields[0].New != "*** (masked)" {
		t.Errorf("eu-1 creds: %+v", creds)
	}
	// The cluster known only from its status branch, selected by its facts.
	edge, gpu := find(t, rep, "edge-7", "gpu-driver")
	if edge.Known != "status" || !edge.Changed || gpu.Change != preview.Changed {
		t.Errorf("edge-7: %+v, gpu-driver %+v", edge, gpu)
	}
	if _, gpu := find(t, rep, "us-1", "gpu-driver"); gpu != nil {
		t.Errorf("us-1 has no GPU API, got gpu-driver %+v", gpu)
	}
	// A move to another wave.
	if us, _ := find(t, rep, "us-1", ""); us.Wave == nil || us.Wave.From != "rest" || us.Wave.To != "canary" || us.Known != "inventory" {
		t.Errorf("us-1: %+v", us)
	}

	// Every output: no plaintext of the Secret anywhere.
	var text, md, js bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if err := json.NewEncoder(&js).Encode(rep); err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{"text": text.String(), "markdown": md.String(), "json": js.String()} {
		if strings.Contains(out, "token-value") {
			t.Errorf("the %s output shows the Secret's value", name)
		}
	}
	if !strings.HasPrefix(text.String(), "preview "+base[:7]+" → "+head[:7]+": 4 of 4 clusters change; 1 newly fails") {
		t.Errorf("text summary:\n%s", text.String())
	}
	for _, want := range []string{
		"| **the fleet** | 4 | 4 | 0 | 1 |",
		"#### :x: New failures: 1 cluster\n\n**cluster `eu-2`** (region eu-central-1; wave eu): `web` failed (newly)",
		"-fleet.cue:12:27: cluster <cluster>: bundle web: namespace: conflicting values",
		"#### Changes: 6 distinct, on 4 clusters",
		"**4 clusters** (regions ap-south-1, eu-central-1, eu-west-1, us-east-1; waves canary, eu, rest): the same change: `legacy` removed",
		"```diff\n",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
	// The whole comment of this real preview, its commits named by role
	// (their hashes change with each run), kept as a golden file and
	// read as GitHub-flavoured Markdown.
	comment := strings.NewReplacer(base[:7], "<base>", head[:7], "<head>").Replace(md.String())
	golden.Check(t, "testdata/comment-real.md", []byte(comment))
	checkMarkdown(t, "the real preview", md.String())
}

// TestPreviewRendersOnlyWhatChanged: a bundle whose inputs are the same
// at both revisions is not rendered; one render per side for the one
// cluster whose web changed (eu-2's fails before rendering).
func TestPreviewRendersOnlyWhatChanged(t *testing.T) {
	repo, base, head := fleetWithHistory(t)
	rep, err := preview.Run(context.Background(), preview.Options{Dir: repo.Work, Base: base, Head: head, Bundles: []string{"web"}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Renders != 2 {
		t.Errorf("%d renders for web, want 2 (eu-1 at base and at head)", rep.Renders)
	}
	// The same revision twice: nothing changes.
	same, err := preview.Run(context.Background(), preview.Options{Dir: repo.Work, Base: head, Head: head})
	if err != nil {
		t.Fatal(err)
	}
	if same.ChangedClusters() != 0 || same.Renders != 0 || len(same.NewFailures()) != 0 {
		t.Errorf("head against itself: %d changed, %d renders, failures %v", same.ChangedClusters(), same.Renders, same.NewFailures())
	}
	// The work tree (head by default) with an edit not committed.
	gittest.Git(t, repo.Work, "checkout", "-q", base)
	narrowed, err := preview.Run(context.Background(), preview.Options{Dir: repo.Work, Base: base, Clusters: []string{"us-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(narrowed.Clusters) != 1 || narrowed.ChangedClusters() != 0 || narrowed.Head != "" {
		t.Errorf("the work tree at base, us-1 only: %+v", narrowed)
	}
	if _, err := preview.Run(context.Background(), preview.Options{Dir: repo.Work, Base: "no-such-ref"}); err == nil || !strings.Contains(err.Error(), "no-such-ref") {
		t.Errorf("an unknown base: %v", err)
	}
}

// TestMarkdownStaysUnderTheLimit: a change to 300 clusters with big diffs
// is cut to fit a pull-request comment, saying what was left out.
func TestMarkdownStaysUnderTheLimit(t *testing.T) {
	rep := &preview.Report{Base: strings.Repeat("a", 40)}
	for i := range 300 {
		// Each cluster's change is its own: 300 groups of one.
		big := strings.Repeat(fmt.Sprintf("x%d", i), 300)
		rep.Clusters = append(rep.Clusters, preview.Cluster{Name: fmt.Sprintf("c-%03d", i), Changed: true, Bundles: []preview.Bundle{{
			Name: "web", Change: preview.Changed, Objects: []preview.Object{{Object: "v1, Kind=ConfigMap, web/web", Change: preview.Changed,
				Fields: []preview.Field{{Op: "replace", Path: "/data/blob", Old: big, New: big + "y"}}}}}}})
	}
	var md bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	out := md.String()
	if len(out) > preview.MaxMarkdown {
		t.Errorf("%d characters, more than %d", len(out), preview.MaxMarkdown)
	}
	// Every changed cluster is accounted for: shown in a group, or counted
	// among the groups not shown.
	shown := strings.Count(out, "**cluster `c-")
	counted := 0
	if m := regexp.MustCompile(`\*\*(\d+) more distinct changes, on (\d+) clusters\*\*`).FindStringSubmatch(out); m != nil {
		counted = atoi(t, m[2])
	}
	if shown == 0 || shown+counted != 300 {
		t.Errorf("%d groups shown, %d clusters counted apart: want 300 in all", shown, counted)
	}
	if !strings.Contains(out, "_Some details are cut to keep this comment under 60000 characters; every changed cluster is counted above.") {
		t.Errorf("no note of what was cut:\n%s", out[len(out)-500:])
	}
	if !strings.HasPrefix(out, "### Flotilla preview") || !strings.Contains(out, "**300 of 300 clusters change.**") {
		t.Errorf("summary:\n%s", out[:300])
	}
	checkMarkdown(t, "300 distinct changes", out)
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPreviewHostileHead: the head of a pull request is attacker-supplied.
// A manifests folder whose file is a symbolic link to a file outside the
// repository (a canary) fails its bundle at head — newly — and the
// canary's content appears in no output; nothing is written outside the
// preview's own folder.
func TestPreviewHostileHead(t *testing.T) {
	canary := filepath.Join(t.TempDir(), "canary.yaml")
	const secret = "canary-content-must-not-leak"
	if err := os.WriteFile(canary, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: leak}\ndata: {v: "+secret+"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const fleetCUE = `package fleet

clusters: "eu-1": region: "eu-west-1"
bundles: web: {namespace: "web", manifests: path: "m"}
`
	repo := gittest.New(t)
	base := repo.Commit(map[string]string{"fleet.cue": fleetCUE,
		"m/web.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {v: '1'}\n"})
	if err := os.Remove(filepath.Join(repo.Work, "m", "web.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(canary, filepath.Join(repo.Work, "m", "web.yaml")); err != nil {
		t.Fatal(err)
	}
	gittest.Git(t, repo.Work, "add", "-A")
	gittest.Git(t, repo.Work, "commit", "-m", "hostile")
	head := gittest.Git(t, repo.Work, "rev-parse", "HEAD")

	for _, h := range []string{head, ""} { // the commit, and the work tree
		rep, err := preview.Run(context.Background(), preview.Options{Dir: repo.Work, Base: base, Head: h})
		if err != nil {
			t.Fatal(err)
		}
		_, web := find(t, rep, "eu-1", "web")
		if web == nil || web.Change != preview.Failed || !web.NewError || !strings.Contains(web.Error, "outside") {
			t.Errorf("head %q: web %+v", h, web)
		}
		var out bytes.Buffer
		_ = rep.WriteText(&out)
		_ = rep.WriteMarkdown(&out)
		_ = json.NewEncoder(&out).Encode(rep)
		if strings.Contains(out.String(), secret) {
			t.Errorf("head %q: the canary's content reached the preview", h)
		}
	}
}

// TestPreviewSeesFileChanges: a change in a file a bundle reads (a
// manifest, a chart's template, a base a kustomization refers to) changes
// the bundle although its inputs digest stays the same, as does a change
// in one of its values files; a bundle whose
// files did not change is not rendered.
func TestPreviewSeesFileChanges(t *testing.T) {
	const fleetCUE = `package fleet

clusters: "eu-1": region: "eu-west-1"
bundles: plain: {namespace: "web", manifests: path: "m"}
bundles: chart: {namespace: "web", helm: chart: "charts/web"}
bundles: kust: {namespace: "web", kustomize: path: "k/overlay"}
bundles: other: {namespace: "web", manifests: path: "other"}
bundles: valued: {namespace: "web", helm: {chart: "charts/v", valuesFiles: ["vals/v.yaml"]}}
`
	files := map[string]string{
		"fleet.cue":                    fleetCUE,
		"m/cm.yaml":                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\ndata: {v: '1'}\n",
		"other/cm.yaml":                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\ndata: {v: '1'}\n",
		"charts/web/Chart.yaml":        "apiVersion: v2\nname: web\nversion: 0.1.0\n",
		"charts/web/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: chart}\ndata: {v: '1'}\n",
		"k/base/kustomization.yaml":    "resources: [cm.yaml]\n",
		"k/base/cm.yaml":               "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kust}\ndata: {v: '1'}\n",
		"k/overlay/kustomization.yaml": "resources: [../base]\n",
		"charts/v/Chart.yaml":          "apiVersion: v2\nname: v\nversion: 0.1.0\n",
		"charts/v/templates/cm.yaml":   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: valued}\ndata: {v: '{{ .Values.v }}'}\n",
		"vals/v.yaml":                  "v: 1\n",
	}
	repo := gittest.New(t)
	base := repo.Commit(files)
	head := repo.Commit(map[string]string{
		"m/cm.yaml":                    strings.Replace(files["m/cm.yaml"], "'1'", "'2'", 1),
		"charts/web/templates/cm.yaml": strings.Replace(files["charts/web/templates/cm.yaml"], "'1'", "'2'", 1),
		"k/base/cm.yaml":               strings.Replace(files["k/base/cm.yaml"], "'1'", "'2'", 1),
		"vals/v.yaml":                  "v: 2\n",
	})
	rep, err := preview.Run(context.Background(), preview.Options{Dir: repo.Work, Base: base, Head: head})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"plain", "chart", "kust", "valued"} {
		if _, b := find(t, rep, "eu-1", name); b == nil || b.Change != preview.Changed || len(b.Objects) != 1 || b.Objects[0].Fields[0].New != "2" {
			t.Errorf("%s: %+v", name, b)
		}
	}
	if _, b := find(t, rep, "eu-1", "other"); b == nil || b.Change != preview.Unchanged {
		t.Errorf("other: %+v", b)
	}
	if rep.Renders != 8 {
		t.Errorf("%d renders, want 8 (four bundles at both revisions; other not rendered)", rep.Renders)
	}

	// A changed file in a manifests folder is no file a kustomization
	// refers to: only the bundle of that folder is rendered.
	next := repo.Commit(map[string]string{"other/cm.yaml": strings.Replace(files["other/cm.yaml"], "'1'", "'3'", 1)})
	if rep, err = preview.Run(context.Background(), preview.Options{Dir: repo.Work, Base: head, Head: next}); err != nil {
		t.Fatal(err)
	}
	if _, b := find(t, rep, "eu-1", "kust"); b == nil || b.Change != preview.Unchanged {
		t.Errorf("kust, when only other/ changed: %+v", b)
	}
	if _, b := find(t, rep, "eu-1", "other"); b == nil || b.Change != preview.Changed {
		t.Errorf("other: %+v", b)
	}
	if rep.Renders != 2 {
		t.Errorf("%d renders, want 2 (other at both revisions)", rep.Renders)
	}
}

// TestPreviewReportsNewViolations: a change that breaks a policy for some
// clusters is reported on those clusters (positioned, counted as a new
// failure); a violation already at base, moved to another line, is not new.
func TestPreviewReportsNewViolations(t *testing.T) {
	const fleetCUE = `package fleet

clusters: {
	"eu-1": {labels: class: "regulated"}
	"us-1": {labels: class: "standard"}
}
bundles: [string]: namespace: "web"
bundles: web: resources: [{apiVersion: "v1", kind: "Service", metadata: name: "web", spec: type: TYPE}]
bundles: old: resources: [{apiVersion: "v1", kind: "Service", metadata: name: "old", spec: type: "NodePort"}]
policies: baseline: {
	target: clusterSelector: matchLabels: class: "regulated"
	forbid: [{kind: "Service", spec: type: "LoadBalancer" | "NodePort"}]
}
`
	repo := gittest.New(t)
	base := repo.Commit(map[string]string{"fleet.cue": strings.Replace(fleetCUE, "TYPE", `"ClusterIP"`, 1)})
	head := repo.Commit(map[string]string{"fleet.cue": "// moved down a line\n" + strings.Replace(fleetCUE, "TYPE", `"LoadBalancer"`, 1)})
	rep, err := preview.Run(context.Background(), preview.Options{Dir: repo.Work, Base: base, Head: head})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rep.Clusters {
		switch c.Name {
		case "eu-1":
			if len(c.Violations) != 1 || !strings.Contains(c.Violations[0], "bundle web: policies.baseline.forbid[0]") ||
				!strings.Contains(c.Violations[0], "Service web/web matches it (spec.type)") || !regexp.MustCompile(`^fleet\.cue:13:\d+:`).MatchString(c.Violations[0]) {
				t.Errorf("eu-1 violations %q", c.Violations)
			}
		case "us-1":
			if len(c.Violations) != 0 {
				t.Errorf("us-1 violations %q", c.Violations)
			}
		}
	}
	if f := rep.NewFailures(); len(f) != 1 || f[0] != "eu-1" {
		t.Errorf("new failures %v", f)
	}
	var out strings.Builder
	if err := rep.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "breaks a policy (newly):") {
		t.Errorf("text:\n%s", out.String())
	}
}

// TestPreviewChecksPoliciesWhereObjectsChange: with the same policies at
// both revisions, only the clusters whose bundles change are rendered to
// check them (wherever the policies moved in the file); when the policies
// change, every cluster is.
func TestPreviewChecksPoliciesWhereObjectsChange(t *testing.T) {
	const fleetCUE = `package fleet

clusters: {
	"eu-1": {labels: class: "regulated"}
	"eu-2": {labels: class: "regulated"}
	"us-1": {labels: class: "standard"}
}
bundles: [string]: namespace: "web"
bundles: web: {
	values: type: *"ClusterIP" | string
	resources: [{apiVersion: "v1", kind: "Service", metadata: {name: "web", labels: c: cluster.name}, spec: type: values.type}]
	overlays: [{names: ["eu-2"], values: type: TYPE}]
}
bundles: db: resources: [{apiVersion: "v1", kind: "Service", metadata: {name: "db", labels: c: cluster.name}, spec: type: "NodePort"}]
policies: baseline: {
	target: clusterSelector: matchLabels: class: "regulated"
	forbid: [{kind: "Service", spec: type: FORBIDDEN}]
}
`
	write := func(typ, forbidden string) map[string]string {
		src := strings.Replace(strings.Replace(fleetCUE, "TYPE", typ, 1), "FORBIDDEN", forbidden, 1)
		return map[string]string{"fleet.cue": src}
	}
	violations := func(rep *preview.Report) string {
		var out []string
		for _, c := range rep.Clusters {
			for range c.Violations {
				out = append(out, c.Name)
			}
		}
		return strings.Join(out, " ")
	}
	repo := gittest.New(t)
	base := repo.Commit(write(`"ClusterIP"`, `"LoadBalancer"`))
	moved := write(`"LoadBalancer"`, `"LoadBalancer"`)
	moved["fleet.cue"] = "// the policies move down a line\n" + moved["fleet.cue"]
	head := repo.Commit(moved)
	rep, err := preview.Run(context.Background(), preview.Options{Dir: repo.Work, Base: base, Head: head})
	if err != nil {
		t.Fatal(err)
	}
	if got := violations(rep); got != "eu-2" {
		t.Errorf("same policies: new violations on %q, want eu-2", got)
	}
	if rep.Renders != 4 {
		t.Errorf("same policies: %d renders, want 4 (eu-2's two bundles at both revisions; its objects alone changed)", rep.Renders)
	}

	stricter := repo.Commit(write(`"ClusterIP"`, `"LoadBalancer" | "NodePort"`))
	rep, err = preview.Run(context.Background(), preview.Options{Dir: repo.Work, Base: base, Head: stricter})
	if err != nil {
		t.Fatal(err)
	}
	if got := violations(rep); got != "eu-1 eu-2" {
		t.Errorf("stricter policies: new violations on %q, want eu-1 eu-2 (db is a NodePort)", got)
	}
	if rep.Renders != 12 {
		t.Errorf("stricter policies: %d renders, want 12 (every bundle of every cluster at both revisions)", rep.Renders)
	}
}

// TestMarkdownKeepsNamesAsText: a bundle key or cluster name that is not
// a plain name (the fleet chooses bundle keys; the schema refuses such a
// bundle, and preview still lists it as failing) cannot put HTML, links or
// table cells into the pull-request comment.
func TestMarkdownKeepsNamesAsText(t *testing.T) {
	hostile := "x`</b><img src=x onerror=alert(1)>|[a](https://evil.example)\nrow"
	r := &preview.Report{Base: strings.Repeat("a", 40), Head: strings.Repeat("b", 40), Clusters: []preview.Cluster{{
		Name: "eu-1<script>", Changed: true,
		Bundles: []preview.Bundle{{Name: hostile, Change: preview.Failed, Error: "invalid name", NewError: true}},
	}}}
	var b strings.Builder
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	// Outside the fenced diff blocks (their fence is longer than any
	// backtick run inside, so what they hold is shown as text).
	out := regexp.MustCompile("(?s)```+diff\n.*?\n```+\n").ReplaceAllString(b.String(), "")
	for _, bad := range []string{"<img", "<script>", "[a](https", "|[a]"} {
		if strings.Contains(out, bad) {
			t.Errorf("the comment holds %q:\n%s", bad, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "| ") && strings.Count(strings.ReplaceAll(line, `\|`, ""), "|") != 6 {
			t.Errorf("a table row with other than five cells: %s", line)
		}
	}
	checkMarkdown(t, "hostile names", b.String())
}

// TestPreviewReportsBrokenInvariants: a change that takes payments out of
// a region breaks an invariant that held at base: the preview lists it
// first (text and Markdown, checked by goldmark as GFM) and counts it as
// a new failure; a break already there at base is not the change's.
func TestPreviewReportsBrokenInvariants(t *testing.T) {
	const fleetCUE = `package fleet

clusters: {
	"eu-1": {region: "eu-west-1", labels: {env: "prod", pair: "a", role: "active"}}
	"us-1": {region: "us-east-1", labels: {env: "prod", pair: "a", role: "active"}}
}
bundles: payments: {namespace: "pay", target: TARGET, resources: []}
invariants: {
	"two-regions": {bundles: ["payments"], regions: min: 2}
	"one-active": {groupBy: "labels.pair", count: [{clusterSelector: matchLabels: role: "active", max: 1}]}
}
`
	repo := gittest.New(t)
	base := repo.Commit(map[string]string{"fleet.cue": strings.Replace(fleetCUE, "TARGET", `{}`, 1)})
	head := repo.Commit(map[string]string{"fleet.cue": strings.Replace(fleetCUE, "TARGET", `regions: ["eu-*"]`, 1)})
	rep, err := preview.Run(context.Background(), preview.Options{Dir: repo.Work, Base: base, Head: head})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Invariants) != 1 || rep.Invariants[0].Invariant != "two-regions" ||
		!strings.Contains(rep.Invariants[0].Message, "fleet.cue:9:") ||
		!strings.Contains(rep.Invariants[0].Message, "1 cluster in 1 region: eu-west-1 (eu-1), at least 2 required") {
		t.Fatalf("invariants the change breaks: %+v", rep.Invariants)
	}
	if f := rep.NewFailures(); !slices.Contains(f, "invariant two-regions") || slices.Contains(f, "invariant one-active") {
		t.Errorf("new failures %v", f)
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "the change breaks 1 invariant:\n  fleet.cue:9:") {
		t.Errorf("text:\n%s", text.String())
	}
	var md strings.Builder
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	i, j := strings.Index(md.String(), "The change breaks 1 invariant"), strings.Index(md.String(), "two-regions")
	if d := strings.Index(md.String(), "```diff"); i < 0 || j < i || (d >= 0 && d < i) {
		t.Errorf("markdown, the invariant first:\n%s", md.String())
	}
	checkMarkdown(t, "invariants", md.String())
}

// TestPreviewBoundsTheBlastRadius: an invariant's `changes` bound fails a
// commit that changes more prod clusters than it allows (or a larger share
// of a group), naming them; the commit's Flotilla-Override trailer for
// that invariant lets it through.
func TestPreviewBoundsTheBlastRadius(t *testing.T) {
	const fleetCUE = `package fleet

clusters: {
	"prod-1": {labels: env: "prod"}
	"prod-2": {labels: env: "prod"}
	"prod-3": {labels: env: "prod"}
	"dev-1": {labels: env: "dev"}
}
_v: {"prod-1": "1", "prod-2": "1", "prod-3": "1", "dev-1": "1"}
bundles: web: {namespace: "web", resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "web", data: v: _v[cluster.name]}]}
invariants: {
	"prod-blast-radius": {target: clusterSelector: matchLabels: env: "prod", changes: max: 1}
	"half-at-most": {groupBy: "labels.env", changes: maxPercent: 50}
}
`
	repo := gittest.New(t)
	base := repo.Commit(map[string]string{"fleet.cue": fleetCUE})
	wide := strings.NewReplacer(`"prod-1": "1"`, `"prod-1": "2"`, `"prod-2": "1"`, `"prod-2": "2"`).Replace(fleetCUE)
	head := repo.Commit(map[string]string{"fleet.cue": wide})
	rep, err := preview.Run(context.Background(), preview.Options{Dir: repo.Work, Base: base, Head: head})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range rep.Invariants {
		got = append(got, b.Message)
	}
	all := strings.Join(got, "\n")
	if len(got) != 2 || !strings.Contains(all, "invariants.prod-blast-radius.changes: invariant prod-blast-radius breaks: the change touches 2 clusters (prod-1, prod-2), at most 1 allowed") ||
		!strings.Contains(all, "invariant half-at-most breaks in group labels.env=prod: the change touches 2 clusters (prod-1, prod-2), at most 50% of 3 allowed") ||
		!strings.Contains(all, `"Flotilla-Override: prod-blast-radius"`) {
		t.Fatalf("the blast radius of a two-cluster change:\n%s", all)
	}
	if f := rep.NewFailures(); !slices.Contains(f, "invariant prod-blast-radius") {
		t.Errorf("new failures %v", f)
	}
	repo.Commit(map[string]string{"fleet.cue": fleetCUE})
	overridden := repo.CommitMessage(map[string]string{"fleet.cue": wide}, "web: 2 on prod-1 and prod-2\n\nFlotilla-Override: prod-blast-radius\nFlotilla-Override: half-at-most\n")
	rep, err = preview.Run(context.Background(), preview.Options{Dir: repo.Work, Base: overridden + "~1", Head: overridden})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Invariants) != 0 || rep.ChangedClusters() != 2 {
		t.Errorf("with the overrides: %d changed, breaks %+v", rep.ChangedClusters(), rep.Invariants)
	}
}

// TestPreviewFollowsPromotions: an invariant's promotedFrom lets a change
// bring prod a payments digest only when it ran Ready on staging at the
// base revision, as staging's status branch says; a digest that never ran
// there, or one staging runs but not Ready, breaks it.
func TestPreviewFollowsPromotions(t *testing.T) {
	fleetCUE := func(prod string) string {
		return `package fleet

clusters: {"staging-1": {labels: env: "staging"}, "prod-1": {labels: env: "prod"}}
_digest: {staging: "sha256:b", prod: "` + prod + `"}
bundles: payments: {namespace: "pay", values: image: digest: _digest[cluster.labels.env], resources: []}
invariants: "staging-first": {
	bundles: ["payments"]
	target: clusterSelector: matchLabels: env: "prod"
	promotedFrom: {clusterSelector: matchLabels: env: "staging", paths: ["values.image.digest"]}
}
`
	}
	repo := gittest.New(t)
	base := repo.Commit(map[string]string{"fleet.cue": fleetCUE("sha256:a")})
	publish := func(phase apply.Phase) {
		t.Helper()
		r, err := report.New(report.Options{URL: repo.URL})
		if err != nil {
			t.Fatal(err)
		}
		st := &report.Status{Cluster: fleet.Cluster{Name: "staging-1", Labels: map[string]string{"env": "staging"}}, Phase: report.ClusterReady,
			AppliedRevision: base, SeenRevision: base, Bundles: []report.BundleStatus{{Name: "payments", Phase: phase, Revision: base}}}
		if _, err := r.Publish(context.Background(), st, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	breaks := func(head string) []preview.InvariantBreak {
		t.Helper()
		rep, err := preview.Run(context.Background(), preview.Options{Dir: repo.Work, Base: base, Head: head, Status: report.Branches{URL: repo.URL}})
		if err != nil {
			t.Fatal(err)
		}
		return rep.Invariants
	}
	publish(apply.PhaseReady)
	ran := repo.Commit(map[string]string{"fleet.cue": fleetCUE("sha256:b")})
	if b := breaks(ran); len(b) != 0 {
		t.Errorf("promoting the digest staging runs Ready: %+v", b)
	}
	never := repo.Commit(map[string]string{"fleet.cue": fleetCUE("sha256:c")})
	if b := breaks(never); len(b) != 1 || !strings.Contains(b[0].Message,
		`invariants.staging-first.promotedFrom: invariant staging-first breaks for bundle payments: values.image.digest reaches clusters before it ran Ready on env=staging at the base revision: "sha256:c" on prod-1`) {
		t.Errorf("promoting a digest that never ran on staging: %+v", b)
	}
	publish(apply.PhaseProgressing)
	if b := breaks(ran); len(b) != 1 || !slices.Equal(b[0].Clusters, []string{"prod-1"}) {
		t.Errorf("promoting a digest staging runs but not Ready: %+v", b)
	}
}

// TestPreviewChecksRenderedInvariants: a change that makes one prod
// cluster's CRD serve another version breaks a `same` rule over rendered
// objects; the clusters the change leaves alone are rendered too, to
// compare with, and a rendered break already there at base is not the
// change's.
func TestPreviewChecksRenderedInvariants(t *testing.T) {
	const fleetCUE = `package fleet

clusters: {"prod-1": {labels: env: "prod"}, "prod-2": {labels: env: "prod"}}
_crd: {
	#plural: string
	#versions: [...string]
	apiVersion: "apiextensions.k8s.io/v1"
	kind:       "CustomResourceDefinition"
	metadata: name: "\(#plural).example.com"
	spec: {
		group: "example.com"
		names: {kind: "Thing", plural: #plural}
		scope: "Namespaced"
		versions: [for v in #versions {name: v, served: true, storage: v == "v1", schema: openAPIV3Schema: type: "object"}]
	}
}
bundles: crds: resources: [
	_crd & {#plural: "widgets", #versions: [if cluster.name == "prod-2" {WIDGETS}, ["v1"]][0]},
	_crd & {#plural: "gadgets", #versions: [if cluster.name == "prod-2" {["v1", "v2"]}, ["v1"]][0]},
]
invariants: "crds-agree": {
	groupBy: "labels.env"
	same: [{match: kind: "CustomResourceDefinition", field: "spec.versions.*.name"}]
}
`
	repo := gittest.New(t)
	base := repo.Commit(map[string]string{"fleet.cue": strings.Replace(fleetCUE, "WIDGETS", `["v1"]`, 1)})
	head := repo.Commit(map[string]string{"fleet.cue": strings.Replace(fleetCUE, "WIDGETS", `["v1", "v2"]`, 1)})
	rep, err := preview.Run(context.Background(), preview.Options{Dir: repo.Work, Base: base, Head: head})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Invariants) != 1 || !strings.Contains(rep.Invariants[0].Message,
		`invariants.crds-agree.same[0]: invariant crds-agree breaks in group labels.env=prod: CustomResourceDefinition widgets.example.com: spec.versions.*.name differs: ["v1","v2"] on prod-2; ["v1"] on prod-1`) {
		t.Fatalf("invariants the change breaks: %+v", rep.Invariants)
	}
	if f := rep.NewFailures(); !slices.Contains(f, "invariant crds-agree") {
		t.Errorf("new failures %v", f)
	}
	// Narrowed to a cluster, the rendered rules are not checked either.
	rep, err = preview.Run(context.Background(), preview.Options{Dir: repo.Work, Base: base, Head: head, Clusters: []string{"prod-2"}})
	if err != nil || len(rep.Invariants) != 0 {
		t.Fatalf("narrowed: %v %+v", err, rep.Invariants)
	}
}
