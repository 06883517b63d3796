package apply_test

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/pkg/ssa"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/sync/apply"
)

// benchObjects is a namespace and n ConfigMaps in it, with data version v.
func benchObjects(ns string, n, v int) []*unstructured.Unstructured {
	objs := []*unstructured.Unstructured{namespace(ns)}
	for i := range n {
		objs = append(objs, configMap(ns, fmt.Sprintf("cm-%05d", i), map[string]string{"v": fmt.Sprint(v)}))
	}
	return objs
}

// ssaPeer is fluxcd/pkg/ssa's ResourceManager used directly, on a client
// that counts its requests: the peer the apply engine is measured
// against.
func ssaPeer(b *testing.B) (*ssa.ResourceManager, *atomic.Int64) {
	b.Helper()
	var n atomic.Int64
	cfg := rest.CopyConfig(cluster.Config)
	cfg.QPS = -1
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) { n.Add(1); return rt.RoundTrip(r) })
	})
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		b.Fatal(err)
	}
	rm := ssa.NewResourceManager(c, polling.NewStatusPoller(c, c.RESTMapper(), polling.Options{}), ssa.Owner{Field: "peer", Group: "peer.dev"})
	rm.SetConcurrency(apply.DefaultOptions().ObjectConcurrency)
	return rm, &n
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// BenchmarkApply measures a bundle's sync (create, no-op, update) with
// Flotilla's engine and with ssa.ApplyAllStaged on the same objects, and
// reports API requests per object. Run: go test -bench Apply ./sync/apply/
func BenchmarkApply(b *testing.B) {
	for _, n := range []int{400, 2000} {
		for _, step := range []string{"create", "noop", "update"} {
			b.Run(fmt.Sprintf("flotilla/%s/%d", step, n), func(b *testing.B) {
				benchFlotilla(b, n, step)
			})
			b.Run(fmt.Sprintf("ssa/%s/%d", step, n), func(b *testing.B) {
				benchPeer(b, n, step)
			})
		}
	}
}

func benchFlotilla(b *testing.B, n int, step string) {
	opts := apply.DefaultOptions()
	opts.InventoryNamespace = fmt.Sprintf("bench-inv-%d", seq.Add(1))
	m, err := apply.New(cluster.Config, opts)
	if err != nil {
		b.Fatal(err)
	}
	var requests int64
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		ns := fmt.Sprintf("bench-f-%d", seq.Add(1))
		objs := benchObjects(ns, n, 1)
		if step != "create" {
			if _, err := m.Sync(context.Background(), []apply.Bundle{benchBundle(ns, objs)}); err != nil {
				b.Fatal(err)
			}
		}
		if step == "update" {
			objs = benchObjects(ns, n, 2)
		}
		b.StartTimer()
		res, err := m.Sync(context.Background(), []apply.Bundle{benchBundle(ns, objs)})
		if err != nil || res.Failed() {
			b.Fatalf("sync: %v %+v", err, res)
		}
		requests += res.Requests
	}
	b.ReportMetric(float64(requests)/float64(b.N)/float64(n+1), "req/obj")
}

func benchBundle(ns string, objs []*unstructured.Unstructured) apply.Bundle {
	b := bundle(ns, objs...)
	b.Name = "bench"
	b.Prune = false
	return b
}

func benchPeer(b *testing.B, n int, step string) {
	rm, counter := ssaPeer(b)
	var requests int64
	for b.Loop() {
		b.StopTimer()
		ns := fmt.Sprintf("bench-p-%d", seq.Add(1))
		objs := benchObjects(ns, n, 1)
		if step != "create" {
			if _, err := rm.ApplyAllStaged(context.Background(), objs, ssa.DefaultApplyOptions()); err != nil {
				b.Fatal(err)
			}
		}
		if step == "update" {
			objs = benchObjects(ns, n, 2)
		}
		before := counter.Load()
		b.StartTimer()
		if _, err := rm.ApplyAllStaged(context.Background(), objs, ssa.DefaultApplyOptions()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		requests += counter.Load() - before
		b.StartTimer()
	}
	b.ReportMetric(float64(requests)/float64(b.N)/float64(n+1), "req/obj")
}
