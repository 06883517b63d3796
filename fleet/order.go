package fleet

import (
	"fmt"
	"slices"
	"strings"

	"cuelang.org/go/cue/token"
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
	// What is left is in a cycle or depends on one: one problem, the cycle
	// (a → b → c → a, at each member's dependsOn), shared by every bundle
	// left so that it is reported once.
	var left []string
	for _, name := range names {
		if pending[name] > 0 {
			left = append(left, name)
		}
	}
	if len(left) > 0 {
		cycle := findCycle(left, byName)
		at := make([]token.Pos, 0, len(cycle))
		for _, name := range cycle[:len(cycle)-1] {
			at = append(at, byName[name].dependsOnPos)
		}
		for _, name := range left {
			d := diagnostic("dependsOn", "dependency cycle "+strings.Join(cycle, " → "), at...)
			d.Bundle = cycle[0]
			byName[name].Errors = append(byName[name].Errors, d)
			ordered = append(ordered, byName[name])
		}
	}
	return ordered
}

// findCycle finds a cycle among bundles left over by a topological sort
// (each is in a cycle or depends on one), as names from its smallest back
// to it: [a b c a].
func findCycle(left []string, byName map[string]*Bundle) []string {
	// Walk dependencies among the left-over bundles from the first until a
	// bundle repeats: what lies between is a cycle.
	var walk []string
	at := map[string]int{}
	for name := left[0]; ; {
		if i, seen := at[name]; seen {
			walk = walk[i:]
			break
		}
		at[name] = len(walk)
		walk = append(walk, name)
		next := ""
		for _, dep := range byName[name].DependsOn {
			if slices.Contains(left, dep) {
				next = dep
				break
			}
		}
		if next == "" {
			return append(slices.Clone(left), left[0]) // cannot happen: each left-over bundle waits on another
		}
		name = next
	}
	// Start at the smallest name, so the cycle reads the same every time.
	start := slices.Index(walk, slices.Min(walk))
	cycle := append(slices.Clone(walk[start:]), walk[:start]...)
	return append(cycle, cycle[0])
}

// dependsOnDiagnostic is a problem with the bundle's dependsOn, at its
// position.
func (b *Bundle) dependsOnDiagnostic(msg string) *Diagnostic {
	return diagnostic("dependsOn", msg, b.dependsOnPos)
}
