package fleet

import (
	"fmt"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/token"

	"github.com/flotilla-gitops/flotilla/internal/english"
)

// Unselected finds the selectors that select none of the planned clusters
// (the inventory's, and those known from status branches): a bundle's
// target, an overlay, a rollout wave (the fleet's or a bundle's own), a
// policy's target. Such a selector is most often a typo
// (`matchLabels: evn: prod`, `values: ["prdo"]`) that silently drops a
// bundle or an overlay; vet reports each as a warning at its line, and
// --strict makes them problems. It works from the plans (which bundles and
// overlays each cluster got, its wave), so it costs nothing per cluster
// beyond planning: what it needs of them is tallied in a Selection as
// they are made, so that none needs to be held. Bundles that failed for
// some cluster are left out (their problems come first). Without clusters
// there is nothing to say.
//
// A selector meant to select nothing for now (a failover overlay for the
// standby's labels) says so with the attribute @flotilla(unselected), on
// its field or inside its struct.
func (f *Fleet) Unselected(sel *Selection) Diagnostics {
	if len(sel.clusters) == 0 {
		return nil
	}
	clusters := english.Count(len(sel.clusters), "cluster")
	var ds Diagnostics
	warn := func(path, bundle, msg string, v cue.Value) {
		if onPurpose(v) {
			return
		}
		ds = append(ds, &Diagnostic{Bundle: bundle, Path: path, Message: msg, Positions: positionsOf([]token.Pos{userPos(v)})})
	}
	got, failed, matched, waves := sel.got, sel.failed, sel.matched, sel.waves
	for _, name := range f.bundles {
		bv := lookup(lookup(f.root, fieldBundles), name)
		if t := lookup(bv, "target"); t.Exists() && got[name] == 0 {
			warn("target", name, "selects none of the "+clusters+" (a typo in a label, region or name?)", t)
			continue
		}
		if failed[name] || got[name] == 0 {
			continue
		}
		overlays, err := overlayList(lookup(bv, "overlays"))
		if err != nil {
			continue
		}
		of := english.Count(got[name], "cluster")
		for _, o := range overlays {
			if ps := positionsOf([]token.Pos{userPos(o.value)}); len(ps) > 0 && !matched[name][ps[0]] {
				warn(o.path, name, fmt.Sprintf("overlay %s selects none of the %s that get the bundle", o.name, of), o.value)
			}
		}
		ds = append(ds, unusedWaves(lookup(bv, fieldRollout), fieldRollout, name, waves[name], clusters)...)
	}
	ds = append(ds, unusedWaves(lookup(f.root, fieldRollout), fieldRollout, "", waves[""], clusters)...)
	for _, p := range f.policies {
		if p.target == nil || p.selectsAny(sel.clusters) {
			continue
		}
		t := lookup(lookup(lookup(f.root, fieldPolicies), p.Name), "target")
		warn(fieldPolicies+"."+p.Name+".target", "", "selects none of the "+clusters+": the policy holds nowhere", t)
	}
	sortDiagnostics(ds)
	return ds
}

// Selection is what the planned clusters got, tallied one plan at a time
// (Add) for Unselected: per bundle, how many clusters got it, whether it
// failed for any, the positions of the overlays that matched, and the
// waves clusters are in (per bundle with a rollout of its own; "" the
// fleet's); and the clusters' identities, for the policies' targets.
type Selection struct {
	clusters []Cluster
	got      map[string]int
	failed   map[string]bool
	matched  map[string]map[Position]bool
	waves    map[string]map[string]bool
}

// NewSelection returns an empty Selection.
func NewSelection() *Selection {
	return &Selection{got: map[string]int{}, failed: map[string]bool{}, matched: map[string]map[Position]bool{},
		waves: map[string]map[string]bool{"": {}}}
}

// Add tallies one cluster's plan.
func (s *Selection) Add(p *Plan) {
	s.clusters = append(s.clusters, p.Cluster)
	if p.Rollout != nil {
		s.waves[""][p.Rollout.Wave] = true
	}
	for _, b := range p.Bundles {
		s.got[b.Name]++
		if b.Failed() {
			s.failed[b.Name] = true
		}
		if s.matched[b.Name] == nil {
			s.matched[b.Name] = map[Position]bool{}
		}
		for _, o := range b.Overlays {
			if o.Position != nil {
				s.matched[b.Name][*o.Position] = true
			}
		}
		if b.Rollout != nil {
			if s.waves[b.Name] == nil {
				s.waves[b.Name] = map[string]bool{}
			}
			s.waves[b.Name][b.Rollout.Wave] = true
		}
	}
}

// unusedWaves are the waves of a rollout that have a selector and no
// cluster: their selector matches none, or only clusters an earlier wave
// took. A wave without a selector ("rest") may well be empty.
func unusedWaves(rollout cue.Value, at, bundle string, used map[string]bool, clusters string) Diagnostics {
	if !rollout.Exists() {
		return nil
	}
	iter, err := lookup(rollout, "waves").List()
	if err != nil {
		return nil
	}
	var ds Diagnostics
	for i := 0; iter.Next(); i++ {
		wv := iter.Value()
		name, err := lookup(wv, "name").String()
		if err != nil || used[name] {
			continue
		}
		for _, field := range selectorFields {
			if lookup(wv, field).Exists() && !onPurpose(wv) {
				ds = append(ds, &Diagnostic{Bundle: bundle, Path: fmt.Sprintf("%s.waves[%d]", at, i),
					Message:   fmt.Sprintf("wave %s gets none of the %s: its selector matches none, or only clusters of earlier waves", name, clusters),
					Positions: positionsOf([]token.Pos{userPos(wv)})})
				break
			}
		}
	}
	return ds
}

// selectsAny reports whether the policy's target selects one of the
// planned clusters.
func (p *Policy) selectsAny(clusters []Cluster) bool {
	for _, c := range clusters {
		if ok, _, err := p.target.match(c); ok || err != nil {
			return true
		}
	}
	return false
}

// onPurpose reports whether v is marked @flotilla(unselected): it may
// select no cluster.
func onPurpose(v cue.Value) bool {
	for _, a := range v.Attributes(cue.FieldAttr | cue.DeclAttr) {
		if a.Name() != "flotilla" {
			continue
		}
		for i := range a.NumArgs() {
			if k, _ := a.Arg(i); k == "unselected" {
				return true
			}
		}
	}
	return false
}
