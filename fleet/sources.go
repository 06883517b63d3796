package fleet

import (
	"encoding/json"
	"slices"

	"cuelang.org/go/cue/token"

	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

// SourceCheck checks the source of every planned bundle with check — once
// per distinct source, however many clusters share it — and reports each
// failure once per bundle and source: positioned at the bundle's source
// field in the fleet, naming the clusters that get it. vet gives the check
// (render.CheckSource: the paths are in the repository, of the right kind),
// so that a bundle that cannot render anywhere fails before it reaches a
// cluster. Bundles that failed to plan are left out (already a problem).
// Plans are added one at a time, as they are made; none is held.
type SourceCheck struct {
	f       *Fleet
	check   func(spec.Source) error
	checked map[string]error
	found   map[sourceKey][]*Diagnostic
	ds      Diagnostics
}

type sourceKey struct{ bundle, source string }

// CheckSources starts a SourceCheck with check.
func (f *Fleet) CheckSources(check func(spec.Source) error) *SourceCheck {
	return &SourceCheck{f: f, check: check, checked: map[string]error{}, found: map[sourceKey][]*Diagnostic{}}
}

// Add checks the sources of one cluster's plan.
func (sc *SourceCheck) Add(p *Plan) {
	for _, b := range p.Bundles {
		if b.Failed() {
			continue
		}
		data, err := json.Marshal(b.Source)
		if err != nil {
			continue
		}
		err, done := sc.checked[string(data)]
		if !done {
			err = sc.check(b.Source)
			sc.checked[string(data)] = err
		}
		if err == nil {
			continue
		}
		k := sourceKey{b.Name, string(data)}
		if d := sc.found[k]; d != nil {
			for _, d := range d {
				if !slices.Contains(d.Clusters, p.Cluster.Name) {
					d.Clusters = append(d.Clusters, p.Cluster.Name)
				}
			}
			continue
		}
		// One problem per line of a joined error: each is a path to fix.
		for _, e := range unjoin(err) {
			d := &Diagnostic{Clusters: []string{p.Cluster.Name}, Bundle: b.Name, Path: b.Source.Kind.String(),
				Message: e.Error(), Positions: positionsOf([]token.Pos{sc.f.sourcePos(b.Name, b.Source.Kind)})}
			sc.found[k] = append(sc.found[k], d)
			sc.ds = append(sc.ds, d)
		}
	}
}

// Problems are the sources that failed the check so far.
func (sc *SourceCheck) Problems() Diagnostics { return sc.ds }

// unjoin is the errors of errors.Join, or err alone.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok { //nolint:errorlint // the join itself, not what it wraps
		return j.Unwrap()
	}
	return []error{err}
}

// RenderProblems turns the bundles that did not render into problems of
// the fleet, each at the bundle's source field (its chart, kustomization,
// manifests or resources), merged across the clusters they fail for.
// failed gives, per plan, the failed bundles and why; bundles that failed
// to plan are left out (already a problem). The messages should not name
// the cluster (for the merge).
func (f *Fleet) RenderProblems(plans []*Plan, failed func(i int) map[string]string) Diagnostics {
	var ds Diagnostics
	for i, p := range plans {
		for name, msg := range failed(i) {
			b := p.Bundle(name)
			if b == nil || b.Failed() {
				continue
			}
			ds = append(ds, &Diagnostic{Clusters: []string{p.Cluster.Name}, Bundle: name, Path: b.Source.Kind.String(),
				Message: msg, Positions: positionsOf([]token.Pos{f.sourcePos(name, b.Source.Kind)})})
		}
	}
	return mergeByCluster(ds)
}

// sourcePos is where the bundle's source is written: its field in the
// bundle as the fleet declares it.
func (f *Fleet) sourcePos(bundle string, kind spec.Kind) token.Pos {
	return userPos(lookup(lookup(lookup(f.root, fieldBundles), bundle), kind.String()))
}
