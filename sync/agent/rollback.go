package agent

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/rollout"
)

// Rollback (issue 36). A bundle whose rollout says `onFailure:
// "rollback"` and which this pass applies at a new revision waits at most
// the rollout's progressDeadline to be Ready. If its apply fails or the
// deadline passes, the pass renders it again at the revision its
// inventory had before (Inventory.Previous: the bundle's last applied
// state, as held bundles are rendered) and syncs again, in the same pass:
// the cluster is back on its old objects within the deadline and the
// sync that follows it. The inventory records the revision it went back
// from (RolledBack), so no later pass — nor a restarted agent — tries it
// again; a newer commit starts over. A bundle new at the revision has
// nothing to go back to: it stays Failed, and nothing is pruned for it.

// progressDeadline is a rollout's, parsed (zero: none, or not rollback).
func progressDeadline(r *fleet.Rollout) time.Duration {
	if r == nil || r.OnFailure != rollout.OnFailureRollback {
		return 0
	}
	d, err := time.ParseDuration(r.ProgressDeadline)
	if err != nil || d <= 0 {
		return 10 * time.Minute // the schema's default; an evaluated fleet always has one
	}
	return d
}

// rolloutOf is the rollout a bundle follows: its own, or the fleet's.
func rolloutOf(plan *fleet.Plan, bundle string) *fleet.Rollout {
	if b := plan.Bundle(bundle); b != nil && b.Rollout != nil {
		return b.Rollout
	}
	return plan.Rollout
}

// boundByDeadline makes the readiness wait of each bundle that goes back
// on failure, and is applied at a new revision now, its rollout's
// progressDeadline.
func boundByDeadline(plan *fleet.Plan, bundles []apply.Bundle, inv map[string]*apply.Inventory, revision string) {
	for i := range bundles {
		b := &bundles[i]
		d := progressDeadline(rolloutOf(plan, b.Name))
		if d == 0 || b.Revision != revision {
			continue
		}
		if old := inv[b.Name]; old != nil && old.Revision == revision && old.Digest == b.Digest {
			continue // already applied in full: drift correction, not a new revision
		}
		b.Wait, b.Timeout.Duration = true, d
	}
}

// rollBack sends back the bundles that failed at the tip (Failed, or not
// Ready within the deadline) and go back on failure, and syncs again with
// them at the revisions they had; p.Result and the gate say so. It
// returns the bundles now synced.
func (a *Agent) rollBack(ctx context.Context, p *Pass, plan *fleet.Plan, bundles []apply.Bundle, before map[string]*apply.Inventory) ([]apply.Bundle, error) {
	back, why := map[string][]string{}, map[string]string{}
	for _, b := range bundles {
		r := p.Result.Bundle(b.Name)
		if b.Revision != p.Revision || progressDeadline(rolloutOf(plan, b.Name)) == 0 || r == nil || !failedAt(r) {
			continue
		}
		to := previousOf(before[b.Name], p.Revision)
		if to == "" {
			continue // new at the tip: nothing to go back to
		}
		back[to] = append(back[to], b.Name)
		why[b.Name] = errtext.Clean(r.Message)
	}
	if len(back) == 0 {
		return bundles, nil
	}
	rendered := map[string]apply.Bundle{}
	for _, rev := range slices.Sorted(maps.Keys(back)) {
		some, err := a.keepAt(ctx, plan.Cluster, rev, back[rev])
		if err != nil {
			return nil, err
		}
		for _, b := range some {
			b.RolledBack = p.Revision
			rendered[b.Name] = b
			p.gate.back[b.Name] = rev
			p.gate.held[b.Name] = fmt.Sprintf("rolled back from %s to %s: %s", gitrev.Short(p.Revision), gitrev.Short(rev), why[b.Name])
		}
	}
	out := slices.Clone(bundles)
	for i, b := range out {
		if r, ok := rendered[b.Name]; ok {
			out[i] = r
		}
	}
	names := slices.Sorted(maps.Keys(rendered))
	a.log.Info("rolling back", "cluster", plan.Cluster.Name, "from", gitrev.Short(p.Revision), "bundles", names)
	res, err := a.mgr.Sync(ctx, out)
	if err != nil {
		return nil, err
	}
	p.Result = res
	a.recordBundles(p, plan, out)
	st := p.gate.status
	st.State, st.RolledBack = report.RolloutRolledBack, names
	var reasons []string
	for _, n := range names {
		reasons = append(reasons, n+": "+why[n])
	}
	st.Message = fmt.Sprintf("rolled back from %s: %s", gitrev.Short(p.Revision), strings.Join(reasons, "; "))
	p.gate.setKey()
	return out, nil
}

// failedAt reports whether a bundle failed at the revision it was synced
// at: its apply failed, or it was not Ready within its wait.
func failedAt(r *apply.BundleResult) bool {
	return r.Phase == apply.PhaseFailed || (r.Phase == apply.PhaseProgressing && r.NotReady && r.SelfUpdate == nil)
}

// previousOf is the revision a bundle goes back to from revision: the one
// its inventory had before this pass, or, when that is already the
// revision (a pass before this one applied it), the one before.
func previousOf(inv *apply.Inventory, revision string) string {
	switch {
	case inv == nil:
		return ""
	case inv.Revision != revision:
		return inv.Revision
	case inv.Previous != revision:
		return inv.Previous
	}
	return ""
}
