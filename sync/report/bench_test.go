package report_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// reporters is how many clusters report at once in BenchmarkFleetReports.
const reporters = 1000

// BenchmarkFleetReports has 1,000 clusters report at the same moment to one
// repository over HTTP with basic auth (a commit rolling out everywhere),
// with the design of this package (a branch per cluster) and, as the peer
// in the same run, the design it replaced (one shared branch, retried on
// the new tip), bounded to five minutes. Run with -benchtime 1x.
func BenchmarkFleetReports(b *testing.B) {
	b.Run("branch-per-cluster", func(b *testing.B) {
		benchReports(b, func(ctx context.Context, url string, auth transport.AuthMethod, i int) (int, error) {
			r, err := report.New(report.Options{URL: url, Auth: auth})
			if err != nil {
				return 0, err
			}
			_, err = r.Publish(ctx, status(fmt.Sprintf("c%04d", i), report.ClusterReady), time.Now())
			return r.Pushes(), err
		})
	})
	b.Run("shared-branch", func(b *testing.B) {
		benchReports(b, func(ctx context.Context, url string, auth transport.AuthMethod, i int) (int, error) {
			name := fmt.Sprintf("c%04d", i)
			return sharedBranchPublish(ctx, url, auth, report.Path(name), []byte("cluster: "+name+"\n"), 20)
		})
	})
}

func benchReports(b *testing.B, publish func(ctx context.Context, url string, auth transport.AuthMethod, i int) (int, error)) {
	var landed, lost, pushes atomic.Int64
	var took time.Duration
	for b.Loop() {
		b.StopTimer()
		repo := gittest.New(b)
		url := repo.ServeHTTP("reporter", "pass")
		auth := basicAuth("reporter", "pass")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		b.StartTimer()
		start := time.Now()
		var wg sync.WaitGroup
		for i := range reporters {
			wg.Go(func() {
				n, err := publish(ctx, url, auth, i)
				pushes.Add(int64(n))
				if err != nil {
					lost.Add(1)
				} else {
					landed.Add(1)
				}
			})
		}
		wg.Wait()
		took = time.Since(start)
		cancel()
	}
	runs := float64(b.N)
	b.ReportMetric(took.Seconds(), "s/last-run")
	b.ReportMetric(float64(landed.Load())/runs, "landed")
	b.ReportMetric(float64(lost.Load())/runs, "lost")
	b.ReportMetric(float64(pushes.Load())/float64(max(landed.Load()+lost.Load(), 1)), "pushes/report")
}

// sharedBranchPublish is the design this package replaced, kept as the
// benchmark's peer: every cluster commits its file on the tip of one
// shared branch, cloned shallowly in memory, and when another cluster
// pushed first, tries again on the new tip with back-off and jitter.
func sharedBranchPublish(ctx context.Context, url string, auth transport.AuthMethod, path string, data []byte, attempts int) (int, error) {
	const branch = "shared-status"
	ref := plumbing.NewBranchReferenceName(branch)
	var err error
	for attempt := range attempts {
		if attempt > 0 {
			backoff := time.Duration(min(1<<attempt, 64)) * 25 * time.Millisecond
			select {
			case <-ctx.Done():
				return attempt, ctx.Err()
			case <-time.After(backoff/2 + rand.N(backoff)):
			}
		}
		if err = sharedBranchTry(ctx, url, auth, ref, path, data); err == nil {
			return attempt + 1, nil
		}
	}
	return attempts, err
}

func sharedBranchTry(ctx context.Context, url string, auth transport.AuthMethod, ref plumbing.ReferenceName, path string, data []byte) error {
	fs := memfs.New()
	repo, err := git.CloneContext(ctx, memory.NewStorage(), fs, &git.CloneOptions{
		URL: url, Auth: auth, ReferenceName: ref, SingleBranch: true, Depth: 1, Tags: git.NoTags})
	var parents []plumbing.Hash
	if err == nil {
		head, err := repo.Head()
		if err != nil {
			return err
		}
		parents = []plumbing.Hash{head.Hash()}
	} else {
		// No branch yet (or a failed clone, which the push then reports).
		fs = memfs.New()
		if repo, err = git.Init(memory.NewStorage(), fs); err != nil {
			return err
		}
		if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{url}}); err != nil {
			return err
		}
	}
	wt, err := repo.Worktree()
	if err != nil {
		return err
	}
	if err := fs.MkdirAll("clusters", 0o755); err != nil {
		return err
	}
	f, err := fs.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if _, err := wt.Add(path); err != nil {
		return err
	}
	who := &object.Signature{Name: "flotilla", Email: "flotilla@flotilla.dev", When: time.Now()}
	hash, err := wt.Commit("status", &git.CommitOptions{Author: who, Committer: who, Parents: parents})
	if err != nil {
		return err
	}
	return repo.PushContext(ctx, &git.PushOptions{RemoteName: "origin", Auth: auth,
		RefSpecs: []config.RefSpec{config.RefSpec(hash.String() + ":" + ref.String())}})
}
