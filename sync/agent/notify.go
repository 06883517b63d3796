package agent

import (
	"fmt"
	"time"

	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/notify"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// eventsOf are the events a pass makes, from the status before it and
// after: a change of phase into Failed, out of Failed, into a wave's wait
// for an approval or a halted rollout (once per revision), and each pass
// that put drifted objects back.
func eventsOf(before, after *report.Status, p *Pass, now time.Time) []notify.Event {
	event := func(t notify.Type, msg string, bundles []string) notify.Event {
		return notify.Event{Type: t, Cluster: after.Cluster.Name, Region: after.Cluster.Region, Time: now.UTC(),
			Revision: after.SeenRevision, Message: msg, Bundles: bundles}
	}
	var out []notify.Event
	wasFailed := before != nil && before.Phase == report.ClusterFailed
	switch {
	case after.Phase == report.ClusterFailed && !wasFailed:
		msg, failed := after.Message, []string{}
		for _, b := range after.Bundles {
			if b.Phase == apply.PhaseFailed || b.Phase == apply.PhaseSkipped {
				failed = append(failed, b.Name)
				if msg == "" {
					msg = fmt.Sprintf("bundle %s: %s", b.Name, b.Message)
				}
			}
		}
		out = append(out, event(notify.ClusterFailed, "Failed: "+msg, failed))
	case wasFailed && (after.Phase == report.ClusterReady || after.Phase == report.ClusterWaiting):
		out = append(out, event(notify.ClusterRecovered, "recovered: Ready at "+gitrev.Short(after.AppliedRevision), nil))
	}
	if p.Result != nil {
		corrected, bundles := 0, []string{}
		for _, b := range p.Result.Bundles {
			n := 0
			for _, o := range b.Objects {
				if o.Action == apply.ActionCorrected {
					n++
				}
			}
			if n > 0 {
				corrected += n
				bundles = append(bundles, b.Name)
			}
		}
		if corrected > 0 {
			e := event(notify.DriftCorrected, fmt.Sprintf("put back %d objects changed outside Git", corrected), bundles)
			e.Objects = corrected
			out = append(out, e)
		}
	}
	if r := after.Rollout; r != nil {
		var was *report.RolloutStatus
		if before != nil && before.Rollout != nil && before.Rollout.Revision == r.Revision {
			was = before.Rollout
		}
		if r.AwaitsApproval && (was == nil || !was.AwaitsApproval) {
			out = append(out, event(notify.RolloutApproval, r.Message, nil))
		}
		if r.State == report.RolloutHalted && (was == nil || was.State != report.RolloutHalted) {
			out = append(out, event(notify.RolloutHalted, r.Message, nil))
		}
	}
	return out
}
