package fleet

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/token"
	"golang.org/x/crypto/ssh"
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
	// OnFailure is "halt" or "rollback"; ProgressDeadline a Go duration;
	// MaxFailures the failures of a wave past which it rolls back; Reverts
	// "waves" or "immediate".
	OnFailure        string `json:"onFailure,omitempty"`
	ProgressDeadline string `json:"progressDeadline,omitempty"`
	MaxFailures      int    `json:"maxFailures,omitempty"`
	Reverts          string `json:"reverts,omitempty"`
	// Approvers are the SSH public keys (authorized_keys lines) whose
	// signatures approve a wave; none: any approval on the approvals
	// branch counts.
	Approvers []string `json:"approvers,omitempty"`
	// Approving names every wave with approve: true, whichever the
	// cluster's (what `rollout approve` checks; not in plans).
	Approving []string `json:"-"`
}

// rolloutSpec is the Go form of #Rollout's plain fields.
type rolloutSpec struct {
	Bake    string `json:"bake"`
	Offline string `json:"offline"`
	Stale   string `json:"stale"`
	Paused  bool   `json:"paused"`
	// OnFailure, ProgressDeadline, MaxFailures and Reverts are the
	// rollout's answer to a failure and to a revert.
	OnFailure        string `json:"onFailure"`
	ProgressDeadline string `json:"progressDeadline"`
	MaxFailures      int    `json:"maxFailures"`
	Reverts          string `json:"reverts"`
	// Approvers are SSH public keys (authorized_keys lines).
	Approvers []string `json:"approvers"`
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
	r := &Rollout{Offline: spec.Offline, Paused: spec.Paused, Waves: []string{}, Approvers: spec.Approvers,
		OnFailure: spec.OnFailure, MaxFailures: spec.MaxFailures, Reverts: spec.Reverts}
	for i, key := range spec.Approvers {
		if _, _, err := ParseApprover(key); err != nil {
			return nil, diagnostic(fmt.Sprintf("%s.approvers[%d]", at, i), fmt.Sprintf(
				"not an SSH public key (an authorized_keys line such as \"ssh-ed25519 AAAA… ada@example.com\"): %v", err),
				userPos(lookup(v, "approvers")))
		}
	}
	for field, d := range map[string]*string{"bake": &spec.Bake, "stale": &spec.Stale, "progressDeadline": &spec.ProgressDeadline} {
		parsed, err := time.ParseDuration(*d)
		if err != nil {
			return nil, diagnostic(at+"."+field, err.Error(), userPos(lookup(v, field)))
		}
		*d = parsed.String()
	}
	r.Bake, r.Stale, r.ProgressDeadline = spec.Bake, spec.Stale, spec.ProgressDeadline
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
		if w.Approve {
			r.Approving = append(r.Approving, w.Name)
		}
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

// rolloutOf evaluates the fleet's rollout (bundle empty) or a bundle's own
// for a cluster; nil when there is none. A bundle's rollout is read as the
// bundle declares it, before overlays (the plan's own evaluation is the
// one that counts for the cluster itself).
func (f *Fleet) rolloutOf(c Cluster, bundle string) (*Rollout, error) {
	c = c.Normalized()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	path := []string{fieldRollout}
	if bundle != "" {
		path = []string{fieldBundles, bundle, fieldRollout}
	}
	if !lookupPath(f.planRoot, path).Exists() {
		return nil, nil
	}
	root := f.planRoot.FillPath(cue.MakePath(cue.Str(fieldCluster)), f.ctx.Encode(c))
	r, err := rolloutFor(lookupPath(root, path), c, strings.Join(path, "."))
	if err != nil {
		ds := AsDiagnostics(err)
		for _, d := range ds {
			d.Clusters = []string{c.Name}
			d.Bundle = bundle
		}
		return nil, ds
	}
	return r, nil
}

// ClusterRollouts is one cluster's place in the rollouts of a revision,
// as an agent's rollout gate needs it for every other cluster.
type ClusterRollouts struct {
	Cluster Cluster `json:"cluster"`
	// Fleet is the cluster's place in the fleet's rollout (nil: none).
	Fleet *Rollout `json:"fleet,omitempty"`
	// Bundles is its place in the rollouts of the bundles asked for that
	// have one of their own.
	Bundles map[string]*Rollout `json:"bundles,omitempty"`
	// Err says why the cluster has no place (no wave selects it, or its
	// identity is invalid): the gate leaves it out.
	Err string `json:"err,omitempty"`
}

// Rollouts evaluates the fleet's rollout, and the own rollouts of the
// given bundles, for every known cluster (as reported on the status
// branches) and every inventory cluster that is not among them.
func (f *Fleet) Rollouts(known []Cluster, bundles []string) []ClusterRollouts {
	seen := map[string]bool{}
	all := slices.Clone(known)
	for _, c := range known {
		seen[c.Name] = true
	}
	for _, c := range f.inventory {
		if !seen[c.Name] {
			all = append(all, c)
		}
	}
	out := make([]ClusterRollouts, 0, len(all))
	for _, c := range all {
		cr := ClusterRollouts{Cluster: c}
		var err error
		if cr.Fleet, err = f.rolloutOf(c, ""); err == nil {
			for _, b := range bundles {
				var r *Rollout
				if r, err = f.rolloutOf(c, b); err != nil {
					break
				}
				if r != nil {
					if cr.Bundles == nil {
						cr.Bundles = map[string]*Rollout{}
					}
					cr.Bundles[b] = r
				}
			}
		}
		if err != nil {
			cr.Err = err.Error()
		}
		out = append(out, cr)
	}
	return out
}

// lookupPath looks a path of field names up.
func lookupPath(v cue.Value, names []string) cue.Value {
	sels := make([]cue.Selector, len(names))
	for i, n := range names {
		sels[i] = cue.Str(n)
	}
	return v.LookupPath(cue.MakePath(sels...))
}

// ParseApprover reads one of a rollout's approvers: an authorized_keys
// line of one plain SSH public key and an optional comment — no options
// (an expiry or a forced command would be ignored, not honoured), no
// certificate (its validity and principals would not be checked), one
// line (a comment line could hide which key it is).
func ParseApprover(line string) (ssh.PublicKey, string, error) {
	if strings.ContainsAny(strings.TrimSpace(line), "\r\n") {
		return nil, "", errors.New("one key per entry, on one line")
	}
	key, comment, options, _, err := ssh.ParseAuthorizedKey([]byte(line))
	switch {
	case err != nil:
		return nil, "", err
	case len(options) > 0:
		return nil, "", fmt.Errorf("key options (%s) are not honoured here: give the key alone", strings.Join(options, ","))
	}
	if _, isCert := key.(*ssh.Certificate); isCert {
		return nil, "", errors.New("a certificate's validity and principals are not checked here: give the plain public key")
	}
	return key, comment, nil
}
