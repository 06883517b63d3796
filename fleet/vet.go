package fleet

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// clustersPerWorker is the least number of clusters worth another
// planning goroutine (each compiles the fleet once more).
const clustersPerWorker = 16

// Progress is told how many clusters are planned so far, of how many. It
// is called from the planning goroutines, never two calls at once, and
// must be quick.
type Progress func(done, total int)

// PlanInventory plans every cluster of the fleet's inventory, in name
// order, on all CPUs. A cluster whose plan fails entirely has no plan; its
// problems are returned.
//
// When ctx ends, planning stops between clusters (one cluster's CUE
// evaluation cannot be interrupted, and takes milliseconds) and the error
// is ctx's cause; nothing planned is returned then. progress may be nil.
func (f *Fleet) PlanInventory(ctx context.Context, progress Progress) ([]*Plan, Diagnostics, error) {
	results, errs, err := f.PlanClusters(ctx, f.inventory, progress)
	if err != nil {
		return nil, nil, err
	}
	var plans []*Plan
	var problems Diagnostics
	for i, c := range f.inventory {
		p, err := results[i], errs[i]
		if err != nil {
			ds := AsDiagnostics(err)
			if ds == nil {
				ds = Diagnostics{{Clusters: []string{c.Name}, Message: err.Error()}}
			}
			problems = append(problems, ds...)
			continue
		}
		plans = append(plans, p)
	}
	return plans, problems, nil
}

// PlanClusters plans the given identities (the inventory's, or clusters
// known from their status branches) on all CPUs: plans[i] or errs[i] for
// clusters[i]. When ctx ends, it stops between clusters and returns ctx's
// cause.
func (f *Fleet) PlanClusters(ctx context.Context, clusters []Cluster, progress Progress) ([]*Plan, []error, error) {
	n := len(clusters)
	if n > 1 {
		if err := f.withoutInventory(); err != nil {
			return nil, nil, err
		}
	}
	results := make([]*Plan, n)
	errs := make([]error, n)
	var mu sync.Mutex
	done := 0
	planned := func() {
		if progress == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		done++
		progress(done, n)
	}
	workers := min(runtime.GOMAXPROCS(0), n/clustersPerWorker)
	if workers <= 1 {
		for i, c := range clusters {
			if ctx.Err() != nil {
				break
			}
			results[i], errs[i] = f.Plan(c)
			planned()
		}
	} else {
		// A CUE context is not safe for concurrent use: each worker plans
		// with its own compiled copy of the fleet. The copies are compiled
		// one after another (they share the parsed files).
		fleets := []*Fleet{f}
		for len(fleets) < workers && ctx.Err() == nil {
			fleets = append(fleets, f.clone())
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		for _, w := range fleets {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < n && ctx.Err() == nil; i = int(next.Add(1) - 1) {
					results[i], errs[i] = w.Plan(clusters[i])
					planned()
				}
			})
		}
		wg.Wait()
	}
	if ctx.Err() != nil {
		return nil, nil, context.Cause(ctx)
	}
	return results, errs, nil
}

// Problems returns every problem of the inventory's plans, as
// PlanInventory returned them, each once: a problem that occurs for
// several clusters is one diagnostic listing them. This is `flotilla vet`.
func Problems(plans []*Plan, problems Diagnostics) Diagnostics {
	for _, p := range plans {
		for _, b := range p.Failed() {
			problems = append(problems, b.Errors...)
		}
	}
	return mergeByCluster(problems)
}

// mergeByCluster folds diagnostics that differ only by cluster into one.
func mergeByCluster(ds Diagnostics) Diagnostics {
	var out Diagnostics
	index := map[string]*Diagnostic{}
	for _, d := range ds {
		key := (&Diagnostic{Bundle: d.Bundle, Path: d.Path, Message: d.Message, Positions: d.Positions}).Error()
		if seen, ok := index[key]; ok {
			for _, c := range d.Clusters {
				if !slices.Contains(seen.Clusters, c) {
					seen.Clusters = append(seen.Clusters, c)
				}
			}
			continue
		}
		c := *d
		c.Clusters = slices.Clone(d.Clusters)
		index[key] = &c
		out = append(out, &c)
	}
	for _, d := range out {
		slices.Sort(d.Clusters)
	}
	sortDiagnostics(out)
	return out
}
