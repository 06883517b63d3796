package fleet

import (
	"fmt"
	"slices"
	"strings"
)

// orderBundles validates dependsOn and returns the bundles dependencies
// first, ties broken by name, so a plan is the same every time.
//
// A dependency that is not a bundle of the fleet, or that does not select
// this cluster, fails the dependent bundle (it could never become ready);
// bundles in a cycle fail with the cycle named. Failed bundles keep their
// place by name.
func orderBundles(bundles []*Bundle, fleetBundles []string) []*Bundle {
	byName := map[string]*Bundle{}
	for _, b := range bundles {
		byName[b.Name] = b
	}
	for _, b := range bundles {
		for _, dep := range b.DependsOn {
			switch {
			case dep == b.Name:
				b.Errors = append(b.Errors, b.dependsOnDiagnostic("a bundle cannot depend on itself"))
			case !slices.Contains(fleetBundles, dep):
				b.Errors = append(b.Errors, b.dependsOnDiagnostic(fmt.Sprintf(
					"depends on %q, which is not a bundle of the fleet (bundles: %s)", dep, strings.Join(fleetBundles, ", "))))
			case byName[dep] == nil:
				b.Errors = append(b.Errors, b.dependsOnDiagnostic(fmt.Sprintf(
					"depends on %q, which does not select this cluster", dep)))
			}
		}
	}

	// Kahn's algorithm over names in sorted order.
	names := make([]string, 0, len(bundles))
	for _, b := range bundles {
		names = append(names, b.Name)
	}
	slices.Sort(names)
	pending := map[string]int{}
	dependents := map[string][]string{}
	for _, name := range names {
		for _, dep := range byName[name].DependsOn {
			if byName[dep] != nil && dep != name {
				pending[name]++
				dependents[dep] = append(dependents[dep], name)
			}
		}
	}
	var ordered []*Bundle
	ready := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return pending[n] > 0 })
	for len(ready) > 0 {
		name := ready[0]
		ready = ready[1:]
		ordered = append(ordered, byName[name])
		for _, d := range dependents[name] {
			if pending[d]--; pending[d] == 0 {
				ready = append(ready, d)
				slices.Sort(ready)
			}
		}
	}
	// What is left is in a cycle or depends on one.
	var cyclic []string
	for _, name := range names {
		if pending[name] > 0 {
			cyclic = append(cyclic, name)
		}
	}
	for _, name := range cyclic {
		b := byName[name]
		b.Errors = append(b.Errors, b.dependsOnDiagnostic(fmt.Sprintf(
			"dependency cycle among bundles %s", strings.Join(cyclic, ", "))))
		ordered = append(ordered, b)
	}
	return ordered
}

// dependsOnDiagnostic is a problem with the bundle's dependsOn, at its
// position.
func (b *Bundle) dependsOnDiagnostic(msg string) *Diagnostic {
	return diagnostic("dependsOn", msg, b.dependsOnPos)
}
