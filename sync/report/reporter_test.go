package report_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
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

// branchLog lists, per commit of the status branch, the files it touched.
func branchLog(t *testing.T, repo *gittest.Repo) []string {
	t.Helper()
	out := gittest.Git(t, repo.Bare, "log", "--format=@%s", "--name-only", report.DefaultBranch)
	var commits []string
	for _, c := range strings.Split(out, "@")[1:] {
		commits = append(commits, strings.Join(strings.Fields(c), " "))
	}
	return commits
}

// TestConcurrentReporters has many clusters report at once to one bare
// repository: every file lands, and every commit touches only its own
// cluster's file.
func TestConcurrentReporters(t *testing.T) {
	const n = 50
	repo := gittest.New(t)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			r, err := report.New(report.Options{URL: repo.URL})
			if err != nil {
				errs[i] = err
				return
			}
			_, errs[i] = r.Publish(context.Background(), status(fmt.Sprintf("c%02d", i), "Ready"), time.Now())
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("reporter %d: %v", i, err)
		}
	}
	files := gittest.Git(t, repo.Bare, "ls-tree", "-r", "--name-only", report.DefaultBranch)
	if got := len(strings.Fields(files)); got != n {
		t.Errorf("%d files on the branch, want %d:\n%s", got, n, files)
	}
	for _, c := range branchLog(t, repo) {
		// "status(cNN): Ready at 0123456 clusters/cNN.yaml"
		fields := strings.Fields(c)
		name := strings.TrimSuffix(strings.TrimPrefix(fields[0], "status("), "):")
		if len(fields) != 5 || fields[4] != "clusters/"+name+".yaml" {
			t.Errorf("commit touches more than its cluster's file: %q", c)
		}
	}
}

// TestUnchangedAndHeartbeat checks that an unchanged status makes no
// commit, a change does, and an unchanged one does again once the
// heartbeat is due.
func TestUnchangedAndHeartbeat(t *testing.T) {
	repo := gittest.New(t)
	r, err := report.New(report.Options{URL: repo.URL, Heartbeat: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	steps := []struct {
		phase report.ClusterPhase
		at    time.Time
		push  bool
	}{
		{"Ready", now, true},
		{"Ready", now.Add(time.Minute), false},
		{"Failed", now.Add(2 * time.Minute), true},
		{"Failed", now.Add(30 * time.Minute), false},
		{"Failed", now.Add(2*time.Minute + time.Hour), true},
	}
	for i, s := range steps {
		pushed, err := r.Publish(context.Background(), status("c1", s.phase), s.at)
		if err != nil || pushed != s.push {
			t.Errorf("step %d: pushed %v (%v), want %v", i, pushed, err, s.push)
		}
	}
	if got := len(branchLog(t, repo)); got != 3 {
		t.Errorf("%d commits, want 3", got)
	}
}

// TestRead reads back what reporters wrote.
func TestRead(t *testing.T) {
	repo := gittest.New(t)
	for _, c := range []string{"b", "a"} {
		r, _ := report.New(report.Options{URL: repo.URL})
		if _, err := r.Publish(context.Background(), status(c, "Ready"), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	got, err := report.Read(context.Background(), repo.URL, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Cluster.Name != "a" || got[1].Bundles[0].Name != "web" || got[0].APIVersion != report.APIVersion {
		t.Errorf("read %+v", got)
	}
	if _, err := report.Read(context.Background(), gittest.New(t).URL, "", nil); err == nil {
		t.Error("a repository without a status branch read fine")
	}
}

// TestConcurrentReportersOverHTTP repeats the concurrent test (50 reporters) on a real
// git HTTP server with basic auth (gittestserver).
func TestConcurrentReportersOverHTTP(t *testing.T) {
	url := gittest.HTTPServer(t, "reporter", "pass")
	auth := &githttp.BasicAuth{Username: "reporter", Password: "pass"}

	const n = 50
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			r, err := report.New(report.Options{URL: url, Auth: auth})
			if err == nil {
				_, err = r.Publish(context.Background(), status(fmt.Sprintf("h%02d", i), "Ready"), time.Now())
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("reporter %d: %v", i, err)
		}
	}
	got, err := report.Read(context.Background(), url, "", auth)
	if err != nil || len(got) != n {
		t.Fatalf("%d statuses on the branch, want %d (%v)", len(got), n, err)
	}
	if _, err := report.Read(context.Background(), url, "", &githttp.BasicAuth{Username: "reporter", Password: "wrong"}); err == nil {
		t.Error("read with a wrong password")
	}
}

// BenchmarkConcurrentReporters: 100 clusters report at once to one bare
// repository; time until all landed, and pushes per report (1 is no
// retry).
func BenchmarkConcurrentReporters(b *testing.B) {
	const n = 100
	var pushes int64
	for b.Loop() {
		b.StopTimer()
		repo := gittest.New(b)
		reporters := make([]*report.Reporter, n)
		for i := range reporters {
			reporters[i], _ = report.New(report.Options{URL: repo.URL, Attempts: 100})
		}
		b.StartTimer()
		var wg sync.WaitGroup
		var failed atomic.Int64
		for i, r := range reporters {
			wg.Go(func() {
				if _, err := r.Publish(context.Background(), status(fmt.Sprintf("c%03d", i), "Ready"), time.Now()); err != nil {
					failed.Add(1)
				}
			})
		}
		wg.Wait()
		b.StopTimer()
		if failed.Load() > 0 {
			b.Fatalf("%d reports did not land", failed.Load())
		}
		for _, r := range reporters {
			pushes += int64(r.Attempts())
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(pushes)/float64(b.N*n), "pushes/report")
}
