package fleet

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/flotilla-gitops/flotilla/internal/english"
)

// Availability during a rollout (issue 37). An invariant with `bundles`
// and a `regions` or `clusters` minimum also bounds what a rollout may take
// down at once: while a cluster takes a new revision of such a bundle, the
// others of its group must keep at least max(min-1, 1) regions (or
// clusters) with the bundle Ready — one of them may be taking the revision
// at a time, never the last. A plan carries the rules that concern its
// cluster's bundles, so that an agent (whose fleet may be evaluated in a
// sandbox worker) can decide from the plan and the status branches alone.

// Availability is one availability rule for one planned bundle.
type Availability struct {
	Invariant   string `json:"invariant"`
	Description string `json:"description,omitempty"`
	Bundle      string `json:"bundle"`
	// Target and GroupBy are the invariant's.
	Target  *selector `json:"target,omitempty"`
	GroupBy string    `json:"groupBy,omitempty"`
	// Regions and Clusters are how many of the group must stay Ready
	// while this cluster takes a revision (0: not bounded).
	Regions  int `json:"regions,omitempty"`
	Clusters int `json:"clusters,omitempty"`
}

// Running is what a cluster runs, as its status branch says: which
// bundles it has, and whether each is Ready.
type Running struct {
	Cluster Cluster
	Bundles map[string]bool
	// Versions are the revisions of what it runs of each bundle, for the
	// rules over versions (withinOneRevisionOf).
	Versions map[string]BundleVersion
}

// BundleVersion is where what a cluster runs of a bundle comes from: the
// revision it applied, and where its rendered objects, and the ones
// before them, began (its status: contentSince, previousContentSince).
type BundleVersion struct {
	Revision, ContentSince, PreviousContentSince string
}

// availabilityFor are the availability rules of the plan's bundles.
func (f *Fleet) availabilityFor(p *Plan) []Availability {
	var out []Availability
	for _, inv := range f.invariants {
		need := func(b *bound) int {
			if b == nil || b.Min == nil {
				return 0
			}
			return max(*b.Min-1, 1)
		}
		regions, clusters := need(inv.regions), need(inv.clusters)
		if len(inv.bundles) == 0 || regions+clusters == 0 || len(inv.targeted([]Cluster{p.Cluster})) == 0 {
			continue
		}
		for _, b := range p.Bundles {
			if globAny(inv.bundles, b.Name) && len(b.Errors) == 0 {
				out = append(out, Availability{Invariant: inv.Name, Description: inv.description, Bundle: b.Name,
					Target: inv.target, GroupBy: inv.groupBy, Regions: regions, Clusters: clusters})
			}
		}
	}
	return out
}

// Wait says why cluster me may not take a new revision of the rule's
// bundle now — the other clusters of its group with the bundle Ready keep
// too few regions or clusters — or "" when it may. others are the other
// clusters that run (stale ones left out by the caller).
func (a Availability) Wait(me Cluster, others []Running) string {
	inv := &Invariant{Name: a.Invariant, description: a.Description, target: a.Target, groupBy: a.GroupBy}
	key, in := "", true
	if g := inv.group([]Cluster{me}); len(g) == 1 {
		for k := range g {
			key = k
		}
	} else {
		in = false // no value to group by: the rule does not hold for it
	}
	if !in || len(inv.targeted([]Cluster{me})) == 0 {
		return ""
	}
	var group []Cluster
	ready := map[string]bool{}
	for _, r := range others {
		isReady, has := r.Bundles[a.Bundle]
		if !has || r.Cluster.Name == me.Name {
			continue
		}
		if g := inv.group(inv.targeted([]Cluster{r.Cluster})); len(g[key]) == 0 {
			continue
		}
		group = append(group, r.Cluster)
		ready[r.Cluster.Name] = isReady
	}
	regions, clusters := map[string]bool{}, 0
	var notReady []string
	for _, c := range group {
		if !ready[c.Name] {
			notReady = append(notReady, c.Name)
			continue
		}
		clusters++
		if c.Region != "" {
			regions[c.Region] = true
		}
	}
	slices.Sort(notReady)
	var short string
	switch {
	case a.Regions > 0 && len(regions) < a.Regions:
		short = fmt.Sprintf("%s with %s Ready (%s), at least %d while one takes a revision",
			english.Count(len(regions), "other region"), a.Bundle, listOrNone(slices.Sorted(maps.Keys(regions))), a.Regions)
	case a.Clusters > 0 && clusters < a.Clusters:
		short = fmt.Sprintf("%s with %s Ready, at least %d while one takes a revision",
			english.Count(clusters, "other cluster"), a.Bundle, a.Clusters)
	default:
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "invariant %s", a.Invariant)
	if a.Description != "" {
		fmt.Fprintf(&b, " (%s)", a.Description)
	}
	if a.GroupBy != "" {
		fmt.Fprintf(&b, " in group %s=%s", a.GroupBy, key)
	}
	fmt.Fprintf(&b, ": %s", short)
	if len(notReady) > 0 {
		fmt.Fprintf(&b, "; waits for %s", english.Names(notReady, 5))
	}
	return b.String()
}
