package fleet

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/token"
)

// fieldRollout is the fleet's rollout (and a bundle's own).
const fieldRollout = "rollout"

// Rollout is where one cluster stands in a rollout: its wave, and the
// rollout's settings. A plan carries the fleet's; a bundle with a rollout
// of its own carries that one.
type Rollout struct {
	// Wave is the cluster's wave, WaveIndex its position (from 0) among
	// Waves. With no waves (everywhere at once) Wave is empty.
	Wave      string `json:"wave,omitempty"`
	WaveIndex int    `json:"waveIndex"`
	// Waves names every wave, in order.
	Waves []string `json:"waves"`
	// Because says which selector put the cluster in its wave.
	Because        []string `json:"because,omitempty"`
	MaxUnavailable int      `json:"maxUnavailable,omitempty"`
	Approve        bool     `json:"approve,omitempty"`
	// Bake and Stale are Go durations ("10m0s").
	Bake    string `json:"bake"`
	Stale   string `json:"stale"`
	Offline string `json:"offline"`
	Paused  bool   `json:"paused,omitempty"`
}

// rolloutSpec is the Go form of #Rollout's plain fields.
type rolloutSpec struct {
	Bake    string `json:"bake"`
	Offline string `json:"offline"`
	Stale   string `json:"stale"`
	Paused  bool   `json:"paused"`
}

// waveSpec is the Go form of #Wave's fields other than the selector.
type waveSpec struct {
	Name           string `json:"name"`
	MaxUnavailable int    `json:"maxUnavailable"`
	Approve        bool   `json:"approve"`
}

// rolloutFor evaluates a rollout (the fleet's, or a bundle's) for one
// cluster: the first wave whose selector matches it. A cluster that no
// wave selects is an error: it would never know when to apply (a last
// wave without a selector takes every cluster left). at is the rollout's
// path, for errors.
func rolloutFor(v cue.Value, c Cluster, at string) (*Rollout, error) {
	var spec rolloutSpec
	if err := v.Decode(&spec); err != nil {
		return nil, diagnosticFrom(at, err, v)
	}
	r := &Rollout{Offline: spec.Offline, Paused: spec.Paused, Waves: []string{}}
	for field, d := range map[string]string{"bake": spec.Bake, "stale": spec.Stale} {
		parsed, err := time.ParseDuration(d)
		if err != nil {
			return nil, diagnostic(at+"."+field, err.Error(), userPos(lookup(v, field)))
		}
		if field == "bake" {
			r.Bake = parsed.String()
		} else {
			r.Stale = parsed.String()
		}
	}
	iter, err := lookup(v, "waves").List()
	if err != nil {
		return nil, diagnosticFrom(at+".waves", err, v)
	}
	found := false
	for i := 0; iter.Next(); i++ {
		wv := iter.Value()
		wat := fmt.Sprintf("%s.waves[%d]", at, i)
		var w waveSpec
		if err := wv.Decode(&w); err != nil {
			return nil, diagnosticFrom(wat, err, wv)
		}
		if slices.Contains(r.Waves, w.Name) {
			return nil, diagnostic(wat+".name", fmt.Sprintf("wave %q is named twice", w.Name), userPos(lookup(wv, "name")))
		}
		r.Waves = append(r.Waves, w.Name)
		if found {
			continue
		}
		sel, err := decodeSelector(wv, wat)
		if err != nil {
			return nil, err
		}
		ok, why, err := sel.match(c)
		if err != nil {
			return nil, diagnostic(wat, err.Error(), userPos(wv))
		}
		if ok {
			found = true
			r.Wave, r.WaveIndex, r.Because = w.Name, i, why
			r.MaxUnavailable, r.Approve = w.MaxUnavailable, w.Approve
		}
	}
	if !found && len(r.Waves) > 0 {
		return nil, diagnostic(at+".waves", fmt.Sprintf(
			"cluster %s is in no wave of [%s]: end the waves with one without a selector (`{name: \"rest\"}`) to take every cluster left",
			c.Name, strings.Join(r.Waves, ", ")), userPos(lookup(v, "waves")))
	}
	return r, nil
}

// diagnosticFrom turns a decoding error into diagnostics at v's position.
func diagnosticFrom(at string, err error, v cue.Value) error {
	ds := fromCUE(err)
	for _, d := range ds {
		if d.Path == "" {
			d.Path = at
		}
		if len(d.Positions) == 0 {
			d.Positions = positionsOf([]token.Pos{userPos(v)})
		}
	}
	return ds
}

// RolloutOf evaluates only the fleet's rollout for a cluster: its wave,
// without planning its bundles. An agent waiting in a rollout calls it
// for every cluster it reads a status of, to know which waves come before
// its own. Nil without a rollout.
func (f *Fleet) RolloutOf(c Cluster) (*Rollout, error) {
	c = c.Normalized()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	rv := lookup(f.planRoot, fieldRollout)
	if !rv.Exists() {
		return nil, nil
	}
	root := f.planRoot.FillPath(cue.MakePath(cue.Str(fieldCluster)), f.ctx.Encode(c))
	r, err := rolloutFor(lookup(root, fieldRollout), c, fieldRollout)
	if err != nil {
		ds := AsDiagnostics(err)
		for _, d := range ds {
			d.Clusters = []string{c.Name}
		}
		return nil, ds
	}
	return r, nil
}
