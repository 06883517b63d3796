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

// matchOverlays finds every overlay of the bundle that matches the
// cluster and returns, per spec field, the unification of what they set.
// The caller fills that into the bundle with FillPath, so references
// inside the bundle (a resource that interpolates values.replicas) see the
// overlays' values. Unification does not depend on order: two overlays
// that set one field to different values conflict whichever comes first,
// and the error names both positions.
func matchOverlays(bundle cue.Value, c Cluster) ([]MatchedOverlay, map[string]cue.Value, error) {
	list := lookup(bundle, "overlays")
	if !list.Exists() {
		return nil, nil, nil
	}
	iter, err := list.List()
	if err != nil {
		return nil, nil, err
	}
	var matched []MatchedOverlay
	patch := map[string]cue.Value{}
	for i := 0; iter.Next(); i++ {
		ov := iter.Value()
		name := fmt.Sprintf("#%d", i)
		if n := lookup(ov, "name"); n.Exists() {
			if s, err := n.String(); err == nil {
				name = s
			}
		}
		at := fmt.Sprintf("overlays[%d]", i)
		sel, err := decodeSelector(ov, at)
		if err != nil {
			return matched, nil, err
		}
		ok, because, err := sel.match(c)
		if err != nil {
			return matched, nil, diagnostic(at, fmt.Sprintf("overlay %s: %v", name, err), userPos(ov))
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
			if fv := lookup(ov, field); fv.Exists() {
				if prev, ok := patch[field]; ok {
					fv = prev.Unify(fv)
				}
				patch[field] = fv
			}
		}
	}
	return matched, patch, nil
}
