package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
)

// promoterMetadata is GitOps Promoter's HydratorMetadata (api/v1alpha1,
// changetransferpolicy_types.go and common_types.go at v0.36.0), which it
// decodes from hydrator.metadata at the tip of each environment's branches.
type promoterMetadata struct {
	RepoURL    string      `json:"repoURL,omitempty"`
	DrySha     string      `json:"drySha,omitempty"`
	Author     string      `json:"author,omitempty"`
	Date       metav1.Time `json:"date,omitempty"`
	Subject    string      `json:"subject,omitempty"`
	Body       string      `json:"body,omitempty"`
	References []struct {
		Commit *struct {
			Author  string       `json:"author,omitempty"`
			Date    *metav1.Time `json:"date,omitempty"`
			Subject string       `json:"subject,omitempty"`
			Body    string       `json:"body,omitempty"`
			Sha     string       `json:"sha,omitempty"`
			RepoURL string       `json:"repoURL,omitempty"`
		} `json:"commit,omitempty"`
	} `json:"references,omitempty"`
}

// promoterDrySHA is the pattern Promoter's CRDs hold a dry SHA to.
var promoterDrySHA = regexp.MustCompile(`^([a-f0-9]{40}|[a-f0-9]{64})$`)

const promoterFleet = `package fleet

clusters: {
	"canary-1": {region: "eu-west-1", labels: {}}
	"eu-1":     {region: "eu-west-1", labels: {}}
	"us-1":     {region: "us-east-1", labels: {}}
}
rollout: waves: [{name: "canary", names: ["canary-*"]}, {name: "eu", regions: ["eu-*"]}, {name: "rest"}]
bundles: web: {namespace: "web", resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "web", data: {v: "1"}}]}
`

// TestPromoterReadsABranchPerWave runs GitOps Promoter's git commands
// (internal/git/git.go at v0.36.0: its clone, GetBranchShas, FetchNotes,
// GetHydratorNote, HasConflict) on what `hydrate --branch-per-wave
// --push` wrote: each wave is an environment whose proposed branch
// <active>-next holds only the wave's clusters and a hydrator.metadata
// naming the source commit; a change for one wave moves only its branch
// and merges into the active branch without conflict; the other waves'
// branches stay, their notes naming the new source commit (Promoter's
// no-op case).
func TestPromoterReadsABranchPerWave(t *testing.T) {
	repo := gittest.New(t)
	v1 := repo.Commit(map[string]string{"fleet.cue": promoterFleet})
	url := repo.ServeHTTPOpen()
	hydrate := func() string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), []string{"hydrate", repo.Work, "--branch", "env", "--branch-per-wave", "--push"}, &stdout, &stderr); code != exitOK {
			t.Fatalf("hydrate: exit %d\n%s\n%s", code, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	out := hydrate()
	for _, want := range []string{"wave canary: env-canary-next (GitOps Promoter promotes it to env-canary): committed", "wave rest: env-rest-next"} {
		if !strings.Contains(out, want) {
			t.Errorf("hydrate's output lacks %q:\n%s", want, out)
		}
	}

	work := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), "git", args...)
		cmd.Dir = work
		cmd.Env = []string{"GIT_TERMINAL_PROMPT=0", "PATH=/usr/bin:/bin:/usr/local/bin", "HOME=" + work}
		data, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, data)
		}
		return strings.TrimSpace(string(data))
	}
	git("clone", "--verbose", "--progress", "--filter=blob:none", url, ".")
	// GetBranchShas: the proposed branch's hydrated commit and dry SHA.
	branchShas := func(branch string) (hydrated string, meta promoterMetadata) {
		t.Helper()
		remote, _, _ := strings.Cut(git("ls-remote", "--heads", url, branch), "\t")
		git("fetch", "origin", branch)
		hydrated = git("rev-parse", "origin/"+branch)
		if hydrated != remote || git("ls-tree", "origin/"+branch, ":(literal)hydrator.metadata") == "" {
			t.Fatalf("%s: ls-remote %s, rev-parse %s, or no hydrator.metadata", branch, remote, hydrated)
		}
		if err := json.Unmarshal([]byte(git("show", "origin/"+branch+":hydrator.metadata")), &meta); err != nil {
			t.Fatalf("%s: Promoter cannot decode hydrator.metadata: %v", branch, err)
		}
		if !promoterDrySHA.MatchString(meta.DrySha) || meta.Date.IsZero() || meta.RepoURL == "" {
			t.Errorf("%s: %+v", branch, meta)
		}
		return hydrated, meta
	}
	note := func(sha string) string {
		t.Helper()
		git("fetch", "origin", "+refs/notes/hydrator.metadata:refs/notes/hydrator.metadata")
		var n struct {
			DrySha string `json:"drySha"`
		}
		if err := json.Unmarshal([]byte(git("notes", "--ref=refs/notes/hydrator.metadata", "show", sha)), &n); err != nil {
			t.Fatal(err)
		}
		return n.DrySha
	}
	clusters := map[string]string{"canary": "canary-1", "eu": "eu-1", "rest": "us-1"}
	first := map[string]string{}
	for wave, cluster := range clusters {
		branch := "env-" + wave + "-next"
		hydrated, meta := branchShas(branch)
		first[wave] = hydrated
		if meta.DrySha != v1 || note(hydrated) != v1 {
			t.Errorf("%s: dry SHA %s, note %s, want %s", branch, meta.DrySha, note(hydrated), v1)
		}
		files := git("ls-tree", "-r", "--name-only", "origin/"+branch)
		for _, other := range clusters {
			if strings.Contains(files, "clusters/"+other+"/") != (other == cluster) {
				t.Errorf("%s holds clusters other than %s:\n%s", branch, cluster, files)
			}
		}
		// The environment's active branch, made once from the first
		// proposal (the platform team's setup).
		git("push", "origin", "origin/"+branch+":refs/heads/env-"+wave)
	}

	// A change for the rest wave alone.
	v2 := repo.Commit(map[string]string{"fleet.cue": strings.Replace(promoterFleet, `data: {v: "1"}`, `data: {v: "1", if cluster.region == "us-east-1" {extra: "2"}}`, 1)})
	hydrate()
	hydrated, meta := branchShas("env-rest-next")
	if hydrated == first["rest"] || meta.DrySha != v2 {
		t.Errorf("env-rest-next: %s at dry SHA %s, want a new commit at %s", hydrated, meta.DrySha, v2)
	}
	git("fetch", "origin", "env-rest")
	if merged := git("merge-tree", "--write-tree", "origin/env-rest", "origin/env-rest-next"); strings.Contains(merged, "CONFLICT") {
		t.Errorf("Promoter's conflict check: %s", merged)
	}
	// canary and eu did not change: same commit, same dry SHA in the file,
	// the note names v2 — what Promoter reads as a no-op.
	for _, wave := range []string{"canary", "eu"} {
		hydrated, meta := branchShas("env-" + wave + "-next")
		if hydrated != first[wave] || meta.DrySha != v1 || note(hydrated) != v2 {
			t.Errorf("env-%s-next: %s (was %s), file dry SHA %s, note %s; want unchanged, %s, note %s", wave, hydrated, first[wave], meta.DrySha, note(hydrated), v1, v2)
		}
	}
}
