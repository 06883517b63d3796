package companion

import (
	"context"
	"maps"
	"slices"
	"time"

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
func (o *Output) gate(ctx context.Context, opts Options, repo *snapshot.Repo, f *fleet.Fleet, known *report.Known,
	plans []*fleet.Plan, revision string) ([]*fleet.Plan, error) {
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
	if !gated {
		return plans, nil
	}
	places := f.Rollouts(known.Clusters, slices.Sorted(maps.Keys(owned)))
	placeOf := map[string]fleet.ClusterRollouts{}
	for _, p := range places {
		placeOf[p.Cluster.Name] = p
	}
	approved := approvalsReader(ctx, opts, repo, revision)
	now := time.Now()
	if opts.Now != nil {
		now = opts.Now()
	}
	o.held = map[string]map[string]bool{}
	var out []*fleet.Plan
	for i, p := range plans {
		name := p.Cluster.Name
		held := map[string]bool{}
		whole := false
		for _, group := range slices.Sorted(maps.Keys(groups[i].Rollouts)) {
			me, _ := rollout.ClusterIn(placeOf[name], group, known.Statuses[name], revision)
			me.Name, me.Reported, me.ReportedAt = name, true, now
			d, err := rollout.DecideGroup(me, groups[i].Rollouts[group], group, places, known.Statuses, approved, revision, now)
			if err != nil {
				return nil, err
			}
			if d.Apply {
				continue
			}
			if group == "" {
				o.Gates = append(o.Gates, Gate{Cluster: name, Reason: d.Reason, Halted: d.Halted})
				o.Keep = append(o.Keep, clusterDir(name)+"/")
				whole = true
				break
			}
			held[group] = true
			o.Gates = append(o.Gates, Gate{Cluster: name, Bundles: []string{group}, Reason: d.Reason, Halted: d.Halted})
		}
		if whole {
			continue
		}
		if len(held) > 0 {
			o.held[name] = held
		}
		out = append(out, p)
	}
	return out, nil
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

// approvalsReader reads the approvals once, when a wave first asks: from
// the status repository when it has a URL, else from the local
// repository's approvals branch.
func approvalsReader(ctx context.Context, opts Options, repo *snapshot.Repo, revision string) rollout.Approved {
	return rollout.ReadApprovals(func() ([]report.Approval, error) {
		if opts.Status.URL != "" {
			return report.ReadApprovals(ctx, opts.Status.URL, opts.ApprovalsBranch, opts.Status.Auth)
		}
		return report.ReadApprovalsRepository(repo.Git, opts.ApprovalsBranch)
	}, revision)
}
