package fleet

import (
	"fmt"
	"slices"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/token"
)

// matchOverlays finds every overlay of the bundle that matches the
// cluster and returns, per spec field, the unification of what they set.
// The caller fills that into the bundle with FillPath, so references
// inside the bundle (a resource that interpolates values.replicas) see the
// overlays' values. Unification does not depend on order: two overlays
// that set one field to different values conflict whichever comes first,
// and the error names both positions.
func matchOverlays(bundle cue.Value, c Cluster) ([]MatchedOverlay, map[string]cue.Value, error) {
	overlays, err := overlayList(lookup(bundle, "overlays"))
	if err != nil {
		return nil, nil, err
	}
	var matched []MatchedOverlay
	patch := map[string]cue.Value{}
	for i, o := range overlays {
		ov, at, name := o.value, o.path, o.name
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
		for _, field := range specFields() {
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

// overlay is one overlay of a bundle, with its path in the bundle and name.
type overlay struct {
	value cue.Value
	path  string
	name  string
}

// overlayList returns the overlays of a bundle: a list in its order, or a
// struct keyed by name in key order.
func overlayList(v cue.Value) ([]overlay, error) {
	if !v.Exists() {
		return nil, nil
	}
	var out []overlay
	if v.IncompleteKind() == cue.StructKind {
		iter, err := v.Fields()
		if err != nil {
			return nil, err
		}
		for iter.Next() {
			name := iter.Selector().Unquoted()
			out = append(out, overlay{value: iter.Value(), path: "overlays." + iter.Selector().String(), name: name})
		}
		slices.SortFunc(out, func(a, b overlay) int { return strings.Compare(a.name, b.name) })
		return out, nil
	}
	iter, err := v.List()
	if err != nil {
		return nil, err
	}
	for i := 0; iter.Next(); i++ {
		o := overlay{value: iter.Value(), path: fmt.Sprintf("overlays[%d]", i), name: fmt.Sprintf("#%d", i)}
		if n, err := lookup(o.value, "name").String(); err == nil {
			o.name = n
		}
		out = append(out, o)
	}
	return out, nil
}
