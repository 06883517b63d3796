package fleet

import (
	"fmt"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/token"
)

// specFields are the fields of #Spec: what an overlay may add to a bundle.
var specFields = []string{
	"namespace", SourceHelm, SourceKustomize, SourceManifests, SourceResources,
	"values", "prune", "wait", "timeout", "serviceAccountName",
}

// applyOverlays unifies every overlay of the bundle that matches the
// cluster into the bundle, in fleet order (unification does not depend on
// order: two overlays that set one field to different values conflict
// whichever comes first, and the error names both positions).
//
// Each of the overlay's spec fields is filled into the bundle with
// FillPath, so references inside the bundle (a resource that interpolates
// values.replicas) see the overlay's value.
func applyOverlays(bundle cue.Value, c Cluster) (cue.Value, []MatchedOverlay, error) {
	list := bundle.LookupPath(cue.ParsePath("overlays"))
	if !list.Exists() {
		return bundle, nil, nil
	}
	iter, err := list.List()
	if err != nil {
		return bundle, nil, err
	}
	var matched []MatchedOverlay
	out := bundle
	for i := 0; iter.Next(); i++ {
		ov := iter.Value()
		name := fmt.Sprintf("#%d", i)
		if n := ov.LookupPath(cue.ParsePath("name")); n.Exists() {
			if s, err := n.String(); err == nil {
				name = s
			}
		}
		at := fmt.Sprintf("overlays[%d]", i)
		sel, err := decodeSelector(ov, at)
		if err != nil {
			return bundle, matched, err
		}
		ok, because, err := sel.match(c)
		if err != nil {
			return bundle, matched, diagnostic(at, fmt.Sprintf("overlay %s: %v", name, err), userPos(ov))
		}
		if !ok {
			continue
		}
		m := MatchedOverlay{Index: i, Name: name, Because: because}
		if ps := positionsOf([]token.Pos{userPos(ov)}); len(ps) > 0 {
			m.Position = &ps[0]
		}
		matched = append(matched, m)
		for _, field := range specFields {
			path := cue.ParsePath(field)
			if fv := ov.LookupPath(path); fv.Exists() {
				out = out.FillPath(path, fv)
			}
		}
	}
	if err := out.Err(); err != nil {
		return out, matched, err
	}
	return out, matched, nil
}
