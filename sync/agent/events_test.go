package agent

import (
	"testing"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/notify"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// TestEventsOf: a drift put back is an event each time; a wave that comes
// to wait for an approval, and a rollout that halts, are events once per
// revision; a cluster that stays Failed is not an event again.
func TestEventsOf(t *testing.T) {
	now := time.Now()
	st := func(phase report.ClusterPhase, r *report.RolloutStatus) *report.Status {
		return &report.Status{Cluster: fleet.Cluster{Name: "eu-1"}, Phase: phase, SeenRevision: "r2", Rollout: r}
	}
	types := func(es []notify.Event) (out []notify.Type) {
		for _, e := range es {
			out = append(out, e.Type)
		}
		return out
	}
	drift := &Pass{Result: &apply.Result{Bundles: []apply.BundleResult{{Name: "web", Objects: []apply.ObjectAction{
		{Action: apply.ActionCorrected}, {Action: apply.ActionCorrected}, {Action: apply.ActionDrifted}}}}}}
	es := eventsOf(st(report.ClusterReady, nil), st(report.ClusterReady, nil), drift, now)
	if len(es) != 1 || es[0].Type != notify.DriftCorrected || es[0].Objects != 2 || es[0].Bundles[0] != "web" {
		t.Errorf("drift corrected: %+v", es)
	}
	approval := &report.RolloutStatus{Revision: "r2", State: report.RolloutWaiting, AwaitsApproval: true, Message: "wave eu waits for an approval"}
	if es := eventsOf(st(report.ClusterReady, nil), st(report.ClusterWaiting, approval), &Pass{}, now); len(es) != 1 || es[0].Type != notify.RolloutApproval {
		t.Errorf("waiting for an approval: %v", types(es))
	}
	if es := eventsOf(st(report.ClusterWaiting, approval), st(report.ClusterWaiting, approval), &Pass{}, now); len(es) != 0 {
		t.Errorf("still waiting for the same approval: %v", types(es))
	}
	halted := &report.RolloutStatus{Revision: "r2", State: report.RolloutHalted, HaltedBy: "canary-1"}
	if es := eventsOf(st(report.ClusterWaiting, approval), st(report.ClusterWaiting, halted), &Pass{}, now); len(es) != 1 || es[0].Type != notify.RolloutHalted {
		t.Errorf("halted: %v", types(es))
	}
	if es := eventsOf(st(report.ClusterFailed, nil), st(report.ClusterFailed, nil), &Pass{}, now); len(es) != 0 {
		t.Errorf("still Failed: %v", types(es))
	}
}
