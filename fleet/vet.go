package fleet

import (
	"slices"
)

// PlanInventory plans every cluster of the fleet's inventory, in name
// order. A cluster whose plan fails entirely has no plan; its problems are
// returned.
func (f *Fleet) PlanInventory() ([]*Plan, Diagnostics) {
	var plans []*Plan
	var problems Diagnostics
	for _, c := range f.inventory {
		p, err := f.Plan(c)
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
