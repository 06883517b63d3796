package rollout

import (
	"fmt"
	"slices"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/flotilla-gitops/flotilla/internal/trailer"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// What the agents' gate and the companion's gated hydration share: a
// revision's rollout groups, each known cluster's place and status in a
// group, and the decision of one cluster in one group. A rollout group is
// the fleet's rollout (every bundle without one of its own, group "") or
// one bundle's own rollout (group = the bundle's name); each is decided
// apart, so a bundle with `rollout: waves: []` goes everywhere at once
// while the rest of the revision waits.

// The rollout's answers to a failure and to a revert (fleet.cue's
// rollout.onFailure and rollout.reverts), and the trailer that marks a
// revert's commit.
const (
	OnFailureRollback = "rollback"
	RevertsImmediate  = "immediate"
	RevertTrailer     = "Flotilla-Revert"
)

// RevertOf is the revision a commit message says the commit reverts (its
// Flotilla-Revert trailer, as `flotilla rollout revert` writes it: a full
// hash), or "".
func RevertOf(message string) string {
	for _, v := range trailer.Values(message, RevertTrailer) {
		if gitrev.Full(v) {
			return v
		}
	}
	return ""
}

// SettingsOf converts a fleet rollout into the decision's settings.
func SettingsOf(r *fleet.Rollout) (Settings, error) {
	if r == nil {
		return Settings{}, nil
	}
	s := Settings{Waves: r.Waves, BlockOffline: r.Offline == "block", Paused: r.Paused,
		MaxUnavailable: r.MaxUnavailable, Approve: r.Approve, Rollback: r.OnFailure == OnFailureRollback, MaxFailures: r.MaxFailures}
	var err error
	if s.Bake, err = time.ParseDuration(r.Bake); err != nil {
		return s, err
	}
	if s.Stale, err = time.ParseDuration(r.Stale); err != nil {
		return s, err
	}
	return s, nil
}

// GroupOf is a bundle's rollout group.
func GroupOf(b *fleet.Bundle) string {
	if b.Rollout != nil {
		return b.Name
	}
	return ""
}

// Groups are a plan's rollouts: the fleet's (group "") and those of
// bundles with a rollout of their own, and the bundles of each.
type Groups struct {
	Rollouts map[string]*fleet.Rollout
	Members  map[string][]string
	// Owned are the bundles with waves of their own, whose places the
	// other clusters must be evaluated for.
	Owned []string
	// Gated says whether some group has waves.
	Gated bool
}

// GroupsOf is a cluster's plan's rollout groups.
func GroupsOf(plan *fleet.Plan) Groups {
	g := Groups{Rollouts: map[string]*fleet.Rollout{"": plan.Rollout}, Members: map[string][]string{}}
	for _, b := range plan.Bundles {
		name := GroupOf(b)
		if name != "" {
			g.Rollouts[name] = b.Rollout
		}
		g.Members[name] = append(g.Members[name], b.Name)
	}
	for name, r := range g.Rollouts {
		if r != nil && len(r.Waves) > 0 {
			g.Gated = true
			if name != "" {
				g.Owned = append(g.Owned, name)
			}
		}
	}
	slices.Sort(g.Owned)
	return g
}

// ClusterIn is what the gate of group knows of another cluster: its wave
// in the group's rollout and its status (fleet group: the cluster's
// applied revision and phase; a bundle's own group: that bundle's). ok is
// false when the cluster has no part in the group.
func ClusterIn(p fleet.ClusterRollouts, group string, st *report.Status, revision string) (Cluster, bool) {
	r := p.Fleet
	if group != "" {
		r = p.Bundles[group]
	}
	if r == nil || r.Wave == "" {
		return Cluster{}, false
	}
	c := Cluster{Name: p.Cluster.Name, Wave: r.WaveIndex}
	if st == nil {
		return c, true
	}
	c.Reported, c.ReportedAt, c.Seen = true, st.ReportedAt, st.SeenRevision
	if group == "" {
		c.Revision = st.AppliedRevision
		c.Ready = st.Phase == report.ClusterReady || st.Phase == report.ClusterWaiting
		if st.ReadySince != nil {
			c.ReadySince = *st.ReadySince
		}
		// Failed at the tip: failed while taking it (its fleet did not
		// evaluate, or it applied and failed), not while waiting nor for
		// want of Git.
		c.Failed = st.Phase == report.ClusterFailed && st.Rollout != nil &&
			st.Rollout.Revision == st.SeenRevision && st.Rollout.State == report.RolloutApplied
		if r := st.Rollout; r != nil && r.State == report.RolloutRolledBack && r.Revision == revision {
			c.Failed, c.Seen = true, revision // rolled back from the revision: failed at it
		}
		return c, true
	}
	i := slices.IndexFunc(st.Bundles, func(b report.BundleStatus) bool { return b.Name == group })
	if i < 0 {
		// Not the cluster's bundle at the tip, once it has seen the tip.
		return c, st.SeenRevision != revision
	}
	b := st.Bundles[i]
	c.Revision, c.Ready = b.Revision, b.Phase == apply.PhaseReady
	if b.ReadySince != nil {
		c.ReadySince = *b.ReadySince
	}
	c.Failed = (b.Revision == revision && (b.Phase == apply.PhaseFailed || b.Phase == apply.PhaseSkipped)) || b.RolledBack == revision
	if c.Failed {
		c.Seen = revision
	}
	return c, true
}

// Approved says whether a wave has an approval for a revision, from the
// given approvers (report.Approved over the approvals branch).
type Approved func(wave string, approvers []string) bool

// ApprovalsOf is the Approved of a revision over the approvals read from
// the approvals branch.
func ApprovalsOf(list []report.Approval, revision string) Approved {
	return func(wave string, approvers []string) bool {
		return report.Approved(list, wave, revision, approvers)
	}
}

// Tip is the revision a rollout is about: its hash, and the revision it
// reverts when its commit says so (RevertOf).
type Tip struct {
	Revision string
	Revert   string
}

// DecideGroup decides whether cluster me may take revision in the rollout
// of group r, from every known cluster's place (places) and status
// (statuses, by cluster name; me's own is me). me.Wave is set from r.
// A revert (Tip.Revert) goes through the waves without their bake, or
// everywhere at once with `reverts: "immediate"`.
func DecideGroup(me Cluster, r *fleet.Rollout, group string, places []fleet.ClusterRollouts,
	statuses map[string]*report.Status, approved Approved, tip Tip, now time.Time) (Decision, error) {
	revision := tip.Revision
	settings, err := SettingsOf(r)
	if err != nil {
		return Decision{}, err
	}
	if tip.Revert != "" {
		if r != nil && r.Reverts == RevertsImmediate {
			return Decision{Apply: true, Reason: fmt.Sprintf("a revert of %s: everywhere at once (reverts: immediate)", gitrev.Short(tip.Revert))}, nil
		}
		settings.Revert = true
	}
	me.Wave = -1
	if r != nil {
		me.Wave = r.WaveIndex
	}
	var clusters []Cluster
	for _, p := range places {
		if p.Err != "" {
			continue
		}
		if p.Cluster.Name == me.Name {
			clusters = append(clusters, me)
			continue
		}
		if c, ok := ClusterIn(p, group, statuses[p.Cluster.Name], revision); ok {
			clusters = append(clusters, c)
		}
	}
	return Decide(me, revision, settings, clusters, settings.Approve && approved(r.Wave, r.Approvers), now), nil
}
