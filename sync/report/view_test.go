package report

import (
	"slices"
	"testing"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
)

// TestRolloutOf: each wave's state from the clusters' status files, and
// what `status --wait` still waits for.
func TestRolloutOf(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	until := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	waves := []string{"canary", "eu", "rest", "late"}
	st := func(name, wave string, phase ClusterPhase, applied string, r RolloutStatus) Status {
		r.Revision, r.Waves = rev, waves
		return Status{Cluster: fleet.Cluster{Name: name}, Wave: wave, Phase: phase, AppliedRevision: applied, SeenRevision: rev, Rollout: &r}
	}
	statuses := []Status{
		st("c1", "canary", ClusterReady, rev, RolloutStatus{State: RolloutApplied}),
		st("e1", "eu", ClusterWaiting, "old", RolloutStatus{State: RolloutWaiting, Until: &until, Message: "bake"}),
		st("e2", "eu", ClusterFailed, "old", RolloutStatus{State: RolloutApplied}),
		st("r1", "rest", ClusterWaiting, "old", RolloutStatus{State: RolloutHalted, HaltedBy: "e2", Message: "halted"}),
		{Cluster: fleet.Cluster{Name: "n1"}, SeenRevision: "older"},
	}
	v := RolloutOf(statuses, rev)
	if v == nil || len(v.Waves) != 4 {
		t.Fatalf("view %+v", v)
	}
	want := []WaveState{WaveDone, WaveFailed, WaveHalted, WaveEmpty}
	for i, w := range v.Waves {
		if w.State != want[i] {
			t.Errorf("wave %s: %s, want %s (%+v)", w.Name, w.State, want[i], w)
		}
	}
	if v.Waves[1].Detail() != "failed on e2: later waves are halted" || v.Waves[2].Detail() != "halted by e2" {
		t.Errorf("details %q, %q", v.Waves[1].Detail(), v.Waves[2].Detail())
	}
	if !slices.Equal(v.NotSeen, []string{"n1"}) {
		t.Errorf("not seen %v", v.NotSeen)
	}
	pending, failed := Progress(statuses, rev)
	if !slices.Equal(pending, []string{"e1", "n1"}) || len(failed) != 2 {
		t.Errorf("pending %v, failed %v", pending, failed)
	}
	if RolloutOf(statuses[4:], rev) != nil {
		t.Error("a view of a revision no cluster reports a rollout of")
	}
}
