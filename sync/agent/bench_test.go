package agent_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/agent"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// requestCounter counts API requests, and writes apart.
type requestCounter struct{ all, writes atomic.Int64 }

func (c *requestCounter) wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTrip(func(r *http.Request) (*http.Response, error) {
			c.all.Add(1)
			if r.Method != http.MethodGet {
				c.writes.Add(1)
			}
			return rt.RoundTrip(r)
		})
	})
	return cfg
}

// BenchmarkIdlePass measures the steady state: a pass when neither the
// remote nor the cluster changed (CPU time, API requests, writes; the Git
// cost is one ls-remote, no fetch).
func BenchmarkIdlePass(b *testing.B) {
	repo := gittest.New(b)
	repo.Commit(map[string]string{"fleet.cue": fleetV1})
	var counter requestCounter
	a := newAgent(b, counter.wrap(cluster.Config), repo, "prod-1", map[string]string{"env": "prod"})
	if p := a.RunOnce(context.Background()); p.Failed() {
		b.Fatal(p.Err)
	}
	counter.all.Store(0)
	counter.writes.Store(0)
	cpu := cpuTime()
	for b.Loop() {
		if p := a.RunOnce(context.Background()); p.Failed() || p.Changed {
			b.Fatalf("idle pass: %+v", p)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N)/1e6, "cpu-ms/pass")
	b.ReportMetric(float64(counter.all.Load())/float64(b.N), "api-req/pass")
	b.ReportMetric(float64(counter.writes.Load())/float64(b.N), "api-writes/pass")
}

// BenchmarkPushToApplied measures from a commit pushed to the remote to
// the change applied in the cluster, with a webhook-triggered pass (the
// time the pass takes; the poll interval adds up to its length).
func BenchmarkPushToApplied(b *testing.B) {
	repo := gittest.New(b)
	repo.Commit(map[string]string{"fleet.cue": fleetV1})
	a := newAgent(b, cluster.Config, repo, "prod-1", map[string]string{"env": "prod"})
	if p := a.RunOnce(context.Background()); p.Failed() {
		b.Fatal(p.Err)
	}
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		repo.Commit(map[string]string{"fleet.cue": strings.Replace(fleetV1, `v: "1"`, fmt.Sprintf("v: %q", fmt.Sprint(i+2)), 1)})
		b.StartTimer()
		if p := a.RunOnce(context.Background()); p.Failed() || !p.Changed {
			b.Fatalf("pass after push: %+v", p)
		}
	}
}

// BenchmarkWaitingPoll measures a poll of an agent waiting in a rollout
// for 1,000 clusters of the wave before its own (their status branches
// over HTTP): an ls-remote of the fleet, one listing and one fetch of the
// status branches, an inventory read; the tip's plan and the clusters'
// waves are evaluated once, not per poll. Compare with BenchmarkIdlePass
// in the same run (the steady state without a rollout).
func BenchmarkWaitingPoll(b *testing.B) {
	repo := gittest.New(b)
	repo.Commit(map[string]string{"fleet.cue": fleetV1 + `
rollout: {waves: [{name: "canary", names: ["c*"]}, {name: "rest"}], bake: "10m", stale: "24h"}
`})
	statusRepo := gittest.New(b)
	old := strings.Repeat("0", 40)
	branches := map[string]map[string][]byte{}
	now := time.Now().UTC()
	for i := range 1000 {
		name := fmt.Sprintf("c%04d", i)
		st := report.Status{APIVersion: report.APIVersion, Kind: report.Kind, Cluster: fleet.Cluster{Name: name}.Normalized(),
			AppliedRevision: old, SeenRevision: old, Phase: report.ClusterReady, ReadySince: &now, ReportedAt: now, Bundles: []report.BundleStatus{}}
		data, err := yaml.Marshal(st)
		if err != nil {
			b.Fatal(err)
		}
		branches[report.Branch("", name)] = map[string][]byte{report.Path(name): data}
	}
	gittest.ImportBranches(b, statusRepo.Bare, branches)
	url := statusRepo.ServeHTTP("status", "pass")
	var counter requestCounter
	a := newAgent(b, counter.wrap(cluster.Config), repo, "zz-1", nil, func(o *agent.Options) {
		o.Status = &report.Options{URL: url, Auth: &githttp.BasicAuth{Username: "status", Password: "pass"}}
	})
	if p := a.RunOnce(context.Background()); p.Err != nil || p.StatusErr != nil {
		b.Fatal(p.Err, p.StatusErr)
	}
	counter.all.Store(0)
	counter.writes.Store(0)
	cpu := cpuTime()
	for b.Loop() {
		if p := a.RunOnce(context.Background()); p.Err != nil || p.Changed {
			b.Fatalf("waiting poll: %+v", p)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N)/1e6, "cpu-ms/pass")
	b.ReportMetric(float64(counter.all.Load())/float64(b.N), "api-req/pass")
	b.ReportMetric(float64(counter.writes.Load())/float64(b.N), "api-writes/pass")
}
