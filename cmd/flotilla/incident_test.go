package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// cli runs flotilla with args; it returns the exit code, stdout and stderr.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestRolloutControls: `rollout pause|resume|hold|release` write commits
// authored by who acts on the approvals branch, which `flotilla status`
// shows first (text and JSON); a second resume or release says there was
// nothing to end; bad input is refused before anything is written.
func TestRolloutControls(t *testing.T) {
	repo := gittest.New(t)
	rev, old := strings.Repeat("3f", 20), strings.Repeat("0a", 20)
	publishRollout(t, repo, rev, old)
	ada := "Ada <ada@example.com>"

	if code, out, errOut := cli(t, "rollout", "pause", "--repo", repo.Bare, "--by", ada, "--reason", "INC-7: checkout errors"); code != exitOK ||
		!strings.Contains(out, "paused the rollout (by "+ada+")") {
		t.Fatalf("pause: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut := cli(t, "status", "--repo", repo.Bare)
	if code != exitOK || !strings.HasPrefix(out, "PAUSED by "+ada) || !strings.Contains(strings.SplitN(out, "\n", 2)[0], "INC-7: checkout errors") {
		t.Fatalf("status while paused: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := cli(t, "rollout", "hold", "--repo", repo.Bare, "--by", ada, "--cluster", "us-1", "--until", "2h", "--reason", "migration"); code != exitOK ||
		!strings.Contains(out, "holding cluster us-1") {
		t.Fatalf("hold: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = cli(t, "status", "--repo", repo.Bare, "-o", "json")
	var doc struct {
		Summary struct {
			Controls *report.Controls `json:"controls"`
		} `json:"summary"`
	}
	if err := json.Unmarshal([]byte(out), &doc); code != exitOK || err != nil {
		t.Fatalf("status -o json: exit %d, %v\n%s", code, err, out)
	}
	if c := doc.Summary.Controls; c == nil || c.Pause == nil || c.Pause.By != ada || len(c.Holds) != 1 || c.Holds[0].Cluster != "us-1" ||
		c.Holds[0].Until == nil || time.Until(*c.Holds[0].Until) < time.Hour {
		t.Errorf("the controls in status -o json: %+v", doc.Summary.Controls)
	}

	for _, step := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"rollout", "resume"}, exitOK, "resumed the rollout"},
		{[]string{"rollout", "resume"}, exitOK, "the rollout was not paused"},
		{[]string{"rollout", "release", "--cluster", "us-1"}, exitOK, "released cluster us-1"},
		{[]string{"rollout", "release", "--cluster", "us-1"}, exitFailed, "cluster us-1 is not held"},
		{[]string{"rollout", "hold"}, exitFailed, "--cluster NAME, --bundle NAME, or both"},
		{[]string{"rollout", "hold", "--cluster", "us-1", "--until", "2020-01-01T00:00:00Z"}, exitFailed, "is in the past"},
		{[]string{"rollout", "hold", "--cluster", "us-1", "--until", "tomorrow"}, exitFailed, "give a time as"},
		{[]string{"rollout", "hold", "--cluster", "../us-1"}, exitFailed, "../us-1"},
	} {
		code, out, errOut := cli(t, append(step.args, "--repo", repo.Bare, "--by", ada)...)
		if code != step.code || !strings.Contains(out+errOut, step.says) {
			t.Errorf("%v: exit %d, want %d saying %q\n%s%s", step.args, code, step.code, step.says, out, errOut)
		}
	}
	if code, out, _ := cli(t, "status", "--repo", repo.Bare); code != exitOK || strings.Contains(out, "PAUSED") || strings.Contains(out, "HELD") {
		t.Errorf("status once resumed and released: exit %d\n%s", code, out)
	}
	log := gittest.Git(t, repo.Bare, "log", "--format=%an <%ae>|%s", report.DefaultApprovalsBranch)
	for _, want := range []string{ada + "|rollout: pause", ada + "|rollout: hold cluster us-1", ada + "|rollout: resume", ada + "|rollout: release cluster us-1"} {
		if !strings.Contains(log, want) {
			t.Errorf("the approvals branch's history lacks %q:\n%s", want, log)
		}
	}
	if n := strings.Count(log, "\n") + 1; n != 4 {
		t.Errorf("%d commits on the approvals branch, want 4 (nothing written by a refused or empty command):\n%s", n, log)
	}
}

// TestRolloutRevert: `rollout revert` writes a commit restoring the files
// the revision changed, with the Flotilla-Revert trailer, prints the
// preview of it (the cluster it changes back), pushes a new branch with
// --branch --push, and refuses a file changed again since, naming it.
func TestRolloutRevert(t *testing.T) {
	const fleetCUE = twoRegionFleet
	repo := gittest.New(t)
	gittest.Git(t, repo.Work, "config", "user.name", "Ada")
	gittest.Git(t, repo.Work, "config", "user.email", "ada@example.com")
	first := repo.Commit(map[string]string{"fleet.cue": fleetCUE})
	bad := repo.Commit(map[string]string{"fleet.cue": strings.Replace(fleetCUE, `"eu-west-1": "1"`, `"eu-west-1": "2"`, 1), "notes.md": "eu gets 2\n"})
	repo.Commit(map[string]string{"README.md": "the fleet\n"})
	ada := "Ada <ada@example.com>"

	code, out, errOut := cli(t, "rollout", "revert", bad[:8], repo.Work, "--by", ada, "--branch", "revert-eu", "--push")
	if code != exitOK {
		t.Fatalf("revert: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"on revert-eu: Revert \"change\"", "restores fleet.cue, notes.md", "pushed revert-eu to origin", "1 of 2 clusters change", "eu-1"} {
		if !strings.Contains(out, want) {
			t.Errorf("revert's output lacks %q:\n%s", want, out)
		}
	}
	msg := gittest.Git(t, repo.Bare, "log", "-1", "--format=%an|%B", "revert-eu")
	if !strings.HasPrefix(msg, "Ada|Revert \"change\"") || !strings.Contains(msg, "Flotilla-Revert: "+bad) {
		t.Errorf("the revert's commit: %s", msg)
	}
	if got := gittest.Git(t, repo.Work, "show", "revert-eu:fleet.cue"); strings.TrimSpace(got) != strings.TrimSpace(fleetCUE) {
		t.Errorf("fleet.cue after the revert:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(repo.Work, "notes.md")); !os.IsNotExist(err) {
		t.Errorf("notes.md, added by the reverted commit, is still there: %v", err)
	}
	if got := gittest.Git(t, repo.Work, "show", "revert-eu:README.md"); strings.TrimSpace(got) != "the fleet" {
		t.Errorf("a later commit's file was touched: %q", got)
	}
	if main := gittest.Git(t, repo.Bare, "rev-parse", "main"); main == gittest.Git(t, repo.Bare, "rev-parse", "revert-eu") {
		t.Errorf("--branch moved main")
	}

	// A file changed again since is not overwritten; the first commit has
	// nothing before it.
	gittest.Git(t, repo.Work, "checkout", "-q", "main")
	repo.Commit(map[string]string{"fleet.cue": fleetCUE + "\n// again\n"})
	if code, out, errOut := cli(t, "rollout", "revert", bad, repo.Work, "--by", ada); code == exitOK || !strings.Contains(errOut, "fleet.cue changed again since "+bad[:7]) {
		t.Errorf("a file changed since: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := cli(t, "rollout", "revert", first, repo.Work, "--by", ada); code == exitOK || !strings.Contains(errOut, "first commit") {
		t.Errorf("the first commit: exit %d\n%s", code, errOut)
	}
}

// TestRolloutRevertWritesNothingThroughALink: a fleet repository is
// attacker-supplied. A commit deleted dir/file; a later one made dir a
// link to a folder outside the repository. Reverting the deletion would
// write dir/file through the link: it is refused before anything is
// written, the canary folder outside stays empty, and nothing is staged.
func TestRolloutRevertWritesNothingThroughALink(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": "package fleet\n", "dir/file": "old\n", "a.cue": "package fleet\n"})
	gittest.Git(t, repo.Work, "rm", "-q", "dir/file", "a.cue")
	gittest.Git(t, repo.Work, "commit", "-qm", "delete dir/file and a.cue")
	deletion := gittest.Git(t, repo.Work, "rev-parse", "HEAD")
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(repo.Work, "dir")); err != nil {
		t.Fatal(err)
	}
	repo.Commit(map[string]string{})
	code, out, errOut := cli(t, "rollout", "revert", deletion, repo.Work, "--by", "Ada <ada@example.com>")
	if code == exitOK || !strings.Contains(errOut, "dir/file: dir is a symbolic link at HEAD") {
		t.Errorf("a revert through a link: exit %d\n%s%s", code, out, errOut)
	}
	if entries, err := os.ReadDir(outside); err != nil || len(entries) != 0 {
		t.Fatalf("the folder outside the repository got %v (%v)", entries, err)
	}
	if st := gittest.Git(t, repo.Work, "status", "--porcelain"); st != "" {
		t.Errorf("the refused revert left changes:\n%s", st)
	}
}

// TestRolloutExplain: `rollout explain` replays a cluster's reports about a
// revision and the approvals branch meanwhile: it waited for an approval,
// Ada approved, it applied and became Ready.
func TestRolloutExplain(t *testing.T) {
	repo := gittest.New(t)
	rev, old := strings.Repeat("3f", 20), strings.Repeat("0a", 20)
	waves := []string{"canary", "eu"}
	reporter, err := report.New(report.Options{URL: repo.URL})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	publish := func(st *report.Status) {
		t.Helper()
		st.Cluster, st.Wave = fleet.Cluster{Name: "eu-1", Region: "eu-west-1"}, "eu"
		at = at.Add(time.Minute)
		if _, err := reporter.Publish(context.Background(), st, at); err != nil {
			t.Fatal(err)
		}
	}
	publish(&report.Status{Phase: report.ClusterReady, AppliedRevision: old, SeenRevision: old})
	publish(&report.Status{Phase: report.ClusterWaiting, AppliedRevision: old, SeenRevision: rev, Rollout: &report.RolloutStatus{
		Revision: rev, Waves: waves, State: report.RolloutWaiting, WaitingFor: []string{"canary-1"}, Message: "wave eu waits for the earlier waves: canary-1"}})
	publish(&report.Status{Phase: report.ClusterWaiting, AppliedRevision: old, SeenRevision: rev, Rollout: &report.RolloutStatus{
		Revision: rev, Waves: waves, State: report.RolloutWaiting, AwaitsApproval: true, Message: "wave eu waits for an approval of 3f3f3f3"}})
	approvedAt := at.Add(30 * time.Second)
	if _, err := report.Approve(context.Background(), report.ApproveOptions{URL: repo.URL}, report.Approval{
		Revision: rev, Wave: "eu", By: "Ada <ada@example.com>", At: approvedAt, Message: "canary healthy"}); err != nil {
		t.Fatal(err)
	}
	publish(&report.Status{Phase: report.ClusterReady, AppliedRevision: rev, SeenRevision: rev, Rollout: &report.RolloutStatus{
		Revision: rev, Waves: waves, State: report.RolloutApplied}})

	code, out, errOut := cli(t, "rollout", "explain", "--repo", repo.Bare, "--cluster", "eu-1", "--revision", rev[:7])
	if code != exitOK {
		t.Fatalf("explain: exit %d\n%s%s", code, out, errOut)
	}
	want := []string{"cluster eu-1 and revision 3f3f3f3 (wave eu):", "saw 3f3f3f3", "waits for the earlier waves: canary-1",
		"awaits an approval", "wave eu approved by Ada <ada@example.com>: canary healthy", "applied; Ready",
		"in short: eu-1 applied 3f3f3f3 and is Ready at it"}
	last := -1
	for _, w := range want {
		i := strings.Index(out, w)
		if i <= last {
			t.Errorf("explain's output lacks %q after what came before:\n%s", w, out)
			continue
		}
		last = i
	}
	if code, _, errOut := cli(t, "rollout", "explain", "--repo", repo.Bare, "--cluster", "eu-1", "--revision", "abcdef1"); code == exitOK ||
		!strings.Contains(errOut, "not one any cluster reports") {
		t.Errorf("an unknown revision: exit %d\n%s", code, errOut)
	}
}

// TestStatusShowsBrokenInvariants: `flotilla status` checks the fleet's
// invariants (at the branch's tip) over what runs now: with us-1 silent
// for two hours, payments runs Ready in one region only, and status says
// so first (text and JSON); with us-1 back, nothing is broken.
func TestStatusShowsBrokenInvariants(t *testing.T) {
	repo := gittest.New(t)
	rev := repo.Commit(map[string]string{"fleet.cue": `package fleet

clusters: {"eu-1": {region: "eu-west-1"}, "us-1": {region: "us-east-1"}}
bundles: payments: {namespace: "pay", resources: []}
invariants: "two-regions": {bundles: ["payments"], regions: min: 2}
`})
	publish := func(name, region string, at time.Time) {
		t.Helper()
		r, err := report.New(report.Options{URL: repo.URL})
		if err != nil {
			t.Fatal(err)
		}
		st := &report.Status{Cluster: fleet.Cluster{Name: name, Region: region}, Phase: report.ClusterReady, AppliedRevision: rev, SeenRevision: rev,
			Bundles: []report.BundleStatus{{Name: "payments", Phase: "Ready", Revision: rev}}}
		if _, err := r.Publish(context.Background(), st, at); err != nil {
			t.Fatal(err)
		}
	}
	publish("eu-1", "eu-west-1", time.Now())
	publish("us-1", "us-east-1", time.Now().Add(-2*time.Hour))
	code, out, errOut := cli(t, "status", "--repo", repo.Bare)
	if code != exitOK || !strings.HasPrefix(out, "BROKEN fleet.cue:5:") ||
		!strings.Contains(out, "invariant two-regions breaks for bundle payments: 1 cluster in 1 region: eu-west-1 (eu-1), at least 2 required") {
		t.Fatalf("status with us-1 silent: exit %d\n%s%s", code, out, errOut)
	}
	_, out, _ = cli(t, "status", "--repo", repo.Bare, "-o", "json")
	var doc struct {
		Summary struct {
			Invariants []string `json:"invariants"`
		} `json:"summary"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Summary.Invariants) != 1 {
		t.Errorf("status -o json: %v\n%s", err, out)
	}
	publish("us-1", "us-east-1", time.Now())
	if code, out, errOut := cli(t, "status", "--repo", repo.Bare); code != exitOK || strings.Contains(out, "BROKEN") || errOut != "" && strings.Contains(errOut, "invariants") {
		t.Errorf("status with both clusters: exit %d\n%s%s", code, out, errOut)
	}
}

// TestStatusChecksADRPairsVersions: withinOneRevisionOf, over what the
// clusters run and the fleet's history fetched from an HTTP Git server.
// The active runs payments' third version; a standby on the second
// (at a later commit that did not change payments) is within one; a
// standby on the first is more than one behind, and an active left on
// the first while its standby runs the third is more than one behind
// its standby (the standby is ahead).
func TestStatusChecksADRPairsVersions(t *testing.T) {
	repo := gittest.New(t)
	fleetCUE := func(tag string) map[string]string {
		return map[string]string{"fleet.cue": `package fleet

clusters: {
	"eu-a": {region: "eu-west-1", labels: {pair: "eu", role: "active"}}
	"eu-s": {region: "eu-central-1", labels: {pair: "eu", role: "standby"}}
}
bundles: payments: {namespace: "pay", values: tag: "` + tag + `", resources: []}
invariants: "dr-within-one": {
	groupBy: "labels.pair"
	bundles: ["payments"]
	withinOneRevisionOf: clusterSelector: matchLabels: role: "active"
}
`}
	}
	c1 := repo.Commit(fleetCUE("1"))
	c2 := repo.Commit(fleetCUE("2"))
	c3 := repo.Commit(map[string]string{"README.md": "an unrelated change\n"})
	c4 := repo.Commit(fleetCUE("3"))
	url := repo.ServeHTTP("flotilla", "read-token")
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("read-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	publish := func(name, role, rev, since, previous string) {
		t.Helper()
		r, err := report.New(report.Options{URL: repo.URL})
		if err != nil {
			t.Fatal(err)
		}
		st := &report.Status{Cluster: fleet.Cluster{Name: name, Labels: map[string]string{"pair": "eu", "role": role}}, Phase: report.ClusterReady,
			AppliedRevision: rev, SeenRevision: rev,
			Bundles: []report.BundleStatus{{Name: "payments", Phase: "Ready", Revision: rev, ContentSince: since, PreviousContentSince: previous}}}
		if _, err := r.Publish(context.Background(), st, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	status := func() (int, string, string) {
		return cli(t, "status", "--repo", url, "--username", "flotilla", "--password-file", token)
	}
	publish("eu-a", "active", c4, c4, c2)
	publish("eu-s", "standby", c3, c2, c1)
	if code, out, errOut := status(); code != exitOK || strings.Contains(out, "BROKEN") || strings.Contains(errOut, "not checked") {
		t.Fatalf("a standby one version behind: exit %d\n%s%s", code, out, errOut)
	}
	publish("eu-s", "standby", c1, c1, "")
	code, out, errOut := status()
	if want := "invariant dr-within-one breaks for bundle payments in group labels.pair=eu: eu-s runs it at " + c1[:7] +
		", more than one version behind eu-a (role=active) at " + c4[:7]; code != exitOK || !strings.HasPrefix(out, "BROKEN fleet.cue:") || !strings.Contains(out, want) {
		t.Fatalf("a standby two versions behind: exit %d, want %q\n%s%s", code, want, out, errOut)
	}
	publish("eu-a", "active", c1, c1, "")
	publish("eu-s", "standby", c4, c4, c2)
	if _, out, errOut := status(); !strings.Contains(out, "eu-s runs it at "+c4[:7]+", more than one version ahead of eu-a (role=active) at "+c1[:7]) {
		t.Fatalf("a standby two versions ahead:\n%s%s", out, errOut)
	}
}

// TestStatusWithAStatusRepository: the status branches in a repository of
// their own, the approvals branch in the fleet repository (where `rollout
// pause --repo` writes it). `status --repo STATUS --fleet-repo FLEET`
// shows the fleet's tip, the pause and the fleet's invariants; without
// --fleet-repo it finds neither the tip nor the pause, and says nothing
// false. `rollout explain --fleet-repo` tells the pause too.
func TestStatusWithAStatusRepository(t *testing.T) {
	fleetRepo := gittest.New(t)
	rev := fleetRepo.Commit(map[string]string{"fleet.cue": `package fleet

clusters: {"eu-1": {region: "eu-west-1"}, "us-1": {region: "us-east-1"}}
bundles: payments: {namespace: "pay", resources: []}
invariants: "two-regions": {bundles: ["payments"], regions: min: 2}
`})
	statusRepo := gittest.New(t)
	r, err := report.New(report.Options{URL: statusRepo.URL})
	if err != nil {
		t.Fatal(err)
	}
	ada := "Ada <ada@example.com>"
	if code, out, errOut := cli(t, "rollout", "pause", "--repo", fleetRepo.Bare, "--by", ada, "--reason", "INC-9"); code != exitOK {
		t.Fatalf("pause: exit %d\n%s%s", code, out, errOut)
	}
	// The cluster reports after the pause (a pause's time is to the
	// second): explain tells the pause in effect when it saw the revision.
	st := &report.Status{Cluster: fleet.Cluster{Name: "eu-1", Region: "eu-west-1"}, Phase: report.ClusterReady, AppliedRevision: rev, SeenRevision: rev,
		Bundles: []report.BundleStatus{{Name: "payments", Phase: "Ready", Revision: rev}}}
	if _, err := r.Publish(t.Context(), st, time.Now().Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := cli(t, "status", "--repo", statusRepo.Bare, "--fleet-repo", fleetRepo.Bare, "-o", "json")
	var doc struct {
		Tip     string `json:"tip"`
		Summary struct {
			Invariants []string `json:"invariants"`
			Controls   struct {
				Pause *report.Control `json:"pause"`
			} `json:"controls"`
		} `json:"summary"`
	}
	if err := json.Unmarshal([]byte(out), &doc); code != exitOK || err != nil || doc.Tip != rev || doc.Summary.Controls.Pause == nil ||
		doc.Summary.Controls.Pause.Reason != "INC-9" || len(doc.Summary.Invariants) != 1 {
		t.Fatalf("status with --fleet-repo: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	code, out, errOut = cli(t, "status", "--repo", statusRepo.Bare)
	if code != exitOK || strings.Contains(out, "PAUSED") || strings.Contains(out, "BROKEN") {
		t.Errorf("status without --fleet-repo: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = cli(t, "rollout", "explain", "--repo", statusRepo.Bare, "--fleet-repo", fleetRepo.Bare, "--cluster", "eu-1", "--revision", rev)
	if code != exitOK || !strings.Contains(out, "INC-9") {
		t.Errorf("explain with --fleet-repo: exit %d\n%s%s", code, out, errOut)
	}
}
