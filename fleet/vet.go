package fleet

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/flotilla-gitops/flotilla/internal/inorder"
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
	var plans []*Plan
	problems, err := f.EachInventoryPlan(ctx, 0, progress, func(p *Plan) error {
		plans = append(plans, p)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return plans, problems, nil
}

// EachInventoryPlan is PlanInventory for a caller that uses each plan as
// it comes and keeps nothing (a batch command printing plans): each is
// handed to use in name order, as soon as it and the plans before it are
// made, while the other planning goroutines go on. use is never called
// twice at once; its error stops planning and is returned. workers bounds
// the planning goroutines (EachPlanOn; 0: one per CPU).
func (f *Fleet) EachInventoryPlan(ctx context.Context, workers int, progress Progress, use func(*Plan) error) (Diagnostics, error) {
	var problems Diagnostics
	err := f.EachPlanOn(ctx, workers, f.inventory, progress, func(i int, p *Plan, err error) error {
		if err == nil {
			return use(p)
		}
		problems = append(problems, PlanProblems(f.inventory[i], err)...)
		return nil
	})
	return problems, err
}

// PlanProblems is the error of a cluster whose plan failed entirely, as
// the problems vet reports.
func PlanProblems(c Cluster, err error) Diagnostics {
	ds := AsDiagnostics(err)
	if ds == nil {
		ds = Diagnostics{{Clusters: []string{c.Name}, Message: err.Error()}}
	}
	return ds
}

// PlanClusters plans the given identities (the inventory's, or clusters
// known from their status branches) on all CPUs: plans[i] or errs[i] for
// clusters[i]. When ctx ends, it stops between clusters and returns ctx's
// cause.
func (f *Fleet) PlanClusters(ctx context.Context, clusters []Cluster, progress Progress) ([]*Plan, []error, error) {
	results := make([]*Plan, len(clusters))
	errs := make([]error, len(clusters))
	err := f.EachPlan(ctx, clusters, progress, func(i int, p *Plan, err error) error {
		results[i], errs[i] = p, err
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return results, errs, nil
}

// EachPlan plans the given identities on all CPUs and hands use the plan
// or the error of clusters[i], for i in order, as soon as it and those
// before it are done: a caller that keeps nothing holds a few plans at a
// time, not the batch. use is never called twice at once; the planning
// goroutines go on while it runs. When ctx ends, or use returns an error,
// planning stops between clusters and EachPlan returns ctx's cause or that
// error.
func (f *Fleet) EachPlan(ctx context.Context, clusters []Cluster, progress Progress, use func(i int, p *Plan, err error) error) error {
	return f.EachPlanOn(ctx, 0, clusters, progress, use)
}

// EachPlanOn is EachPlan on at most workers goroutines (0: one per CPU).
// One planner plans with this Fleet and compiles no copy of it: a caller
// whose own work on each plan (rendering it) takes the other CPUs holds
// one evaluator's memory, not one per CPU, while its work keeps pace.
func (f *Fleet) EachPlanOn(ctx context.Context, workers int, clusters []Cluster, progress Progress, use func(i int, p *Plan, err error) error) error {
	n := len(clusters)
	if n > 1 {
		if err := f.withoutInventory(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	handoff := inorder.New(func(i int, r planned) error { return use(i, r.p, r.err) }, cancel)
	var mu sync.Mutex
	finished := 0
	done := func(i int, p *Plan, err error) {
		if progress != nil {
			mu.Lock()
			finished++
			progress(finished, n)
			mu.Unlock()
		}
		handoff.Done(i, planned{p, err})
	}
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, n/clustersPerWorker)
	if workers <= 1 {
		for i, c := range clusters {
			if ctx.Err() != nil {
				break
			}
			p, err := f.Plan(c)
			done(i, p, err)
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
					p, err := w.Plan(clusters[i])
					done(i, p, err)
				}
			})
		}
		wg.Wait()
	}
	return context.Cause(ctx)
}

// planned is one cluster's plan or error, on its way to the caller.
type planned struct {
	p   *Plan
	err error
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
