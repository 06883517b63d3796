package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
)

// TestPreviewCommand: exit statuses as diff(1)'s (0 nothing changes, 1
// something does, 2 trouble, a new failure included), the JSON tools rely
// on, and the work tree as the default head.
// twoRegionFleet is a fleet of two clusters whose bundle web holds a value
// per region: a change of eu-west-1's changes eu-1 only.
const twoRegionFleet = `package fleet

clusters: {"eu-1": {region: "eu-west-1"}, "us-1": {region: "us-east-1"}}
_v: {"eu-west-1": "1", "us-east-1": "1"}
bundles: web: {namespace: "web", resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "web", data: v: _v[cluster.region]}]}
`

func TestPreviewCommand(t *testing.T) {
	const fleetCUE = twoRegionFleet
	repo := gittest.New(t)
	base := repo.Commit(map[string]string{"fleet.cue": fleetCUE})
	changed := repo.Commit(map[string]string{"fleet.cue": strings.Replace(fleetCUE, `"eu-west-1": "1"`, `"eu-west-1": "2"`, 1)})
	broken := repo.Commit(map[string]string{"fleet.cue": fleetCUE + `
bundles: web: namespace: 5
`})
	previewRun := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), append([]string{"preview", repo.Work}, args...), &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}

	if code, out, errOut := previewRun("--base", base, "--head", base); code != exitOK || !strings.Contains(out, "0 of 2 clusters change") {
		t.Errorf("no change: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut := previewRun("--base", base, "--head", changed, "-o", "json")
	if code != exitPreviewChanges {
		t.Errorf("a change: exit %d\n%s", code, errOut)
	}
	var doc struct {
		Clusters []struct {
			Name    string `json:"name"`
			Changed bool   `json:"changed"`
			Bundles []struct {
				Name   string `json:"name"`
				Change string `json:"change"`
			} `json:"bundles"`
		} `json:"clusters"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(doc.Clusters) != 2 || doc.Clusters[0].Name != "eu-1" || !doc.Clusters[0].Changed || doc.Clusters[0].Bundles[0].Change != "changed" ||
		doc.Clusters[1].Changed || doc.Clusters[1].Bundles[0].Change != "unchanged" {
		t.Errorf("json: %s", out)
	}
	if code, _, errOut := previewRun("--base", base, "--head", broken); code != exitPreviewTrouble || !strings.Contains(errOut, "the change makes the fleet fail: eu-1/web, us-1/web") {
		t.Errorf("a new failure: exit %d, %s", code, errOut)
	}
	if code, _, errOut := previewRun("--base", "nope"); code != exitPreviewTrouble || !strings.Contains(errOut, `revision "nope"`) {
		t.Errorf("an unknown base: exit %d, %s", code, errOut)
	}
	if code, _, errOut := previewRun(); code != exitPreviewTrouble || !strings.Contains(errOut, "--base is required") {
		t.Errorf("no base: exit %d, %s", code, errOut)
	}
	// The work tree is the default head (at the broken commit now).
	if code, out, _ := previewRun("--base", broken, "-o", "markdown"); code != exitOK || !strings.HasPrefix(out, "### Flotilla preview") {
		t.Errorf("the work tree against its own commit: exit %d\n%s", code, out)
	}
}

// TestPreviewWhereUsersRunIt: preview compares what a commit would hold —
// files Git ignores in the work tree (a built binary) change nothing and
// render nothing — and works from a subfolder of the fleet and inside a
// `git worktree`, never naming its temporary folders.
func TestPreviewWhereUsersRunIt(t *testing.T) {
	repo := gittest.New(t)
	base := repo.Commit(map[string]string{
		"fleet.cue": `package fleet

clusters: "eu-1": {}
bundles: app: {namespace: "app", kustomize: path: "app"}
`,
		".gitignore":             "bin/\n",
		"app/kustomization.yaml": "resources: [cm.yaml]\n",
		"app/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n",
	})
	writeTestFile(t, filepath.Join(repo.Work, "bin/flotilla"), "a binary\n")
	previewIn := func(dir string, args ...string) (int, string) {
		t.Helper()
		t.Chdir(dir)
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), append([]string{"preview"}, args...), &stdout, &stderr)
		out := stdout.String() + stderr.String()
		if strings.Contains(out, os.TempDir()) || strings.Contains(out, "flotilla-snapshot-") {
			t.Errorf("preview names a temporary folder:\n%s", out)
		}
		return code, out
	}
	if code, out := previewIn(repo.Work, "--base", base); code != exitOK || !strings.Contains(out, "rendering 0 bundles") || !strings.Contains(out, "0 of 1 cluster change") {
		t.Errorf("an ignored file: exit %d\n%s", code, out)
	}
	if code, out := previewIn(filepath.Join(repo.Work, "app"), "--base", base); code != exitOK || !strings.Contains(out, "0 of 1 cluster change") {
		t.Errorf("from a subfolder: exit %d\n%s", code, out)
	}
	// A file the commit would hold does count.
	writeTestFile(t, filepath.Join(repo.Work, "app/cm.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata: {a: b}\n")
	if code, out := previewIn(repo.Work, "--base", base); code != exitPreviewChanges || !strings.Contains(out, "1 of 1 cluster changes") {
		t.Errorf("a changed file: exit %d\n%s", code, out)
	}

	wt := filepath.Join(t.TempDir(), "wt")
	if out, err := exec.Command("git", "-C", repo.Work, "worktree", "add", "-q", wt, base).CombinedOutput(); err != nil {
		t.Fatalf("git worktree add: %v\n%s", err, out)
	}
	if code, out := previewIn(filepath.Join(wt, "app"), "--base", base); code != exitOK || !strings.Contains(out, "0 of 1 cluster change") {
		t.Errorf("in a git worktree: exit %d\n%s", code, out)
	}
	if code, out := previewIn(wt, "--base", base, "--path", "nope"); code != exitPreviewTrouble || !strings.Contains(out, `fleet path "nope" is not a folder`) {
		t.Errorf("a fleet path that is not there: exit %d\n%s", code, out)
	}
}
