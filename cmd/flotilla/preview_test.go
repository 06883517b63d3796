package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
)

// TestPreviewCommand: exit statuses as diff(1)'s (0 nothing changes, 1
// something does, 2 trouble, a new failure included), the JSON tools rely
// on, and the work tree as the default head.
func TestPreviewCommand(t *testing.T) {
	const fleetCUE = `package fleet

clusters: {"eu-1": {region: "eu-west-1"}, "us-1": {region: "us-east-1"}}
_v: {"eu-west-1": "1", "us-east-1": "1"}
bundles: web: {namespace: "web", resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "web", data: v: _v[cluster.region]}]}
`
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
