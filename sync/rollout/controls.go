package rollout

import (
	"maps"
	"slices"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// Kept is what the rollout's pause and holds (the approvals branch's
// controls) keep of one cluster: the agents' gate and the companion's
// gated hydration read it alike.
type Kept struct {
	// Whole says why every bundle of the cluster keeps what it has (a
	// pause, or a hold of the cluster); "" when not.
	Whole string
	// Bundles says why each bundle held on its own keeps what it has.
	Bundles map[string]string
	// Pause and Holds are the controls that keep something of the cluster.
	Pause *report.Control
	Holds []report.Control
	// Until is the earliest end of one of them (zero: none ends by itself).
	Until time.Time
}

// Any reports whether the controls keep anything of the cluster.
func (k Kept) Any() bool { return k.Whole != "" || len(k.Bundles) > 0 }

// Reason is why a bundle keeps what it has, or "".
func (k Kept) Reason(bundle string) string {
	if k.Whole != "" {
		return k.Whole
	}
	return k.Bundles[bundle]
}

// KeptBy says what the controls keep of cluster, whose bundles are given,
// at now: a pause keeps everything, a hold of the cluster too, a hold of a
// bundle (everywhere or on this cluster) that bundle. Expired controls
// keep nothing.
func KeptBy(c report.Controls, cluster string, bundles []string, now time.Time) Kept {
	k := Kept{Bundles: map[string]string{}}
	pause, holds := c.Active(cluster, now)
	until := func(c report.Control) {
		if c.Until != nil && (k.Until.IsZero() || c.Until.Before(k.Until)) {
			k.Until = *c.Until
		}
	}
	if pause != nil {
		k.Pause, k.Whole = pause, "the rollout is paused "+pause.Why()
		until(*pause)
	}
	for _, h := range holds {
		why := h.Target() + " is held " + h.Why()
		hit := false
		if h.Bundle == "" {
			hit = true
			if k.Whole == "" {
				k.Whole = why
			}
		}
		for _, b := range bundles {
			if h.Bundle != "" && h.Holds(cluster, b) {
				hit = true
				if _, ok := k.Bundles[b]; !ok {
					k.Bundles[b] = why
				}
			}
		}
		if hit {
			k.Holds = append(k.Holds, h)
			until(h)
		}
	}
	return k
}

// RunningOf is what a cluster runs, as its status says: each bundle, and
// whether it is Ready there.
func RunningOf(st *report.Status) fleet.Running {
	r := fleet.Running{Cluster: st.Cluster, Bundles: map[string]bool{}, Versions: map[string]fleet.BundleVersion{}}
	for _, b := range st.Bundles {
		r.Bundles[b.Name] = b.Phase == apply.PhaseReady
		if b.Revision != "" {
			r.Versions[b.Name] = fleet.BundleVersion{Revision: b.Revision, ContentSince: b.ContentSince, PreviousContentSince: b.PreviousContentSince}
		}
	}
	return r
}

// Others is what the clusters other than me run that reported within the
// stale time of me's plan's rollout (its default without one): what the
// invariants' availability rules count (fleet.Availability.Wait), for the
// agents' gate and the companion's.
func Others(statuses map[string]*report.Status, plan *fleet.Plan, now time.Time) []fleet.Running {
	stale := 30 * time.Minute // the schema's default
	if s, err := SettingsOf(plan.Rollout); err == nil && s.Stale > 0 {
		stale = s.Stale
	}
	me := plan.Cluster.Name
	var out []fleet.Running
	for _, name := range slices.Sorted(maps.Keys(statuses)) {
		st := statuses[name]
		if name == me || report.StandingOf(*st, now, stale) == report.StandingStale {
			continue
		}
		out = append(out, RunningOf(st))
	}
	return out
}
