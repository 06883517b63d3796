package report_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// TestFleetView: the counts by standing (a silent cluster is Stale
// whatever it said last), the tip's progress, one problem per distinct
// message (the cluster's own name generalized, so the same error on many
// clusters is one), worst first, and each bundle's phases across the fleet.
func TestFleetView(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	committed := now.Add(-time.Hour)
	ready := func(d time.Duration) *time.Time { t := committed.Add(d); return &t }
	st := func(name string, phase ClusterPhase, applied string, since *time.Time, bundles ...report.BundleStatus) report.Status {
		return report.Status{Cluster: fleet.Cluster{Name: name, Region: "eu-west-1"}, Phase: phase, AppliedRevision: applied, ReadySince: since,
			ReportedAt: now.Add(-time.Minute), Bundles: bundles}
	}
	web := func(p apply.Phase, msg string) report.BundleStatus {
		return report.BundleStatus{Name: "web", Phase: p, Message: msg}
	}
	db := report.BundleStatus{Name: "db", Phase: apply.PhaseReady}
	statuses := []report.Status{
		st("eu-1", report.ClusterReady, "tip", ready(10*time.Minute), web(apply.PhaseReady, ""), db),
		st("eu-2", report.ClusterFailed, "old", nil, web(apply.PhaseFailed, "fleet.cue:3:1: replicas: conflicting values on eu-2"), db),
		st("eu-3", report.ClusterFailed, "old", nil, web(apply.PhaseFailed, "fleet.cue:3:1: replicas: conflicting values on eu-3")),
		st("eu-30", report.ClusterReady, "tip", ready(20*time.Minute), web(apply.PhaseReady, "")),
		st("us-1", report.ClusterReady, "tip", ready(5*time.Minute)),
	}
	statuses[4].ReportedAt = now.Add(-2 * time.Hour)
	opts := report.ViewOptions{Now: now, Stale: 30 * time.Minute, Tip: "tip", TipTime: committed}
	v := report.NewFleetView(statuses, opts)

	counts := map[report.Standing]int{}
	for _, c := range v.Counts {
		counts[c.Standing] = c.Count
	}
	if len(v.Counts) != len(report.Standings) || counts[report.StandingReady] != 2 || counts[report.StandingFailed] != 2 || counts[report.StandingStale] != 1 {
		t.Errorf("counts: %+v", v.Counts)
	}
	if tip := v.Tip; tip == nil || tip.Ready != 3 || tip.Total != 5 || tip.Done || tip.Took != time.Hour {
		t.Errorf("tip progress: %+v (want 3 of 5 Ready, 1h so far)", tip)
	}
	if len(v.Problems) != 2 {
		t.Fatalf("problems: %+v", v.Problems)
	}
	failed := v.Problems[0]
	if failed.Standing != report.StandingFailed || failed.Message != "fleet.cue:3:1: replicas: conflicting values on <cluster>" ||
		!slices.Equal(failed.Clusters, []string{"eu-2", "eu-3"}) || !slices.Equal(failed.Bundles, []string{"web"}) {
		t.Errorf("the failed problem: %+v", failed)
	}
	if stale := v.Problems[1]; stale.Standing != report.StandingStale || !slices.Equal(stale.Clusters, []string{"us-1"}) || !strings.Contains(stale.Message, "30m0s") {
		t.Errorf("the stale problem: %+v", stale)
	}
	if len(v.Bundles) != 2 || v.Bundles[0].Name != "db" || v.Bundles[0].Total() != 2 || v.Bundles[1].Phases[apply.PhaseFailed] != 2 || v.Bundles[1].Phases[apply.PhaseReady] != 2 {
		t.Errorf("bundles: %+v", v.Bundles)
	}

	// Everyone Ready at the tip: done, and it took until the last one.
	for i := range statuses {
		statuses[i].Phase, statuses[i].AppliedRevision, statuses[i].ReportedAt = report.ClusterReady, "tip", now
		statuses[i].ReadySince = ready(time.Duration(i+1) * time.Minute)
	}
	if tip := report.NewFleetView(statuses, opts).Tip; !tip.Done || tip.Took != 5*time.Minute {
		t.Errorf("tip progress when done: %+v (want 5m, to the last Ready)", tip)
	}
	// "eu-3" inside "eu-30" is not the cluster's name.
	if got := report.Generalize("eu-30 and eu-3 differ", "eu-3"); got != "eu-30 and <cluster> differ" {
		t.Errorf("Generalize: %q", got)
	}
}

// ClusterPhase shortens the test's table.
type ClusterPhase = report.ClusterPhase

// TestSortAndFilterForView: failed and stale clusters come first; each
// filter narrows, values within one filter widen.
func TestSortAndFilterForView(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	mk := func(name, region, wave string, phase report.ClusterPhase, age time.Duration, tier string, bundles ...string) report.Status {
		st := report.Status{Cluster: fleet.Cluster{Name: name, Region: region, Labels: map[string]string{"tier": tier}}, Wave: wave, Phase: phase, ReportedAt: now.Add(-age)}
		for _, b := range bundles {
			st.Bundles = append(st.Bundles, report.BundleStatus{Name: b, Phase: apply.PhaseReady})
		}
		return st
	}
	statuses := []report.Status{
		mk("a", "eu", "rest", report.ClusterReady, 0, "prod", "web"),
		mk("b", "us", "canary", report.ClusterReady, time.Hour, "dev", "db"),
		mk("c", "eu", "rest", report.ClusterWaiting, 0, "prod", "web", "db"),
		mk("d", "us", "rest", report.ClusterFailed, 0, "prod"),
	}
	report.SortForView(statuses, now, 30*time.Minute)
	var order []string
	for _, st := range statuses {
		order = append(order, st.Cluster.Name)
	}
	if !slices.Equal(order, []string{"d", "b", "c", "a"}) {
		t.Errorf("order: %v, want failed, stale, waiting, ready", order)
	}
	prod, _ := labels.Parse("tier=prod")
	for _, c := range []struct {
		f    report.Filter
		want []string
	}{
		{report.Filter{}, []string{"d", "b", "c", "a"}},
		{report.Filter{Standings: []report.Standing{"stale", "Failed"}}, []string{"d", "b"}},
		{report.Filter{Regions: []string{"eu"}}, []string{"c", "a"}},
		{report.Filter{Waves: []string{"rest"}, Regions: []string{"us"}}, []string{"d"}},
		{report.Filter{Bundles: []string{"db"}}, []string{"b", "c"}},
		{report.Filter{Selector: prod, Bundles: []string{"web"}}, []string{"c", "a"}},
	} {
		var got []string
		for _, st := range c.f.Apply(statuses, now, 30*time.Minute) {
			got = append(got, st.Cluster.Name)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%+v: %v, want %v", c.f, got, c.want)
		}
	}
}

// TestWaveReadyAfter: each wave says when its first and last clusters
// became Ready at the tip, counted from the tip's commit.
func TestWaveReadyAfter(t *testing.T) {
	committed := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { t := committed.Add(d); return &t }
	waves := []string{"canary", "rest"}
	st := func(name, wave string, since *time.Time) report.Status {
		return report.Status{Cluster: fleet.Cluster{Name: name}, Wave: wave, Phase: report.ClusterReady, AppliedRevision: "tip", SeenRevision: "tip",
			ReadySince: since, Rollout: &report.RolloutStatus{Revision: "tip", Waves: waves, State: report.RolloutApplied}}
	}
	v := report.NewFleetView([]report.Status{
		st("c-1", "canary", at(2*time.Minute)),
		st("r-1", "rest", at(20*time.Minute)),
		st("r-2", "rest", at(35*time.Minute)),
	}, report.ViewOptions{Now: committed.Add(time.Hour), Tip: "tip", TipTime: committed})
	r := v.Rollout
	if r == nil || r.Committed == nil || len(r.Waves) != 2 {
		t.Fatalf("rollout: %+v", r)
	}
	if got := r.Waves[0].ReadyAfter(r.Committed); got != "2m0s" {
		t.Errorf("canary: %q", got)
	}
	if got := r.Waves[1].ReadyAfter(r.Committed); got != "first 20m0s, last 35m0s" {
		t.Errorf("rest: %q", got)
	}
	if got := r.Waves[1].ReadyAfter(nil); got != "" {
		t.Errorf("without the commit time: %q", got)
	}
}
