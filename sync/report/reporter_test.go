package report_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

func status(cluster string, phase report.ClusterPhase) *report.Status {
	return &report.Status{
		Cluster:         fleet.Cluster{Name: cluster, Region: "eu-west-1"},
		Agent:           "test",
		AppliedRevision: "0123456789abcdef0123456789abcdef01234567",
		Phase:           phase,
		Bundles:         []report.BundleStatus{{Name: "web", Phase: apply.PhaseReady}},
	}
}

func basicAuth(user, password string) *githttp.BasicAuth {
	return &githttp.BasicAuth{Username: user, Password: password}
}

// branchLog lists, per commit of a cluster's status branch (newest first),
// its subject and the files of its tree.
func branchLog(t *testing.T, bare, cluster string) []string {
	t.Helper()
	branch := report.Branch("", cluster)
	var commits []string
	for _, hash := range strings.Fields(gittest.Git(t, bare, "rev-list", branch)) {
		subject := gittest.Git(t, bare, "log", "-1", "--format=%s", hash)
		files := strings.Fields(gittest.Git(t, bare, "ls-tree", "-r", "--name-only", hash))
		commits = append(commits, subject+" | "+strings.Join(files, " "))
	}
	return commits
}

// TestConcurrentReportersOverHTTP has 200 clusters report at once to a
// real git HTTP server with basic auth (gittestserver): every report
// lands with exactly one push, on its cluster's own branch, whose commits
// hold that cluster's file only; a reader sees all 200; a wrong password
// reads nothing.
func TestConcurrentReportersOverHTTP(t *testing.T) {
	url := gittest.HTTPServer(t, "reporter", "pass")
	auth := basicAuth("reporter", "pass")
	const n = 200
	reporters := make([]*report.Reporter, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r, err := report.New(report.Options{URL: url, Auth: auth})
			if err == nil {
				_, err = r.Publish(context.Background(), status(fmt.Sprintf("c%03d", i), "Ready"), time.Now())
			}
			reporters[i], errs[i] = r, err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("reporter %d: %v", i, err)
		} else if p := reporters[i].Pushes(); p != 1 {
			t.Errorf("reporter %d pushed %d times, want 1", i, p)
		}
	}
	snap, err := report.Read(context.Background(), url, "", auth)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Statuses) != n || len(snap.Problems) > 0 {
		t.Fatalf("read %d statuses, want %d (problems %v)", len(snap.Statuses), n, snap.Problems)
	}
	for i, st := range snap.Statuses {
		if want := fmt.Sprintf("c%03d", i); st.Cluster.Name != want {
			t.Fatalf("status %d is %s, want %s", i, st.Cluster.Name, want)
		}
	}
	if _, err := report.Read(context.Background(), url, "", basicAuth("reporter", "wrong")); err == nil {
		t.Error("read with a wrong password")
	}
}

// TestBranchHoldsOnlyItsCluster checks the branches of concurrent
// reporters over file://: each holds its own cluster's file and nothing
// else, in every commit.
func TestBranchHoldsOnlyItsCluster(t *testing.T) {
	repo := gittest.New(t)
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r, err := report.New(report.Options{URL: repo.URL})
			if err == nil {
				_, err = r.Publish(context.Background(), status(fmt.Sprintf("c%02d", i), "Ready"), time.Now())
			}
			if err != nil {
				t.Errorf("reporter %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	for i := range n {
		name := fmt.Sprintf("c%02d", i)
		for _, c := range branchLog(t, repo.Bare, name) {
			if want := "status(" + name + "): Ready at 0123456 | clusters/" + name + ".yaml"; c != want {
				t.Errorf("branch of %s: commit %q, want %q", name, c, want)
			}
		}
	}
}

// TestHeartbeatReplacesChangeAppends checks the branch's history: an
// unchanged status makes no commit; a change appends one; a heartbeat
// appends once after a change, then replaces the previous heartbeat (so
// history holds changes, not every heartbeat); a reporter started anew
// (an agent restart) finds the same.
func TestHeartbeatReplacesChangeAppends(t *testing.T) {
	repo := gittest.New(t)
	opts := report.Options{URL: repo.URL, Heartbeat: time.Hour}
	r, err := report.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	steps := []struct {
		phase   report.ClusterPhase
		at      time.Duration
		push    bool
		commits int
	}{
		{"Ready", 0, true, 1},
		{"Ready", time.Minute, false, 1},
		{"Failed", 2 * time.Minute, true, 2},
		{"Failed", 30 * time.Minute, false, 2},
		{"Failed", 2*time.Minute + time.Hour, true, 3},   // first heartbeat: appended
		{"Failed", 2*time.Minute + 2*time.Hour, true, 3}, // replaces it
		{"Failed", 2*time.Minute + 3*time.Hour, true, 3}, // and again
		{"Ready", 4 * time.Hour, true, 4},                // a change appends
	}
	for i, s := range steps {
		pushed, err := r.Publish(context.Background(), status("c1", s.phase), now.Add(s.at))
		if err != nil || pushed != s.push {
			t.Fatalf("step %d: pushed %v (%v), want %v", i, pushed, err, s.push)
		}
		if got := branchLog(t, repo.Bare, "c1"); len(got) != s.commits {
			t.Fatalf("step %d: %d commits, want %d:\n%s", i, len(got), s.commits, strings.Join(got, "\n"))
		}
	}
	log := branchLog(t, repo.Bare, "c1")
	want := []string{"Ready at", "Failed at 0123456 (heartbeat)", "Failed at 0123456 |", "Ready at"}
	for i, w := range want {
		if !strings.Contains(log[i], w) {
			t.Errorf("commit %d: %q, want %q in it", i, log[i], w)
		}
	}
	// The last heartbeat's time is the one on the branch.
	st, err := report.ReadCluster(context.Background(), repo.URL, "", "c1", nil)
	if err != nil || st.Phase != report.ClusterReady {
		t.Fatalf("read: %+v %v", st, err)
	}

	// A new reporter (agent restart) with the same status: a heartbeat.
	r2, _ := report.New(opts)
	if pushed, err := r2.Publish(context.Background(), status("c1", "Ready"), now.Add(5*time.Hour)); err != nil || !pushed {
		t.Fatalf("after restart: pushed %v, %v", pushed, err)
	}
	if got := branchLog(t, repo.Bare, "c1"); len(got) != 5 || !strings.Contains(got[0], "(heartbeat)") {
		t.Errorf("after restart:\n%s", strings.Join(got, "\n"))
	}
}

// TestGitDownThenBack checks that a report fails while the repository is
// gone (after a few tries) and lands once it is back.
func TestGitDownThenBack(t *testing.T) {
	repo := gittest.New(t)
	r, err := report.New(report.Options{URL: repo.URL, Attempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	away := repo.Bare + ".away"
	if err := os.Rename(repo.Bare, away); err != nil {
		t.Fatal(err)
	}
	if pushed, err := r.Publish(context.Background(), status("c1", "Ready"), time.Now()); pushed || err == nil || !strings.Contains(err.Error(), "status of c1 not pushed") {
		t.Fatalf("with the repository gone: pushed %v, %v", pushed, err)
	}
	if err := os.Rename(away, repo.Bare); err != nil {
		t.Fatal(err)
	}
	if pushed, err := r.Publish(context.Background(), status("c1", "Ready"), time.Now()); !pushed || err != nil {
		t.Fatalf("with the repository back: pushed %v, %v", pushed, err)
	}
}

// TestErrorsNeverShowCredentials reads and writes status branches of a
// repository that is not there, with a token in the URL: no error shows it.
func TestErrorsNeverShowCredentials(t *testing.T) {
	const url = "http://s3cret-tok3n@127.0.0.1:1/fleet.git"
	r, _ := report.New(report.Options{URL: url, Attempts: 1})
	_, perr := r.Publish(context.Background(), status("c1", "Ready"), time.Now())
	_, rerr := report.Read(context.Background(), url, "", nil)
	_, cerr := report.ReadCluster(context.Background(), url, "", "c1", nil)
	for _, err := range []error{perr, rerr, cerr} {
		if err == nil || strings.Contains(err.Error(), "s3cret-tok3n") {
			t.Errorf("error %v", err)
		}
	}
}

// TestClusterNamesAreChecked refuses names that are not safe branch and
// file names before anything is written.
func TestClusterNamesAreChecked(t *testing.T) {
	repo := gittest.New(t)
	r, _ := report.New(report.Options{URL: repo.URL})
	for _, name := range []string{"../main", "a/b", "UPPER", "", "x\x00y", "a..b", strings.Repeat("a", 64)} {
		if _, err := r.Publish(context.Background(), status(name, "Ready"), time.Now()); err == nil || !strings.Contains(err.Error(), "cannot name a status branch") {
			t.Errorf("%q: %v", name, err)
		}
	}
	if _, err := report.New(report.Options{URL: repo.URL, Prefix: "bad..prefix"}); err == nil {
		t.Error("a prefix with .. was accepted")
	}
	if out := gittest.Git(t, repo.Bare, "branch", "--list"); out != "" {
		t.Errorf("branches written: %s", out)
	}
}

// TestRead reads back what reporters wrote, and leaves out a branch whose
// file speaks for another cluster.
func TestRead(t *testing.T) {
	repo := gittest.New(t)
	for _, c := range []string{"b", "a"} {
		r, _ := report.New(report.Options{URL: repo.URL})
		if _, err := r.Publish(context.Background(), status(c, "Ready"), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	// An agent for "evil" writes a file claiming to be cluster a.
	gittest.Git(t, repo.Work, "fetch", "origin", report.Branch("", "a"))
	gittest.Git(t, repo.Work, "checkout", "-b", "evil", "FETCH_HEAD")
	if err := os.Rename(repo.Work+"/clusters/a.yaml", repo.Work+"/clusters/evil.yaml"); err != nil {
		t.Fatal(err)
	}
	gittest.Git(t, repo.Work, "add", "-A")
	gittest.Git(t, repo.Work, "commit", "-m", "impersonate a")
	gittest.Git(t, repo.Work, "push", "origin", "evil:"+report.Branch("", "evil"))

	snap, err := report.Read(context.Background(), repo.URL, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := snap.Statuses
	if len(got) != 2 || got[0].Cluster.Name != "a" || got[1].Bundles[0].Name != "web" || got[0].APIVersion != report.APIVersion {
		t.Errorf("read %+v", got)
	}
	if len(snap.Problems) != 1 || !strings.Contains(snap.Problems[0].Error(), `speaks for cluster "a", not "evil"`) {
		t.Errorf("problems %v", snap.Problems)
	}
	if snap, err := report.Read(context.Background(), gittest.New(t).URL, "", nil); err != nil || len(snap.Statuses) != 0 {
		t.Errorf("a repository without status branches: %+v, %v", snap, err)
	}
	if _, err := report.ReadCluster(context.Background(), repo.URL, "", "nobody", nil); err == nil || !strings.Contains(err.Error(), "cluster nobody has not reported") {
		t.Errorf("a cluster that never reported: %v", err)
	}
}

// TestLegacyBranchIsExplained checks that the shared status branch of
// earlier versions, which Git cannot hold beside per-cluster branches,
// is named with what to do, by the reporter and the reader.
func TestLegacyBranchIsExplained(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"README": "fleet\n"})
	gittest.Git(t, repo.Work, "push", "origin", "main:"+report.DefaultPrefix)
	r, _ := report.New(report.Options{URL: repo.URL})
	_, err := r.Publish(context.Background(), status("c1", "Ready"), time.Now())
	if !errors.Is(err, report.ErrLegacyBranch) || !strings.Contains(err.Error(), "git push origin --delete flotilla/status") {
		t.Errorf("publish: %v", err)
	}
	snap, err := report.Read(context.Background(), repo.URL, "", nil)
	if err != nil || len(snap.Problems) != 1 || !errors.Is(snap.Problems[0], report.ErrLegacyBranch) {
		t.Errorf("read: %+v, %v", snap, err)
	}
}

// TestDeletedBranchIsRecreated: a cluster's status branch deleted on the
// server (by hand, or by a clean-up) comes back with the next report that
// is pushed (a change, or at the latest the heartbeat), as a new history.
func TestDeletedBranchIsRecreated(t *testing.T) {
	repo := gittest.New(t)
	r, err := report.New(report.Options{URL: repo.URL, Heartbeat: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if pushed, err := r.Publish(context.Background(), status("c1", "Ready"), now); !pushed || err != nil {
		t.Fatalf("first report: %v %v", pushed, err)
	}
	branch := "refs/heads/" + report.Branch(report.DefaultPrefix, "c1")
	gittest.Git(t, repo.Bare, "update-ref", "-d", branch)

	// The next change recreates it.
	if pushed, err := r.Publish(context.Background(), status("c1", "Failed"), now.Add(time.Second)); !pushed || err != nil {
		t.Fatalf("report after the deletion: %v %v", pushed, err)
	}
	if got := gittest.Git(t, repo.Bare, "show", report.Branch(report.DefaultPrefix, "c1")+":"+report.Path("c1")); !strings.Contains(got, "phase: Failed") {
		t.Errorf("recreated branch holds:\n%s", got)
	}

	// Deleted again with nothing changing: the heartbeat recreates it.
	gittest.Git(t, repo.Bare, "update-ref", "-d", branch)
	if pushed, err := r.Publish(context.Background(), status("c1", "Failed"), now.Add(2*time.Minute)); !pushed || err != nil {
		t.Fatalf("heartbeat after the deletion: %v %v", pushed, err)
	}
	if got := gittest.Git(t, repo.Bare, "rev-parse", "--verify", branch); got == "" {
		t.Error("the heartbeat did not recreate the branch")
	}
}

// TestSilentRemoteTimesOut: a status remote that accepts connections and
// never answers fails the report at the Timeout, once (the next pass
// tries again), instead of holding the agent.
func TestSilentRemoteTimesOut(t *testing.T) {
	r, err := report.New(report.Options{URL: gittest.SilentServer(t), Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	pushed, err := r.Publish(context.Background(), status("c1", "Ready"), time.Now())
	if pushed || err == nil || !strings.Contains(err.Error(), "no answer from the remote within 1s") {
		t.Errorf("pushed %v, %v", pushed, err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("took %s", took)
	}
}

// TestTwoAgentsWithOneName: two agents that report as the same cluster
// overwrite each other's status; each notices the other writing its branch
// between its own reports, and from the second time in a row says so in
// its status. A handover (a new agent's first reports after the old one's
// last) is not one.
func TestTwoAgentsWithOneName(t *testing.T) {
	repo := gittest.New(t)
	newReporter := func() *report.Reporter {
		r, err := report.New(report.Options{URL: repo.Bare})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	publish := func(r *report.Reporter, phase report.ClusterPhase, now time.Time) {
		t.Helper()
		// Each report differs (the agents see the cluster differently).
		st := &report.Status{Cluster: fleet.Cluster{Name: "prod-1"}, Phase: phase, Message: now.String(), Bundles: []report.BundleStatus{}}
		if _, err := r.Publish(context.Background(), st, now); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	old, handover := newReporter(), newReporter()
	publish(old, report.ClusterReady, now)
	publish(handover, report.ClusterProgressing, now.Add(time.Second))
	publish(handover, report.ClusterReady, now.Add(2*time.Second))
	if old.Duplicate() != "" || handover.Duplicate() != "" {
		t.Fatalf("a handover taken for two agents: %q %q", old.Duplicate(), handover.Duplicate())
	}

	a, b := handover, newReporter()
	for i := range 3 {
		phase := report.ClusterReady
		if i%2 == 1 {
			phase = report.ClusterProgressing
		}
		publish(b, phase, now.Add(time.Duration(10+2*i)*time.Second))
		publish(a, phase, now.Add(time.Duration(11+2*i)*time.Second))
	}
	for name, r := range map[string]*report.Reporter{"a": a, "b": b} {
		if !strings.Contains(r.Duplicate(), "two agents report as cluster prod-1") {
			t.Errorf("%s did not notice the other: %q", name, r.Duplicate())
		}
	}
	publish(a, report.ClusterReady, now.Add(time.Minute))
	st, err := report.ReadCluster(context.Background(), repo.URL, "", "prod-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.Message, "two agents report as cluster prod-1") {
		t.Errorf("the status does not say so: %q", st.Message)
	}
}

// TestReportsSkipTheFetch: against git http-backend, a reporter's first
// report fetches its branch and pushes; the next ones push only (no ref
// advertisement of upload-pack, no pack fetched): the commits of its last
// push are in its memory. When another writer moved the branch, the
// leased push is refused, the next attempt fetches, and the report lands
// on the other's commit: nothing is lost. Heartbeats still replace one
// another.
func TestReportsSkipTheFetch(t *testing.T) {
	repo := gittest.New(t)
	url, reqs := repo.ServeBackend()
	r, err := report.New(report.Options{URL: url, Heartbeat: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	publish := func(r *report.Reporter, phase report.ClusterPhase, at time.Duration) map[string]int {
		t.Helper()
		reqs.Take()
		if pushed, err := r.Publish(context.Background(), status("c1", phase), now.Add(at)); !pushed || err != nil {
			t.Fatalf("report %s at %s: pushed %v, %v", phase, at, pushed, err)
		}
		return reqs.Take()
	}
	if got := publish(r, "Ready", 0); got["advertise git-upload-pack"] != 1 || got["git-receive-pack"] != 1 {
		t.Fatalf("first report: %v, want a fetch (of a branch not there yet) and a push", got)
	}
	for i, phase := range []report.ClusterPhase{"Failed", "Failed", "Failed", "Ready"} {
		got := publish(r, phase, time.Duration(i+1)*2*time.Minute)
		if got["advertise git-upload-pack"] != 0 || got["git-upload-pack"] != 0 || got["git-receive-pack"] != 1 {
			t.Fatalf("report %d: %v, want a push alone", i+2, got)
		}
	}
	// Ready, Failed, Failed (heartbeat), Failed (heartbeat, in its place), Ready.
	if got := branchLog(t, repo.Bare, "c1"); len(got) != 4 || !strings.Contains(got[1], "(heartbeat)") {
		t.Fatalf("branch:\n%s", strings.Join(got, "\n"))
	}

	other, err := report.New(report.Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	publish(other, "Progressing", 20*time.Minute)
	got := publish(r, "Failed", 30*time.Minute)
	if got["git-upload-pack"] != 1 || got["git-receive-pack"] != 1 {
		t.Errorf("report after another writer: %v, want the refused push's retry to fetch", got)
	}
	log := branchLog(t, repo.Bare, "c1")
	if len(log) != 6 || !strings.Contains(log[0], "Failed at") || !strings.Contains(log[1], "Progressing at") {
		t.Errorf("the other writer's report is kept under this one:\n%s", strings.Join(log, "\n"))
	}
}

// TestReaderFetchesWhatMoved: against git http-backend, a Reader's first
// read is one advertisement and one upload-pack of every tip; the next
// ones ask only for what moved — no upload-pack at all when nothing did —
// and see new and deleted branches, as Read does.
func TestReaderFetchesWhatMoved(t *testing.T) {
	repo := gittest.New(t)
	url, reqs := repo.ServeBackend()
	ctx := context.Background()
	now := time.Now()
	reporters := map[string]*report.Reporter{}
	publish := func(cluster string, phase report.ClusterPhase) {
		t.Helper()
		if reporters[cluster] == nil {
			reporters[cluster], _ = report.New(report.Options{URL: url})
		}
		if _, err := reporters[cluster].Publish(ctx, status(cluster, phase), now); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{"c1", "c2", "c3"} {
		publish(c, "Ready")
	}
	r := report.NewReader(url, "", nil)
	phases := func() string {
		t.Helper()
		snap, err := r.Read(ctx)
		if err != nil || len(snap.Problems) > 0 {
			t.Fatalf("read: %v %v", err, snap.Problems)
		}
		var out []string
		for _, st := range snap.Statuses {
			out = append(out, st.Cluster.Name+"="+string(st.Phase))
		}
		return strings.Join(out, " ")
	}
	reqs.Take()
	if got := phases(); got != "c1=Ready c2=Ready c3=Ready" {
		t.Fatalf("first read: %s", got)
	}
	if got := reqs.Take(); got["advertise git-upload-pack"] != 1 || got["git-upload-pack"] != 1 {
		t.Errorf("first read: %v, want one advertisement and one upload-pack", got)
	}
	if got := phases(); got != "c1=Ready c2=Ready c3=Ready" {
		t.Fatalf("second read: %s", got)
	}
	if got := reqs.Take(); got["advertise git-upload-pack"] != 1 || got["git-upload-pack"] != 0 {
		t.Errorf("a read when nothing moved: %v, want the advertisement alone", got)
	}
	publish("c2", "Failed")
	publish("c4", "Progressing")
	gittest.Git(t, repo.Bare, "update-ref", "-d", "refs/heads/"+report.Branch("", "c3"))
	reqs.Take()
	if got := phases(); got != "c1=Ready c2=Failed c4=Progressing" {
		t.Fatalf("after c2 moved, c4 came and c3 went: %s", got)
	}
	if got := reqs.Take(); got["advertise git-upload-pack"] != 1 || got["git-upload-pack"] != 1 {
		t.Errorf("a read when two moved: %v, want one fetch", got)
	}
}
