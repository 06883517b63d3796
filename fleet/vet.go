package fleet

import (
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// clustersPerWorker is the least number of clusters worth another
// planning goroutine (each compiles the fleet once more).
const clustersPerWorker = 16

// PlanInventory plans every cluster of the fleet's inventory, in name
// order, on all CPUs. A cluster whose plan fails entirely has no plan; its
// problems are returned.
func (f *Fleet) PlanInventory() ([]*Plan, Diagnostics) {
	n := len(f.inventory)
	if n > 1 {
		if err := f.withoutInventory(); err != nil {
			return nil, Diagnostics{{Message: err.Error()}}
		}
	}
	results := make([]*Plan, n)
	errs := make([]error, n)
	workers := min(runtime.GOMAXPROCS(0), n/clustersPerWorker)
	if workers <= 1 {
		for i, c := range f.inventory {
			results[i], errs[i] = f.Plan(c)
		}
	} else {
		// A CUE context is not safe for concurrent use: each worker plans
		// with its own compiled copy of the fleet.
		fleets := []*Fleet{f}
		for len(fleets) < workers {
			fleets = append(fleets, f.clone())
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		for _, w := range fleets {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
					results[i], errs[i] = w.Plan(f.inventory[i])
				}
			})
		}
		wg.Wait()
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
	return plans, problems
}

// Vet evaluates the fleet for every inventory cluster and returns every
// problem found, each once: a problem that occurs for several clusters is
// one diagnostic listing them.
func (f *Fleet) Vet() Diagnostics {
	plans, problems := f.PlanInventory()
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
