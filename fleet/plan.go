package fleet

import (
	"slices"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/token"
)

// Plan is what one cluster gets from the fleet: the bundles that select it,
// in the order they must be applied, with their concrete inputs, and the
// bundles that do not, with the reason.
type Plan struct {
	Cluster Cluster `json:"cluster"`
	// Bundles are the selected bundles, dependencies first (ties by name).
	// A bundle that failed to evaluate for this cluster is listed too, with
	// its Errors: the agent keeps its last applied state.
	Bundles []*Bundle `json:"bundles"`
	// NotSelected are the bundles that do not select this cluster.
	NotSelected []NotSelected `json:"notSelected"`
}

// NotSelected is a bundle the cluster does not get, and why.
type NotSelected struct {
	Name    string   `json:"name"`
	Because []string `json:"because"`
}

// Failed returns the bundles of the plan that failed to evaluate.
func (p *Plan) Failed() []*Bundle {
	var out []*Bundle
	for _, b := range p.Bundles {
		if b.Failed() {
			out = append(out, b)
		}
	}
	return out
}

// Bundle returns the planned bundle with the given name, or nil.
func (p *Plan) Bundle(name string) *Bundle {
	i := slices.IndexFunc(p.Bundles, func(b *Bundle) bool { return b.Name == name })
	if i < 0 {
		return nil
	}
	return p.Bundles[i]
}

// Plan evaluates the fleet for one cluster. A problem in the cluster's
// identity, or one that makes the whole fleet fail for it, is an error (and
// nothing must be applied or pruned). A problem in one bundle is recorded
// on that bundle and the others are planned normally.
func (f *Fleet) Plan(c Cluster) (*Plan, error) {
	c = c.normalized()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	root := f.root.FillPath(cue.MakePath(cue.Str(fieldCluster)), f.ctx.Encode(c))
	if err := root.LookupPath(cue.MakePath(cue.Str(fieldCluster))).Validate(cue.Concrete(true)); err != nil {
		ds := fromCUE(err)
		for _, d := range ds {
			d.Clusters = []string{c.Name}
			d.Message = "the fleet's constraints on `cluster` reject this identity: " + d.Message
		}
		return nil, ds
	}

	plan := &Plan{Cluster: c, NotSelected: []NotSelected{}}
	var selected []*Bundle
	bundles := root.LookupPath(cue.MakePath(cue.Str(fieldBundles)))
	for _, name := range f.bundles {
		v := bundles.LookupPath(cue.MakePath(cue.Str(name)))
		b, because := f.planBundle(name, v, c)
		if b == nil {
			plan.NotSelected = append(plan.NotSelected, NotSelected{Name: name, Because: because})
			continue
		}
		selected = append(selected, b)
	}
	plan.Bundles = orderBundles(selected, f.bundles)
	for _, b := range plan.Bundles {
		for _, d := range b.Errors {
			d.Bundle = b.Name
			// A bundle that does not match the schema fails the same way
			// for every cluster; its errors name none.
			if !b.invalid {
				d.Clusters = []string{c.Name}
			}
		}
	}
	return plan, nil
}

// planBundle evaluates one bundle for the cluster. It returns nil and the
// reasons when the bundle does not select the cluster; otherwise the
// planned bundle, which carries Errors when it could not be evaluated.
func (f *Fleet) planBundle(name string, v cue.Value, c Cluster) (*Bundle, []string) {
	b := &Bundle{Name: name}
	if errs := f.bundleErrs[name]; len(errs) > 0 {
		b.Errors, b.invalid = cloneDiagnostics(errs), true
		b.SelectedBecause = []string{"unknown: the bundle does not match the schema"}
		return b, nil
	}

	selected, because, err := targetMatches(v, c)
	if err != nil {
		b.Errors = bundleDiagnostics(err, v.LookupPath(cue.ParsePath("target")))
		b.SelectedBecause = []string{"unknown: the target could not be evaluated"}
		return b, nil
	}
	if !selected {
		return nil, because
	}
	b.SelectedBecause = because

	v, overlays, err := applyOverlays(v, c)
	b.Overlays = overlays
	if err != nil {
		b.Errors = bundleDiagnostics(err, v)
		return b, nil
	}
	if err := b.decodeInputs(v); err != nil {
		b.Errors = bundleDiagnostics(err, v)
		return b, nil
	}
	b.InputsDigest = b.digest()
	return b, nil
}

// targetMatches evaluates the bundle's target for the cluster.
func targetMatches(v cue.Value, c Cluster) (bool, []string, error) {
	target := v.LookupPath(cue.ParsePath("target"))
	if !target.Exists() {
		return true, []string{"no target: every cluster"}, nil
	}
	sel, err := decodeSelector(target, "target")
	if err != nil {
		return false, nil, err
	}
	ok, why, err := sel.match(c)
	if err != nil {
		return false, nil, diagnostic("target", err.Error(), userPos(target))
	}
	return ok, why, nil
}

// bundleDiagnostics turns an error about a bundle into diagnostics whose
// paths are relative to the bundle; errors without a position get the
// position of at.
func bundleDiagnostics(err error, at cue.Value) Diagnostics {
	ds := AsDiagnostics(err)
	if ds == nil {
		ds = fromCUE(err)
	}
	for _, d := range ds {
		if _, rest, ok := bundlePath(d.Path); ok {
			d.Path = rest
		}
		if len(d.Positions) == 0 {
			d.Positions = positionsOf([]token.Pos{userPos(at)})
		}
	}
	return ds
}

func cloneDiagnostics(ds Diagnostics) Diagnostics {
	out := make(Diagnostics, len(ds))
	for i, d := range ds {
		c := *d
		out[i] = &c
	}
	return out
}
