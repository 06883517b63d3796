package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/identity"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/rollout"
)

// The rollout gate (issue 15). When the tip's fleet has waves, the agent
// reads every cluster's status branch and decides with rollout.Decide
// whether its wave may take the tip. A rollout group is the fleet's
// rollout (every bundle without one of its own, group "") or one bundle's
// own rollout (group = the bundle's name); each is decided apart, so a
// bundle with `rollout: waves: []` goes everywhere at once while the rest
// of the tip waits. A bundle whose group may not take the tip keeps the
// revision its inventory records: it is rendered again from that
// revision, so drift correction keeps running on what is applied, and
// nothing is applied or pruned from the tip for it.

// ErrRolloutNeedsStatus is returned when the fleet has waves and the agent
// publishes no status: it could neither read the others nor be read.
var ErrRolloutNeedsStatus = errors.New("the fleet has rollout waves, which agents decide from each other's status branches: run the agent with a status repository")

// gate is what the rollout lets this cluster do with the tip.
type gate struct {
	// status is the fleet rollout's, for the status file.
	status *report.RolloutStatus
	// held: bundle → why it keeps its revision.
	held map[string]string
	// back: bundle → the revision it goes back to, from the tip it
	// failed at (onFailure: rollback); such a bundle is held too.
	back map[string]string
	// key changes when what is allowed changes: the agent applies again.
	key string
	// until is the earliest end of a bake (or of a control) the cluster
	// waits for.
	until time.Time
	// watch says the cluster is at the tip in a rollout that rolls back
	// whose wave has not settled: a wave-mate's failure would send it
	// back, so its passes run the gate even with nothing new to apply.
	watch bool
}

// waiting reports whether something of the tip waits.
func (g *gate) waiting() bool {
	return g != nil && len(g.held) > 0
}

// rolledBack reports whether the cluster went back from the tip.
func (g *gate) rolledBack() bool {
	return g != nil && len(g.back) > 0
}

// decideRollout runs the gate for the tip's plan: the rollout groups'
// waves (when the fleet has some), the bundles that went back from the
// tip (onFailure: rollback), and the pause and holds on the approvals
// branch. readInventories gives the cluster's inventories (the revision
// each bundle is at); it is only called when one of these needs it, so a
// fleet without any costs nothing but the read of the approvals branch.
func (a *Agent) decideRollout(ctx context.Context, dir string, plan *fleet.Plan, tip rollout.Tip,
	readInventories func() (map[string]*apply.Inventory, error), now time.Time) (*gate, error) {
	revision := tip.Revision
	rg := rollout.GroupsOf(plan)
	fleetWaves := []string{}
	if plan.Rollout != nil {
		fleetWaves = plan.Rollout.Waves
	}
	g := &gate{held: map[string]string{}, back: map[string]string{},
		status: &report.RolloutStatus{Revision: revision, Waves: fleetWaves, State: report.RolloutApplied, Revert: tip.Revert}}
	if rg.Gated && a.reporter == nil {
		return nil, ErrRolloutNeedsStatus
	}
	controls, err := a.readControls(ctx)
	if err != nil && rg.Gated {
		return nil, err
	}
	if err != nil {
		// Without waves, applying never waited for the status repository:
		// it does not now. The pause and holds last read still hold.
		a.log.Error(err, "the pause and holds of the rollout could not be read: the last read stand", "cluster", plan.Cluster.Name)
		controls = cmp.Or(a.cache.controls, &report.ControlBranch{})
	}
	a.cache.controls = controls
	pause, holds := controls.Controls.Active(plan.Cluster.Name, now)

	// Where this cluster's bundles are (when something needs it); bundles
	// the tip no longer has are the fleet's rollout's to delete.
	var inv map[string]*apply.Inventory
	if rg.Gated || pause != nil || len(holds) > 0 || rollsBack(rg) || len(plan.Availability) > 0 {
		if inv, err = readInventories(); err != nil {
			return nil, err
		}
	}
	for name := range inv {
		if plan.Bundle(name) == nil {
			rg.Members[""] = append(rg.Members[""], name)
		}
	}
	var bundles []string
	for _, members := range rg.Members {
		bundles = append(bundles, members...)
	}
	kept := rollout.KeptBy(controls.Controls, plan.Cluster.Name, bundles, now)

	var statuses map[string]*report.Status
	if rg.Gated {
		if statuses, err = a.decideGroups(ctx, dir, plan, tip, rg, inv, controls.Approvals, g, now); err != nil {
			return nil, err
		}
	} else {
		g.status.Message = "no waves: everywhere at once"
	}
	if err := a.keepAvailable(ctx, plan, inv, statuses, g, now); err != nil {
		return nil, err
	}
	g.rolledBackBefore(inv, revision)
	g.keepReasons(a.status)
	g.control(rg, kept)
	g.setKey()
	return g, nil
}

// setKey keys what the gate lets through: the tip, the bundles held, and
// the revisions those going back go to.
func (g *gate) setKey() {
	g.key = g.status.Revision + "|" + strings.Join(slices.Sorted(maps.Keys(g.held)), ",") + "|" + fmt.Sprint(g.back)
}

// readControls reads the approvals branch (approvals, pause, holds): in
// the fleet repository when the poll's ref advertisement has it — read
// only when its tip moved since the last read, so that a fleet commit
// costs the Git host nothing more for it — or else in the status
// repository (an install that keeps it there, where every read costs an
// advertisement of all the status branches): none without one.
func (a *Agent) readControls(ctx context.Context) (*report.ControlBranch, error) {
	branch := cmp.Or(a.opts.ApprovalsBranch, report.DefaultApprovalsBranch)
	if tip, ok := a.src.Seen(branch); ok {
		if last := a.cache.controls; last != nil && last.Commit.String() == tip {
			return last, nil
		}
		auth, err := a.opts.Source.Auth.Method(a.opts.Source.URL)
		if err != nil {
			return nil, err
		}
		cb, err := report.ReadControlBranch(ctx, a.opts.Source.URL, branch, auth)
		if err != nil {
			return nil, fmt.Errorf("reading the approvals branch of the fleet repository: %w", err)
		}
		return cb, nil
	}
	if a.reporter == nil {
		return &report.ControlBranch{}, nil
	}
	cb, err := report.ReadControlBranch(ctx, a.opts.Status.URL, branch, a.opts.Status.Auth)
	if err != nil {
		return nil, fmt.Errorf("reading the approvals branch: %w", err)
	}
	return cb, nil
}

// decideGroups decides each rollout group from what the others say and
// where each stands in the tip's rollouts; a group that may not apply
// holds its bundles.
func (a *Agent) decideGroups(ctx context.Context, dir string, plan *fleet.Plan, tip rollout.Tip, rg rollout.Groups,
	inv map[string]*apply.Inventory, approvals []report.Approval, g *gate, now time.Time) (map[string]*report.Status, error) {
	statuses, places, err := a.others(ctx, dir, plan, tip.Revision, rg.Owned)
	if err != nil {
		return nil, err
	}
	approved := rollout.ApprovalsOf(approvals, tip.Revision)
	for _, name := range slices.Sorted(maps.Keys(rg.Rollouts)) {
		me := rollout.Cluster{Name: plan.Cluster.Name, Reported: true, ReportedAt: now,
			Revision: groupRevision(rg.Members[name], plan, inv, tip.Revision, name == "")}
		d, err := rollout.DecideGroup(me, rg.Rollouts[name], name, places, statuses, approved, tip, now)
		if err != nil {
			return nil, err
		}
		g.record(name, d, rg.Members[name], inv)
		g.watch = g.watch || (d.Apply && !d.Settled && progressDeadline(rg.Rollouts[name]) > 0)
	}
	return statuses, nil
}

// keepAvailable holds the bundles that the fleet's invariants say must
// stay Ready elsewhere while this cluster takes a new revision of them
// (fleet.Availability), when the other clusters' status branches say too
// few do: the cluster waits, naming the invariant. statuses are the other
// clusters' when the waves read them already. A bundle new here, or at
// the tip already, takes nothing down and is not held.
func (a *Agent) keepAvailable(ctx context.Context, plan *fleet.Plan, inv map[string]*apply.Inventory,
	statuses map[string]*report.Status, g *gate, now time.Time) error {
	if len(plan.Availability) == 0 || a.reporter == nil {
		return nil
	}
	if statuses == nil {
		snap, err := a.statuses.Read(ctx)
		if err != nil {
			return fmt.Errorf("reading the status branches for the fleet's invariants: %w", err)
		}
		statuses = map[string]*report.Status{}
		for i := range snap.Statuses {
			if s := &snap.Statuses[i]; s.Cluster.Name != plan.Cluster.Name {
				statuses[s.Cluster.Name] = s
			}
		}
	}
	running := rollout.Others(statuses, plan, now)
	for _, rule := range plan.Availability {
		i, held := inv[rule.Bundle], g.held[rule.Bundle] != ""
		if held || i == nil || i.Revision == g.status.Revision {
			continue
		}
		if why := rule.Wait(plan.Cluster, running); why != "" {
			g.held[rule.Bundle] = why
			if g.status.State == report.RolloutApplied {
				g.status.State, g.status.Message = report.RolloutWaiting, why
			}
		}
	}
	return nil
}

// rollsBack reports whether a rollout group goes back on failure.
func rollsBack(rg rollout.Groups) bool {
	for _, r := range rg.Rollouts {
		if r != nil && r.OnFailure == rollout.OnFailureRollback {
			return true
		}
	}
	return false
}

// rolledBackBefore holds the bundles that went back from the tip in an
// earlier pass (their inventories say so): the tip is not tried again,
// and a newer commit starts over.
func (g *gate) rolledBackBefore(inv map[string]*apply.Inventory, revision string) {
	for name, i := range inv {
		if i.RolledBack != revision || revision == "" {
			continue
		}
		g.back[name] = i.Revision
		g.held[name] = fmt.Sprintf("rolled back from %s to %s: not tried again until a newer commit", gitrev.Short(revision), gitrev.Short(i.Revision))
	}
	if len(g.back) > 0 {
		g.status.State = report.RolloutRolledBack
		g.status.RolledBack = slices.Sorted(maps.Keys(g.back))
		if !strings.HasPrefix(g.status.Message, "rolled back") {
			g.status.Message = fmt.Sprintf("rolled back from %s: %s", gitrev.Short(revision), strings.Join(g.status.RolledBack, ", "))
		}
	}
}

// keepReasons keeps, for bundles that went back from the tip in an
// earlier pass, the reason the status gave then (why they failed), which
// the inventory does not record.
func (g *gate) keepReasons(prev *report.Status) {
	if len(g.back) == 0 || prev == nil || prev.Rollout == nil || prev.Rollout.Revision != g.status.Revision ||
		prev.Rollout.State != report.RolloutRolledBack {
		return
	}
	g.status.Message = prev.Rollout.Message
	for _, b := range prev.Bundles {
		if _, ok := g.back[b.Name]; ok && b.RolledBack == g.status.Revision && b.Waiting != "" {
			g.held[b.Name] = b.Waiting
		}
	}
}

// control holds what the pause and the holds on the approvals branch
// keep (rollout.KeptBy): with a pause, every bundle; with a hold, the
// bundles it names. The cluster keeps what it has, drift correction
// included.
func (g *gate) control(rg rollout.Groups, kept rollout.Kept) {
	if !kept.Any() {
		return
	}
	for _, members := range rg.Members {
		for _, b := range members {
			if _, ok := g.held[b]; !ok && kept.Reason(b) != "" {
				g.held[b] = kept.Reason(b)
			}
		}
	}
	if !kept.Until.IsZero() && (g.until.IsZero() || kept.Until.Before(g.until)) {
		g.until = kept.Until
	}
	g.status.Paused, g.status.Held = kept.Pause, kept.Holds
	if g.status.State != report.RolloutRolledBack {
		var msgs []string
		if kept.Whole != "" {
			msgs = append(msgs, kept.Whole)
		}
		for _, b := range slices.Sorted(maps.Keys(kept.Bundles)) {
			if !slices.Contains(msgs, kept.Bundles[b]) {
				msgs = append(msgs, kept.Bundles[b])
			}
		}
		g.status.State, g.status.Message = report.RolloutWaiting, strings.Join(msgs, "; ")
	}
}

// others reads the other clusters' statuses and places every known
// cluster (them and this one) in the tip's rollouts.
func (a *Agent) others(ctx context.Context, dir string, plan *fleet.Plan, revision string, owned []string) (map[string]*report.Status, []fleet.ClusterRollouts, error) {
	snap, err := a.statuses.Read(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the status branches: %w", err)
	}
	statuses := map[string]*report.Status{}
	var known []fleet.Cluster
	for i := range snap.Statuses {
		s := &snap.Statuses[i]
		if s.Cluster.Name == plan.Cluster.Name {
			continue
		}
		statuses[s.Cluster.Name] = s
		known = append(known, s.Cluster)
	}
	known = append(known, plan.Cluster)
	places, err := a.rollouts(ctx, dir, revision, known, owned)
	if err != nil {
		return nil, nil, err
	}
	return statuses, places, nil
}

// record notes a group's decision on the gate: the end of a bake to look
// again at, the fleet group's state for the status, and, when the group
// may not apply, its bundles as held (and, when its wave failed, going
// back to the revisions they had).
func (g *gate) record(name string, d rollout.Decision, members []string, inv map[string]*apply.Inventory) {
	if !d.Until.IsZero() && (g.until.IsZero() || d.Until.Before(g.until)) {
		g.until = d.Until
	}
	if name == "" {
		g.status.Message = d.Reason
		switch {
		case d.RollBack:
			g.status.State, g.status.HaltedBy = report.RolloutRolledBack, d.Halted
		case d.Halted != "":
			g.status.State, g.status.HaltedBy = report.RolloutHalted, d.Halted
		case !d.Apply:
			g.status.State, g.status.WaitingFor, g.status.AwaitsApproval = report.RolloutWaiting, d.WaitingFor, d.Approval
			if !d.Until.IsZero() {
				until := d.Until.UTC()
				g.status.Until = &until
			}
		}
	}
	if d.Apply {
		return
	}
	for _, b := range members {
		g.held[b] = d.Reason
		if i := inv[b]; d.RollBack && i != nil && i.Revision == g.status.Revision && i.Previous != "" {
			g.back[b] = i.Previous // the wave failed: back to what it had
		}
	}
}

// rollouts evaluates every known cluster's place in the tip's rollouts
// (in a sandbox worker when the agent has a pool), once for a tip and a
// set of identities: polls while waiting reuse it.
func (a *Agent) rollouts(ctx context.Context, dir, revision string, known []fleet.Cluster, owned []string) ([]fleet.ClusterRollouts, error) {
	var key strings.Builder
	key.WriteString(revision + "|" + strings.Join(owned, ",") + "|")
	for _, c := range known {
		key.WriteString(identity.Key(c) + ";")
	}
	if a.cache.places != nil && a.cache.placesKey == key.String() {
		return a.cache.places, nil
	}
	places, err := a.eval.Rollouts(ctx, dir, known, owned)
	if err != nil {
		return nil, err
	}
	a.cache.places, a.cache.placesKey = places, key.String()
	a.cache.placesEvaluation++
	return places, nil
}

// groupRevision is the tip when every bundle of the group is at it, as
// the inventories say (and, for the fleet's group, nothing is left to
// prune): the cluster has taken the tip, and keeps it.
func groupRevision(members []string, plan *fleet.Plan, inv map[string]*apply.Inventory, revision string, fleetGroup bool) string {
	for _, b := range members {
		i := inv[b]
		if plan.Bundle(b) == nil && fleetGroup && i != nil {
			return "" // still to be pruned at the tip
		}
		if i == nil || i.Revision != revision {
			return ""
		}
	}
	return revision
}

// heldBundles renders the bundles the gate holds from the revisions their
// inventories record (or, going back from the tip, the revisions they
// had), and puts them in place of the tip's in bundles (or
// after them, for bundles the tip no longer has). A held bundle that was
// never applied is left out: it is new at the tip and waits. A bundle
// that cannot be rendered at its revision fails the pass: nothing of the
// tip is applied and nothing pruned. It returns the held revisions.
func (a *Agent) heldBundles(ctx context.Context, c fleet.Cluster, g *gate, bundles []apply.Bundle, inv map[string]*apply.Inventory) ([]apply.Bundle, []string, error) {
	byRevision := map[string][]string{}
	for b := range g.held {
		if rev := g.back[b]; rev != "" {
			byRevision[rev] = append(byRevision[rev], b)
		} else if i := inv[b]; i != nil && i.Revision != "" {
			byRevision[i.Revision] = append(byRevision[i.Revision], b)
		}
	}
	held := map[string]apply.Bundle{}
	var revisions []string
	for _, rev := range slices.Sorted(maps.Keys(byRevision)) {
		rendered, err := a.keepAt(ctx, c, rev, byRevision[rev])
		if err != nil {
			return nil, nil, err
		}
		revisions = append(revisions, rev)
		for _, b := range rendered {
			if _, ok := g.back[b.Name]; ok {
				b.RolledBack = g.status.Revision // recorded: the tip is not tried again
			}
			held[b.Name] = b
		}
	}
	var out []apply.Bundle
	for _, b := range bundles {
		if _, ok := g.held[b.Name]; !ok {
			out = append(out, b)
		} else if h, ok := held[b.Name]; ok {
			out = append(out, h)
			delete(held, b.Name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(held)) {
		out = append(out, held[name])
	}
	return out, revisions, nil
}

// keepAt renders the named bundles as the fleet at rev plans them for the
// cluster: the same steps as the tip's (atRevision, plan, renderAt).
func (a *Agent) keepAt(ctx context.Context, c fleet.Cluster, rev string, names []string) ([]apply.Bundle, error) {
	what := strings.Join(names, ", ")
	co, err := a.atRevision(ctx, rev, false)
	if err != nil {
		return nil, fmt.Errorf("keeping %s at %s while the tip waits: %w", what, gitrev.Short(rev), err)
	}
	plan, err := a.eval.Plan(ctx, co.Dir, c)
	if err != nil {
		return nil, fmt.Errorf("keeping %s at %s: the fleet there does not evaluate for %s: %w", what, gitrev.Short(rev), c.Name, err)
	}
	var missing []string
	for _, n := range names {
		if plan.Bundle(n) == nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("keeping %s at %s: not selected for %s there any more", strings.Join(missing, ", "), gitrev.Short(rev), c.Name)
	}
	rendered, err := a.renderAt(ctx, co, plan, func(b string) bool { return slices.Contains(names, b) })
	if err != nil {
		return nil, fmt.Errorf("keeping bundles at %s: %w", gitrev.Short(rev), err)
	}
	return rendered, nil
}

// waitFor shortens the wait before the next pass to the end of a bake.
func (g *gate) waitFor(wait time.Duration, now time.Time) time.Duration {
	if g == nil || g.until.IsZero() {
		return wait
	}
	if d := g.until.Sub(now) + time.Second; d > 0 && d < wait {
		return d
	}
	return wait
}
