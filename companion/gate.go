package companion

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/rollout"
	"github.com/flotilla-gitops/flotilla/sync/snapshot"
)

// Gate is a cluster, or some of its bundles, that the rollout holds at
// what was hydrated for it before: the revision's wave for it has not
// opened yet (earlier waves not Ready or not baked, no approval, paused,
// maxUnavailable), or an earlier wave failed at the revision (halted).
type Gate struct {
	Cluster string `json:"cluster"`
	// Bundles are the held bundles with a rollout of their own; empty:
	// the fleet's rollout holds the whole cluster.
	Bundles []string `json:"bundles,omitempty"`
	Reason  string   `json:"reason"`
	Halted  string   `json:"haltedBy,omitempty"`
}

// gate runs the agents' rollout gate for every planned cluster, from the
// status branches (written by `agent --observe` beside Flux, or by
// agents) and the approvals: a cluster whose fleet rollout may not take
// the revision keeps its whole folder as it was (nothing of the revision
// reaches it, deletions included), and a bundle whose own rollout may
// not keeps its paths. It returns the plans to hydrate.
func (o *Output) gate(ctx context.Context, opts Options, repo *snapshot.Repo, known *report.Known,
	plans []*fleet.Plan, revision string) ([]*fleet.Plan, error) {
	now := time.Now()
	if opts.Now != nil {
		now = opts.Now()
	}
	cb, err := controlBranch(ctx, opts.Status, opts.ApprovalsBranch, repo.Git)
	if err != nil {
		return nil, err
	}
	decisions, err := decide(plans, known, cb, tipOf(repo.Git, revision), now)
	if err != nil || decisions == nil {
		return plans, err
	}
	o.held = map[string]map[string]bool{}
	var out []*fleet.Plan
	for i, p := range plans {
		d := decisions[i]
		o.Gates = append(o.Gates, d.gates...)
		if d.whole {
			o.Keep = append(o.Keep, clusterDir(p.Cluster.Name)+"/")
			continue
		}
		if len(d.held) > 0 {
			o.held[p.Cluster.Name] = d.held
		}
		out = append(out, p)
	}
	return out, nil
}

// decision is the rollout gate's answer for one cluster: the fleet's
// rollout holds it whole, or its own rollouts hold some bundles.
type decision struct {
	whole bool
	held  map[string]bool
	gates []Gate
}

// decide runs the agents' gate (sync/rollout) for every plan at the
// revision, the pause and holds on the approvals branch (rollout.KeptBy)
// and the invariants' availability rules, as the agents do. nil: no
// rollout has waves, no control keeps anything and no invariant bounds
// availability.
func decide(plans []*fleet.Plan, known *report.Known, cb *report.ControlBranch, tip rollout.Tip, now time.Time) ([]decision, error) {
	groups := make([]rollout.Groups, len(plans))
	owned := map[string]bool{}
	gated := false
	for i, p := range plans {
		groups[i] = rollout.GroupsOf(p)
		gated = gated || groups[i].Gated
		for _, b := range groups[i].Owned {
			owned[b] = true
		}
	}
	controlled := cb.Controls.Pause != nil || len(cb.Controls.Holds) > 0 ||
		slices.ContainsFunc(plans, func(p *fleet.Plan) bool { return len(p.Availability) > 0 })
	if !gated && !controlled {
		return nil, nil
	}
	var all []fleet.ClusterRollouts
	placeOf := map[string]fleet.ClusterRollouts{}
	if gated {
		all = placesOf(plans, owned)
		for _, p := range all {
			placeOf[p.Cluster.Name] = p
		}
	}
	approved := rollout.ApprovalsOf(cb.Approvals, tip.Revision)
	out := make([]decision, len(plans))
	for i, p := range plans {
		d, err := decideCluster(p, groups[i], all, placeOf[p.Cluster.Name], known, approved, tip, now)
		if err != nil {
			return nil, err
		}
		out[i] = keptAvailable(keptBy(d, p, cb.Controls, now), p, known, tip.Revision, now)
	}
	return out, nil
}

// keptAvailable holds, as the agents do (fleet.Availability), a bundle
// whose new revision would leave too few other clusters of an invariant's
// group with it Ready, as the status branches say; a bundle the cluster
// already runs at the revision, or does not run yet, is not held.
func keptAvailable(d decision, p *fleet.Plan, known *report.Known, revision string, now time.Time) decision {
	if d.whole || len(p.Availability) == 0 {
		return d
	}
	running := rollout.Others(known.Statuses, p, now)
	mine := known.Statuses[p.Cluster.Name]
	for _, rule := range p.Availability {
		if d.held[rule.Bundle] || mine == nil {
			continue
		}
		i := slices.IndexFunc(mine.Bundles, func(b report.BundleStatus) bool { return b.Name == rule.Bundle })
		if i < 0 || mine.Bundles[i].Revision == revision {
			continue
		}
		if why := rule.Wait(p.Cluster, running); why != "" {
			d.held[rule.Bundle] = true
			d.gates = append(d.gates, Gate{Cluster: p.Cluster.Name, Bundles: []string{rule.Bundle}, Reason: why})
		}
	}
	return d
}

// decideCluster decides one cluster's rollout groups.
func decideCluster(p *fleet.Plan, groups rollout.Groups, all []fleet.ClusterRollouts, place fleet.ClusterRollouts,
	known *report.Known, approved rollout.Approved, tip rollout.Tip, now time.Time) (decision, error) {
	name := p.Cluster.Name
	d := decision{held: map[string]bool{}}
	if !groups.Gated {
		return d, nil
	}
	for _, group := range slices.Sorted(maps.Keys(groups.Rollouts)) {
		me, _ := rollout.ClusterIn(place, group, known.Statuses[name], tip.Revision)
		me.Name, me.Reported, me.ReportedAt = name, true, now
		dg, err := rollout.DecideGroup(me, groups.Rollouts[group], group, all, known.Statuses, approved, tip, now)
		if err != nil {
			return d, err
		}
		if dg.Apply {
			continue
		}
		if group == "" {
			return decision{whole: true, gates: []Gate{{Cluster: name, Reason: dg.Reason, Halted: dg.Halted}}}, nil
		}
		d.held[group] = true
		d.gates = append(d.gates, Gate{Cluster: name, Bundles: []string{group}, Reason: dg.Reason, Halted: dg.Halted})
	}
	return d, nil
}

// keptBy adds to a cluster's decision what the pause and holds keep of
// it: the whole cluster, or bundles.
func keptBy(d decision, p *fleet.Plan, controls report.Controls, now time.Time) decision {
	if d.whole {
		return d
	}
	var bundles []string
	for _, b := range p.Bundles {
		bundles = append(bundles, b.Name)
	}
	kept := rollout.KeptBy(controls, p.Cluster.Name, bundles, now)
	if kept.Whole != "" {
		return decision{whole: true, gates: []Gate{{Cluster: p.Cluster.Name, Reason: kept.Whole}}}
	}
	for _, b := range slices.Sorted(maps.Keys(kept.Bundles)) {
		if !d.held[b] {
			d.held[b] = true
			d.gates = append(d.gates, Gate{Cluster: p.Cluster.Name, Bundles: []string{b}, Reason: kept.Bundles[b]})
		}
	}
	return d
}

// tipOf is the revision as the gate sees it: a revert or not (its
// commit's trailer), as the agents read it.
func tipOf(repo *git.Repository, revision string) rollout.Tip {
	tip := rollout.Tip{Revision: revision}
	if repo == nil {
		return tip
	}
	if c, err := repo.CommitObject(plumbing.NewHash(revision)); err == nil {
		tip.Revert = rollout.RevertOf(c.Message)
	}
	return tip
}

// placesOf are the clusters' places in the rollouts, read from their plans
// at the revision — each plan carries its cluster's wave in the fleet's
// rollout and in its bundles' own — rather than from a second evaluation
// of the fleet for every cluster (fleet.Rollouts, which an agent needs
// because it plans only itself): at 1,000 clusters that evaluation took
// longer than the planning. A cluster that does not get a bundle has no
// place in its rollout, as for an agent once it has seen the revision.
func placesOf(plans []*fleet.Plan, owned map[string]bool) []fleet.ClusterRollouts {
	out := make([]fleet.ClusterRollouts, 0, len(plans))
	for _, p := range plans {
		if p == nil {
			continue
		}
		cr := fleet.ClusterRollouts{Cluster: p.Cluster, Fleet: p.Rollout}
		for _, b := range p.Bundles {
			if owned[b.Name] && b.Rollout != nil {
				if cr.Bundles == nil {
					cr.Bundles = map[string]*fleet.Rollout{}
				}
				cr.Bundles[b.Name] = b.Rollout
			}
		}
		out = append(out, cr)
	}
	return out
}

// HeldPaths are the held clusters and bundles as the hydrated commit and
// its note record them ("cluster", "cluster/bundle"), sorted.
func (o *Output) HeldPaths() []string {
	var out []string
	for _, g := range o.Gates {
		if len(g.Bundles) == 0 {
			out = append(out, g.Cluster)
		}
		for _, b := range g.Bundles {
			out = append(out, g.Cluster+"/"+b)
		}
	}
	slices.Sort(out)
	return out
}

// controlBranch reads the approvals branch (approvals, pause, holds): the
// status repository's when it has a URL and the branch, else the local
// fleet repository's (where the branch sits beside the fleet's commits
// when the status has a repository of its own).
func controlBranch(ctx context.Context, status report.Branches, branch string, local *git.Repository) (*report.ControlBranch, error) {
	if status.URL != "" {
		cb, err := report.ReadControlBranch(ctx, status.URL, branch, status.Auth)
		if err != nil || !cb.Commit.IsZero() || local == nil {
			return cb, err
		}
	}
	if local == nil {
		return &report.ControlBranch{}, nil
	}
	return report.ReadControlBranchRepository(local, branch)
}
