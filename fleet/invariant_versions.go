package fleet

import (
	"fmt"
	"maps"
	"slices"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/token"
)

// withinOneRevisionOf (issue 37: "the standby runs the same versions as
// the active, within one revision"): over what the clusters run, as their
// status branches say, every cluster of a group runs each of the rule's
// bundles at most one version apart from the clusters the selector
// selects in the group, either way. A version is a stretch of revisions
// over which a cluster ran the same rendered objects (its status:
// contentSince, previousContentSince), so commits that do not change the
// bundle do not count, and a revision one cluster skipped (it polled past
// it) does not either: "one version behind r" is "at or after the
// revision where r's objects before its current ones began", which the
// fleet's history answers (SetAncestry). Checked by `flotilla status`.

// withinRule is an invariant's withinOneRevisionOf.
type withinRule struct {
	sel     selector
	summary string
	at      string
	pos     token.Pos
}

// readWithin reads withinOneRevisionOf; it needs `bundles`.
func (inv *Invariant) readWithin(v cue.Value, at string) *Diagnostic {
	wv := lookup(v, "withinOneRevisionOf")
	if !wv.Exists() {
		return nil
	}
	r := &withinRule{at: at + ".withinOneRevisionOf", pos: userPos(wv)}
	sel, d := readFleetSelector(wv, r.at)
	if d != nil {
		return d
	}
	if len(inv.bundles) == 0 {
		return diagnostic(r.at, "`withinOneRevisionOf` compares the versions of bundles: name the bundles with `bundles`", r.pos)
	}
	r.sel, r.summary = sel, selectorSummary(sel)
	inv.within = r
	return nil
}

// SetAncestry gives the state the fleet's history: ancestor reports
// whether revision a is revision b or one of its ancestors. Without it
// (or for a revision the history does not have) withinOneRevisionOf is
// not checked.
func (s *InvariantState) SetAncestry(ancestor func(a, b string) (bool, error)) {
	if s != nil {
		s.ancestor = ancestor
	}
}

// WantsAncestry reports whether checking the state needs the fleet's
// history: some cluster runs a bundle of a withinOneRevisionOf rule at
// another revision than a cluster it is compared with.
func (s *InvariantState) WantsAncestry() bool {
	if s == nil || !s.live {
		return false
	}
	for _, inv := range s.f.invariants {
		if inv.within == nil {
			continue
		}
		for b, byCluster := range s.versions {
			if !globAny(inv.bundles, b) {
				continue
			}
			revisions := map[string]bool{}
			for _, v := range byCluster {
				revisions[v.Revision] = true
			}
			if len(revisions) > 1 {
				return true
			}
		}
	}
	return false
}

// checkWithin checks an invariant's withinOneRevisionOf over what the
// clusters run.
func (s *InvariantState) checkWithin(inv *Invariant) []InvariantBreak {
	if inv.within == nil || !s.live || s.ancestor == nil {
		return nil
	}
	var out []InvariantBreak
	for _, b := range s.f.bundles {
		if !globAny(inv.bundles, b) {
			continue
		}
		byCluster := s.versions[b]
		var running []Cluster
		for _, c := range inv.targeted(s.clusters) {
			if _, ok := byCluster[c.Name]; ok {
				running = append(running, c)
			}
		}
		groups := inv.group(running)
		for _, key := range slices.Sorted(maps.Keys(groups)) {
			g := &groupBreaks{inv: inv, bundle: b, key: key}
			s.checkWithinGroup(g, groups[key], byCluster)
			out = append(out, g.out...)
		}
	}
	return out
}

// checkWithinGroup compares every cluster of a group that the rule's
// selector does not select with each that it selects.
func (s *InvariantState) checkWithinGroup(g *groupBreaks, group []Cluster, byCluster map[string]BundleVersion) {
	r := g.inv.within
	var refs, others []Cluster
	for _, c := range group {
		if ok, _, err := r.sel.match(c); err == nil && ok {
			refs = append(refs, c)
		} else {
			others = append(others, c)
		}
	}
	for _, o := range others {
		for _, ref := range refs {
			ov, rv := byCluster[o.Name], byCluster[ref.Name]
			var how string
			switch {
			case ov.Revision == rv.Revision:
			case !s.atOrAfter(ov.Revision, rv.PreviousContentSince):
				how = "more than one version behind"
			case !s.atOrAfter(rv.Revision, ov.PreviousContentSince):
				how = "more than one version ahead of"
			}
			if how == "" {
				continue
			}
			msg := fmt.Sprintf("%s runs it at %s, %s %s (%s) at %s", o.Name, shortRev(ov.Revision), how, ref.Name, r.summary, shortRev(rv.Revision))
			g.add(r.at, r.pos, []string{o.Name, ref.Name}, msg, o.Name+"\x00"+ref.Name)
		}
	}
}

// atOrAfter reports whether revision rev is since or a descendant of it;
// true when since is unknown, or the history does not say.
func (s *InvariantState) atOrAfter(rev, since string) bool {
	if since == "" || rev == "" {
		return true
	}
	ok, err := s.ancestor(since, rev)
	return err != nil || ok
}

// shortRev is a revision's first 7 characters.
func shortRev(rev string) string {
	if len(rev) > 7 {
		return rev[:7]
	}
	return rev
}
