package agent

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/flotilla-gitops/flotilla/internal/version"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// publish writes the pass's status to the status branch when it changed
// (or the heartbeat is due). A failure is returned for the log and
// metrics; it never stops applying, and the next pass publishes again.
func (a *Agent) publish(ctx context.Context, p *Pass, now time.Time) error {
	if a.reporter == nil && a.notifier == nil {
		return nil
	}
	before := a.status
	switch {
	case p.Changed || p.Err != nil:
		st := a.statusOf(p, now)
		a.readiness(st, p, now)
		a.status = st
	case p.gate != nil && a.status != nil && rolloutChanged(a.status, p):
		// Still waiting, for other clusters now (or no longer): only the
		// rollout part changes.
		st := *a.status
		st.SeenRevision, st.Rollout = p.Revision, p.gate.status
		st.Phase = waitingPhase(st.Phase, p.gate)
		a.status = &st
	}
	if a.status == nil {
		return nil
	}
	for _, e := range eventsOf(before, a.status, p, now) {
		a.notifier.Send(e)
	}
	if a.reporter == nil {
		return nil
	}
	_, err := a.reporter.Publish(ctx, a.status, now)
	if d := a.reporter.Duplicate(); d != "" {
		a.log.Error(nil, "another agent reports as this cluster: its status is overwritten by turns", "cluster", a.status.Cluster.Name, "reason", d)
	}
	return err
}

// statusOf builds the status file of a pass: phases, counts, digests and
// messages only.
func (a *Agent) statusOf(p *Pass, now time.Time) *report.Status {
	st := &report.Status{
		Cluster:         p.Cluster,
		Agent:           version.Get().Version,
		AppliedRevision: a.fleetRevision,
		SeenRevision:    p.Revision,
		Phase:           report.ClusterReady,
	}
	if a.status != nil {
		st.Bundles = a.status.Bundles // a failed pass keeps the bundles as they were
	}
	if p.Err != nil {
		st.Phase, st.Message = report.ClusterFailed, p.Err.Error()
	}
	if p.gate != nil {
		st.Rollout = p.gate.status
	}
	if p.Result == nil {
		return st
	}
	previous := map[string]report.BundleStatus{}
	for _, b := range st.Bundles {
		previous[b.Name] = b
	}
	st.Bundles = nil
	for _, b := range p.Result.Bundles {
		bs := report.BundleStatus{
			Name: b.Name, Phase: b.Phase, Message: b.Message, Counts: b.Counts,
			RenderedDigest: p.digests[b.Name].rendered, InputsDigest: p.digests[b.Name].inputs,
			Revision: p.digests[b.Name].revision, LastTransitionTime: now,
		}
		if p.gate != nil {
			bs.Waiting = p.gate.held[b.Name]
			if _, back := p.gate.back[b.Name]; back {
				bs.RolledBack = p.Revision
			}
		}
		prev, seen := previous[b.Name]
		contentSince(&bs, prev, seen)
		if seen && prev.Phase == b.Phase {
			bs.LastTransitionTime = prev.LastTransitionTime
		}
		if b.Phase == apply.PhaseReady {
			at := now.UTC()
			bs.ReadySince = &at
			if seen && prev.Phase == apply.PhaseReady && prev.Revision == bs.Revision && prev.ReadySince != nil {
				bs.ReadySince = prev.ReadySince
			}
		}
		switch b.Phase {
		case apply.PhaseFailed, apply.PhaseSkipped:
			st.Phase = report.ClusterFailed
		case apply.PhaseProgressing, apply.PhaseDrifted:
			if st.Phase == report.ClusterReady {
				st.Phase = report.ClusterProgressing
			}
		}
		st.Bundles = append(st.Bundles, bs)
	}
	if p.Result.Guard != "" {
		st.Phase, st.Message = report.ClusterFailed, p.Result.Guard
	}
	if u := p.AgentUpdate; u != nil && st.Phase != report.ClusterFailed {
		st.AgentUpdate = u
		st.Phase = report.ClusterProgressing
		st.Message = "updating the agent to " + u.Image + ": the new agent reports by " + u.Deadline.Format(time.RFC3339) + ", or this cluster is Failed"
	}
	st.Phase = waitingPhase(st.Phase, p.gate)
	if st.Phase == report.ClusterRolledBack && st.Message == "" {
		st.Message = p.gate.status.Message
	}
	return st
}

// contentSince carries where the bundle's rendered objects began over from
// its last report while they stay the same, and starts them at its
// revision when they change (the objects before them began at the last
// report's contentSince). A bundle that did not render keeps them.
func contentSince(bs *report.BundleStatus, prev report.BundleStatus, seen bool) {
	switch {
	case !seen:
		bs.ContentSince = bs.Revision
	case bs.RenderedDigest == "" || bs.RenderedDigest == prev.RenderedDigest:
		bs.ContentSince, bs.PreviousContentSince = prev.ContentSince, prev.PreviousContentSince
		if bs.ContentSince == "" { // a report from before these fields
			bs.ContentSince = bs.Revision
		}
	default:
		bs.ContentSince, bs.PreviousContentSince = bs.Revision, cmp.Or(prev.ContentSince, prev.Revision)
	}
}

// waitingPhase is Waiting for a cluster that is Ready at what it applied
// while part of the tip waits in the rollout, and RolledBack for one that
// went back from the tip.
func waitingPhase(phase report.ClusterPhase, g *gate) report.ClusterPhase {
	if phase != report.ClusterReady && phase != report.ClusterWaiting && phase != report.ClusterRolledBack {
		return phase
	}
	switch {
	case g.rolledBack():
		return report.ClusterRolledBack
	case g.waiting():
		return report.ClusterWaiting
	}
	return report.ClusterReady
}

// rolloutChanged reports whether an idle pass changes the status's
// rollout part (the tip, whom it waits for, the state).
func rolloutChanged(st *report.Status, p *Pass) bool {
	a, b := st.Rollout, p.gate.status
	if a == nil || b == nil {
		return a != b || st.SeenRevision != p.Revision
	}
	return st.SeenRevision != p.Revision || a.State != b.State || a.HaltedBy != b.HaltedBy || a.Message != b.Message ||
		!slices.Equal(a.WaitingFor, b.WaitingFor)
}

// readiness records since when the cluster has been Ready at its applied
// revision (kept from the previous status while that holds), and its wave.
func (a *Agent) readiness(st *report.Status, p *Pass, now time.Time) {
	st.Wave = p.wave
	ready := func(p report.ClusterPhase) bool { return p == report.ClusterReady || p == report.ClusterWaiting }
	if !ready(st.Phase) {
		return
	}
	prev := a.status
	if prev != nil && ready(prev.Phase) && prev.AppliedRevision == st.AppliedRevision && prev.ReadySince != nil {
		st.ReadySince = prev.ReadySince
		return
	}
	at := now.UTC()
	st.ReadySince = &at
	// The cluster took the tip, and this agent saw it happen (not a
	// revision it found applied when it started): how long since the
	// commit, by wave.
	if prev != nil && prev.AppliedRevision != st.AppliedRevision && st.AppliedRevision == p.Revision && !p.committed.IsZero() {
		a.metrics.took.WithLabelValues(p.wave).Observe(max(0, now.Sub(p.committed).Seconds()))
	}
}
