package agent

import (
	"context"
	"time"

	"github.com/flotilla-gitops/flotilla/internal/version"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// publish writes the pass's status to the status branch when it changed
// (or the heartbeat is due). A failure is returned for the log and
// metrics; it never stops applying, and the next pass publishes again.
func (a *Agent) publish(ctx context.Context, p *Pass, now time.Time) error {
	if a.reporter == nil {
		return nil
	}
	if p.Changed || p.Err != nil {
		st := a.statusOf(p, now)
		a.readiness(st, p, now)
		a.status = st
	}
	if a.status == nil {
		return nil
	}
	_, err := a.reporter.Publish(ctx, a.status, now)
	return err
}

// statusOf builds the status file of a pass: phases, counts, digests and
// messages only.
func (a *Agent) statusOf(p *Pass, now time.Time) *report.Status {
	st := &report.Status{
		Cluster:         p.Cluster,
		Agent:           version.Get().Version,
		AppliedRevision: a.appliedRevision,
		SeenRevision:    p.Revision,
		Phase:           report.ClusterReady,
	}
	if a.status != nil {
		st.Bundles = a.status.Bundles // a failed pass keeps the bundles as they were
	}
	if p.Err != nil {
		st.Phase, st.Message = report.ClusterFailed, p.Err.Error()
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
			LastTransitionTime: now,
		}
		if prev, ok := previous[b.Name]; ok && prev.Phase == b.Phase {
			bs.LastTransitionTime = prev.LastTransitionTime
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
	return st
}

// readiness records since when the cluster has been Ready at its applied
// revision (kept from the previous status while that holds), and its wave.
func (a *Agent) readiness(st *report.Status, p *Pass, now time.Time) {
	st.Wave = p.wave
	if st.Phase != report.ClusterReady {
		return
	}
	if prev := a.status; prev != nil && prev.Phase == report.ClusterReady && prev.AppliedRevision == st.AppliedRevision && prev.ReadySince != nil {
		st.ReadySince = prev.ReadySince
		return
	}
	at := now.UTC()
	st.ReadySince = &at
}
