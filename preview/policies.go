package preview

import (
	"context"
	"fmt"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/english"
)

// clustersToCheck returns the clusters whose policy violations may differ
// between base and head. A policy holds over all of a cluster's objects (a
// require over every bundle), and the policies themselves may be what
// changed: then every cluster. When the policies say the same at both
// sides, a cluster whose bundles are the same at both (the same bundles,
// each with the same inputs and reading no file that changed, or failing
// at both) gets the same objects, hence the same violations, and is left
// out.
func clustersToCheck(clusters []fleet.Cluster, sides []*side, files *sourceChanges) []fleet.Cluster {
	digest := sides[1].Fleet.PoliciesDigest()
	if digest == "" || sides[0].Fleet.PoliciesDigest() != digest {
		return clusters
	}
	var out []fleet.Cluster
	for _, c := range clusters {
		if !sameObjects(sides[0].plans[c.Name], sides[1].plans[c.Name], files) {
			out = append(out, c)
		}
	}
	return out
}

// sameObjects reports whether a cluster's plans at base and head render
// the same objects.
func sameObjects(base, head *fleet.Plan, files *sourceChanges) bool {
	if base == nil || head == nil || len(base.Bundles) != len(head.Bundles) {
		return false
	}
	for _, h := range head.Bundles {
		b := base.Bundle(h.Name)
		switch {
		case b == nil || b.Failed() != h.Failed():
			return false
		case h.Failed():
			// Neither side's objects include it.
		case b.InputsDigest != h.InputsDigest || files.affects(h):
			return false
		}
	}
	return true
}

// checkObjects checks the policies over the clusters whose objects may
// have changed, and with renderedRules the invariants' rules over rendered
// objects, which need every cluster.
func checkObjects(ctx context.Context, rep *Report, clusters []fleet.Cluster, sides []*side, files *sourceChanges,
	states [2]*fleet.InvariantState, renderedRules bool, say func(string)) error {
	check, all := clustersToCheck(clusters, sides, files), clusters
	if !renderedRules {
		all = check
	}
	say(fmt.Sprintf("checking the fleet's policies and invariants over the objects of %s", english.Count(len(all), "cluster")))
	checked := map[string]bool{}
	for _, c := range check {
		checked[c.Name] = true
	}
	return checkRendered(ctx, rep, all, checked, sides, states)
}

// checkRendered renders every bundle of the clusters at both sides, each
// distinct input once (as vet --policies does), and checks what needs
// rendered objects: the fleet's policies over the clusters in check —
// recording on each cluster what breaks at head and did not at base —
// and, when states are given, the invariants' rules over rendered objects
// (AddRendered; their breaks are compared with the others').
func checkRendered(ctx context.Context, rep *Report, clusters []fleet.Cluster, check map[string]bool, sides []*side, states [2]*fleet.InvariantState) error {
	var before [2]map[string]map[string]bool // by cluster, problem (without positions)
	for i, s := range sides {
		policies := len(s.Fleet.Policies()) > 0
		if !policies && (states[i] == nil || s.Fleet.RenderedInvariants() == 0) {
			continue
		}
		var plans []*fleet.Plan
		for _, c := range clusters {
			if p := s.plans[c.Name]; p != nil {
				plans = append(plans, p)
			}
		}
		rendered, err := s.r.RenderPlans(ctx, plans, nil, nil)
		if err != nil {
			return fmt.Errorf("rendering every cluster at %s to check the policies and invariants: %w", s.name, err)
		}
		before[i] = map[string]map[string]bool{}
		for j, p := range plans {
			var bundles []fleet.RenderedBundle
			for _, b := range rendered[j] {
				if b.Err == nil {
					bundles = append(bundles, fleet.RenderedBundle{Name: b.Name, Objects: b.Result.Objects})
				}
			}
			states[i].AddRendered(p.Cluster, bundles)
			if !policies || !check[p.Cluster.Name] {
				continue
			}
			found := map[string]bool{}
			for _, d := range s.Fleet.CheckPolicies(p.Cluster, bundles) {
				found[problemKey(d)] = true
				if i == 1 && !before[0][p.Cluster.Name][problemKey(d)] {
					rep.addViolation(p.Cluster.Name, d.Error())
				}
			}
			before[i][p.Cluster.Name] = found
		}
	}
	return nil
}

// problemKey is a problem without its positions: the same violation at
// another line of a changed fleet.cue is not new.
func problemKey(d *fleet.Diagnostic) string {
	return d.Bundle + "\x00" + d.Path + "\x00" + d.Message
}

func (r *Report) addViolation(cluster, msg string) {
	for i := range r.Clusters {
		if r.Clusters[i].Name == cluster {
			r.Clusters[i].Violations = append(r.Clusters[i].Violations, msg)
			return
		}
	}
}
