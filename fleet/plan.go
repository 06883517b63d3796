package fleet

import (
	"maps"
	"slices"
	"strings"

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
	// Rollout is the cluster's place in the fleet's rollout; nil without
	// one (every cluster applies a new revision at once).
	Rollout *Rollout `json:"rollout,omitempty"`
	// Policies is the number of the fleet's policies: the agent checks the
	// rendered objects against them before applying when there are any.
	Policies int `json:"policies,omitempty"`
	// Availability are the invariants' availability rules for the
	// cluster's bundles: what the rollout must keep Ready elsewhere while
	// this cluster takes a revision of them.
	Availability []Availability `json:"availability,omitempty"`
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
	c = c.Normalized()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var p *Plan
	defer func() {
		if p != nil {
			p.Policies = f.policyCount
			p.Availability = f.availabilityFor(p)
		}
	}()
	op := f.onePassInfo()
	if !op.evaluatedInVain[c.Name] {
		p = f.planOnePass(c)
	}
	if p == nil {
		op.memo.drop()
		var err error
		if p, err = f.planTwice(c); err != nil {
			return nil, err
		}
	}
	f.checkValues(p)
	op.memo.keep()
	return p, nil
}

// planTwice plans c the general way: it evaluates the fleet with the
// cluster filled in, selects bundles and matches overlays there, then
// evaluates it again with the matched overlays filled into their bundles.
func (f *Fleet) planTwice(c Cluster) (*Plan, error) {
	root := f.planRoot.FillPath(cue.MakePath(cue.Str(fieldCluster)), f.ctx.Encode(c))
	if err := lookup(root, fieldCluster).Validate(cue.Concrete(true)); err != nil {
		ds := fromCUE(err)
		for _, d := range ds {
			d.Clusters = []string{c.Name}
			d.Message = "the fleet's constraints on `cluster` reject this identity: " + d.Message
		}
		return nil, ds
	}

	var rollout *Rollout
	if rv := lookup(root, fieldRollout); rv.Exists() {
		r, err := rolloutFor(rv, c, fieldRollout)
		if err != nil {
			ds := AsDiagnostics(err)
			for _, d := range ds {
				d.Clusters = []string{c.Name}
			}
			return nil, ds
		}
		rollout = r
	}

	// Select bundles and match overlays on the fleet with the identity
	// filled in, then fill every matched overlay into it at once (each fill
	// re-evaluates what it touches, so one fill for all bundles is much
	// cheaper than one per bundle), then read the concrete inputs.
	plan := &Plan{Cluster: c, NotSelected: []NotSelected{}, Rollout: rollout}
	var selected []*Bundle
	patches := map[string]map[string]cue.Value{}
	bundles := lookup(root, fieldBundles)
	for _, name := range f.bundles {
		b, patch, because := f.selectBundle(name, lookup(bundles, name), c)
		if b == nil {
			plan.NotSelected = append(plan.NotSelected, NotSelected{Name: name, Because: because})
			continue
		}
		selected = append(selected, b)
		if len(patch) > 0 {
			patches[name] = patch
		}
	}
	bundles = lookup(f.fillOverlays(root, patches), fieldBundles)
	for _, b := range selected {
		if !b.Failed() {
			v := lookup(bundles, b.Name)
			f.finish(b, v)
			if !b.Failed() {
				f.applyTenancy(b, v)
			}
			if rv := lookup(v, fieldRollout); rv.Exists() && !b.Failed() {
				r, err := rolloutFor(rv, c, fieldRollout)
				if err != nil {
					b.Errors = append(b.Errors, AsDiagnostics(err)...)
				}
				b.Rollout = r
			}
		}
	}

	plan.Bundles = orderBundles(selected, f.bundles)
	attribute(plan.Bundles, c.Name)
	return plan, nil
}

// attribute names the bundle (unless the problem is another's: a
// dependency cycle) and the cluster in the bundles' problems. A bundle
// that does not match the schema fails the same way for every cluster; its
// problems name none.
func attribute(bundles []*Bundle, cluster string) {
	for _, b := range bundles {
		for _, d := range b.Errors {
			if d.Bundle == "" {
				d.Bundle = b.Name
			}
			if !b.invalid {
				d.Clusters = []string{cluster}
			}
		}
	}
}

// invalidEverywhere is why a bundle that fails in every plan (it does not
// match the schema, or breaks the tenancy policy) may or may not select
// the cluster.
const invalidEverywhere = "unknown: the bundle fails for every cluster (its errors say why)"

// selectBundle decides whether the bundle selects the cluster and which of
// its overlays match. It returns nil and the reasons when the bundle does
// not select the cluster; otherwise the bundle (with Errors when it could
// not be evaluated) and what its overlays add, by field.
func (f *Fleet) selectBundle(name string, v cue.Value, c Cluster) (*Bundle, map[string]cue.Value, []string) {
	b := &Bundle{Inputs: Inputs{Name: name}}
	if errs := f.bundleErrs[name]; len(errs) > 0 {
		b.Errors, b.invalid = cloneDiagnostics(errs), true
		b.SelectedBecause = []string{invalidEverywhere}
		return b, nil, nil
	}
	selected, because, err := targetMatches(v, c)
	if err != nil {
		b.Errors = bundleDiagnostics(err, lookup(v, "target"))
		b.SelectedBecause = []string{"unknown: the target could not be evaluated"}
		return b, nil, nil
	}
	if !selected {
		return nil, nil, because
	}
	b.SelectedBecause = because
	overlays, patch, err := matchOverlays(v, c)
	b.Overlays = overlays
	if err != nil {
		b.Errors = bundleDiagnostics(err, v)
	}
	return b, patch, nil
}

// fillOverlays unifies what the matched overlays add into the fleet, in one
// step for all bundles.
func (f *Fleet) fillOverlays(root cue.Value, patches map[string]map[string]cue.Value) cue.Value {
	if len(patches) == 0 {
		return root
	}
	patch := f.ctx.CompileString("{}")
	for _, name := range slices.Sorted(maps.Keys(patches)) {
		for _, field := range slices.Sorted(maps.Keys(patches[name])) {
			patch = patch.FillPath(cue.MakePath(cue.Str(fieldBundles), cue.Str(name), cue.Str(field)), patches[name][field])
		}
	}
	return root.Unify(patch)
}

// finish reads the bundle's concrete inputs from its value with the
// overlays applied, and computes their digest.
func (f *Fleet) finish(b *Bundle, v cue.Value) {
	if err := v.Validate(); err != nil {
		b.Errors = bundleDiagnostics(err, v)
		return
	}
	if f.slowDecode || !b.decodeInputsFast(v) {
		if err := b.decodeInputs(v); err != nil {
			b.Errors = bundleDiagnostics(err, v)
			return
		}
	}
	b.InputsDigest = b.digest()
}

// targetMatches evaluates the bundle's target for the cluster.
func targetMatches(v cue.Value, c Cluster) (bool, []string, error) {
	target := lookup(v, "target")
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
	// A value left open also fails each string that interpolates it
	// ("invalid interpolation: non-concrete value"): the open value is
	// the one to fix.
	if len(ds) > 1 {
		interpolation := func(d *Diagnostic) bool { return strings.HasPrefix(d.Message, "invalid interpolation: ") }
		if kept := slices.DeleteFunc(slices.Clone(ds), interpolation); len(kept) > 0 {
			ds = kept
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

// DropReasons lets go of why the plan's bundles were or were not selected
// and why their overlays matched (NotSelected, SelectedBecause, the
// overlays' Because): strings of each cluster's own, which a caller that
// holds a batch of plans and never shows the reasons (preview) need not
// keep.
func (p *Plan) DropReasons() {
	p.NotSelected = nil
	for _, b := range p.Bundles {
		b.SelectedBecause = nil
		for i := range b.Overlays {
			b.Overlays[i].Because = nil
		}
	}
}
