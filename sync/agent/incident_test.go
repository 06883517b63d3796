package agent_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// control writes a change to the approvals branch as the on-call person.
func (rt *rolloutTest) control(change report.Change) {
	rt.t.Helper()
	changed, err := report.Update(context.Background(), report.ApproveOptions{URL: rt.url, Auth: rt.auth,
		Author: object.Signature{Name: "Oncall", Email: "oncall@example.com", When: time.Now()}}, change)
	if err != nil || !changed {
		rt.t.Fatalf("approvals branch: changed %v, %v", changed, err)
	}
}

// TestRolloutIncident: the rollout in an incident, on five real control
// planes. With `onFailure: rollback`, a revision whose Deployment never
// becomes Ready is rolled back on the canary in the pass that applied it,
// once progressDeadline has passed — its ConfigMap back at the old value,
// the Deployment gone — and is not tried again; the later waves never see
// it (halted), and the fleet view counts the cluster RolledBack. A pause
// on the approvals branch keeps every cluster where it is without a write;
// a hold keeps one cluster while the others take the tip, and its release
// lets it go. A revert (its commit's Flotilla-Revert trailer) goes through
// the waves without their bake of an hour.
func TestRolloutIncident(t *testing.T) {
	rt := newRolloutTest(t)
	base := rolloutFleet{Web: `"1"`, OnFailure: "rollback", ProgressDeadline: "4s"}
	rev1 := rt.commit(base)
	all := func(v string) func() bool {
		return func() bool {
			rt.pass()
			return slices.Equal(rt.web(), []string{v, v, v, v, v})
		}
	}
	rt.until("every cluster at 1", all("1"))

	// Revision 2 adds a Deployment that never becomes Ready: the canary
	// waits progressDeadline, then goes back to revision 1 in the same pass.
	broken := base
	broken.Web, broken.Broken = `"2"`, true
	rev2 := rt.commit(broken)
	canary := rt.cluster("canary-1")
	start := time.Now()
	rt.pass("canary-1")
	if waited := time.Since(start); waited < 4*time.Second {
		t.Errorf("the canary rolled back after %s, before its progressDeadline of 4s", waited)
	}
	if v := canary.configMap(t, "rollout-web", "web"); v != "1" {
		t.Fatalf("canary's web after the rollback: %q, want 1", v)
	}
	err := canary.kube.Get(context.Background(), client.ObjectKey{Namespace: "rollout-web", Name: "never-ready"}, &appsv1.Deployment{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("the Deployment of revision 2 is still there after the rollback: %v", err)
	}
	st := rt.status("canary-1")
	if st.Phase != report.ClusterRolledBack || st.Rollout == nil || st.Rollout.State != report.RolloutRolledBack ||
		!slices.Equal(st.Rollout.RolledBack, []string{"web"}) || !strings.Contains(st.Message, "not ready after 4s") {
		t.Fatalf("canary's status after the rollback: phase %s, message %q, rollout %+v", st.Phase, st.Message, st.Rollout)
	}
	if i := slices.IndexFunc(st.Bundles, func(b report.BundleStatus) bool { return b.Name == "web" }); i < 0 ||
		st.Bundles[i].Revision != rev1 || st.Bundles[i].RolledBack != rev2 || st.Bundles[i].Phase != "Ready" {
		t.Fatalf("canary's web bundle after the rollback: %+v", st.Bundles)
	}
	// It does not try revision 2 again, and keeps saying why it went back.
	writes := canary.writes.n.Load()
	rt.pass("canary-1")
	if n := canary.writes.n.Load() - writes; n != 0 || canary.configMap(t, "rollout-web", "web") != "1" {
		t.Fatalf("the canary tried the rolled-back revision again: %d writes, web %q", n, canary.configMap(t, "rollout-web", "web"))
	}
	if st := rt.status("canary-1"); st.Phase != report.ClusterRolledBack || st.Rollout == nil || !strings.Contains(st.Rollout.Message, "not ready after 4s") {
		t.Errorf("the canary's status a pass after the rollback: phase %s, rollout %+v", st.Phase, st.Rollout)
	}
	// Nor does a restarted agent, which knows nothing but what the
	// inventory says: it applies again what it has (once, as any
	// restarted agent does), and not a write about the Deployment.
	canary.restart(t)
	deployments := canary.writes.deployments.Load()
	rt.pass("canary-1")
	if n := canary.writes.deployments.Load() - deployments; n != 0 || canary.configMap(t, "rollout-web", "web") != "1" {
		t.Fatalf("the restarted canary tried the rolled-back revision again: %d Deployment writes, web %q", n, canary.configMap(t, "rollout-web", "web"))
	}
	if st := rt.status("canary-1"); st.Phase != report.ClusterRolledBack {
		t.Fatalf("the restarted canary's status: phase %s, rollout %+v", st.Phase, st.Rollout)
	}
	// The later waves never see it: halted by the canary.
	rt.pass("eu-1", "eu-2", "us-1", "us-2")
	for _, c := range rt.clusters[1:] {
		st := rt.status(c.name)
		if st.Rollout == nil || st.Rollout.State != report.RolloutHalted || st.Rollout.HaltedBy != "canary-1" || st.Rollout.Revision != rev2 {
			t.Errorf("%s after the canary rolled back: phase %s, rollout %+v", c.name, st.Phase, st.Rollout)
		}
		if slices.Contains(rt.seen[c.name], "2") {
			t.Errorf("%s applied the revision the canary rolled back: %v", c.name, rt.seen[c.name])
		}
	}
	// The fleet view (flotilla status) counts and explains it.
	snap, err := report.Read(context.Background(), rt.url, "", rt.auth)
	if err != nil {
		t.Fatal(err)
	}
	view := report.NewFleetView(snap.Statuses, report.ViewOptions{Now: time.Now(), Stale: time.Hour})
	if i := slices.IndexFunc(view.Counts, func(c report.StandingCount) bool { return c.Standing == report.StandingRolledBack }); i < 0 || view.Counts[i].Count != 1 {
		t.Errorf("the fleet view's counts: %+v", view.Counts)
	}
	if len(view.Problems) == 0 || view.Problems[0].Standing != report.StandingRolledBack || !strings.Contains(view.Problems[0].Message, "rolled back from "+rev2[:7]) {
		t.Errorf("the fleet view's first problem: %+v", view.Problems)
	}

	// A pause: a newer good commit reaches nobody, and nobody writes.
	rt.control(report.Pause(report.Control{By: "Oncall <oncall@example.com>", At: time.Now().UTC(), Reason: "INC-1: checkout errors"}))
	good := base
	good.Web = `"3"`
	rt.commit(good)
	before := map[string]int64{}
	for _, c := range rt.clusters {
		before[c.name] = c.writes.n.Load()
	}
	rt.pass()
	rt.pass()
	if got := rt.web(); !slices.Equal(got, []string{"1", "1", "1", "1", "1"}) {
		t.Fatalf("paused: web %v", got)
	}
	for _, c := range rt.clusters {
		if n := c.writes.n.Load() - before[c.name]; n != 0 {
			t.Errorf("%s made %d API writes while paused", c.name, n)
		}
		st := rt.status(c.name)
		if st.Phase != report.ClusterWaiting || st.Rollout == nil || st.Rollout.Paused == nil ||
			st.Rollout.Paused.By != "Oncall <oncall@example.com>" || !strings.Contains(st.Rollout.Message, "paused by Oncall") ||
			!strings.Contains(st.Rollout.Message, "INC-1") {
			t.Errorf("%s while paused: phase %s, rollout %+v", c.name, st.Phase, st.Rollout)
		}
	}

	// A hold of us-2, then the end of the pause: the others take 3.
	rt.control(report.Hold(report.Control{Cluster: "us-2", By: "Oncall <oncall@example.com>", At: time.Now().UTC(), Reason: "migration"}))
	rt.control(report.Resume("Oncall <oncall@example.com>", "mitigated"))
	rt.until("every cluster but us-2 at 3", func() bool {
		rt.pass()
		return slices.Equal(rt.web(), []string{"3", "3", "3", "3", "1"})
	})
	if st := rt.status("us-2"); st.Phase != report.ClusterWaiting || st.Rollout == nil || len(st.Rollout.Held) != 1 ||
		st.Rollout.Held[0].Cluster != "us-2" || !strings.Contains(st.Rollout.Message, "cluster us-2 is held by Oncall") {
		t.Errorf("us-2 while held: phase %s, rollout %+v", st.Phase, st.Rollout)
	}
	rt.control(report.Release("us-2", "", "Oncall <oncall@example.com>", ""))
	rt.until("every cluster at 3 once us-2 is released", all("3"))
	if log := gittest.Git(t, rt.repo.Bare, "log", "--format=%an|%s", report.DefaultApprovalsBranch); !strings.Contains(log, "Oncall|rollout: pause") ||
		!strings.Contains(log, "Oncall|rollout: hold cluster us-2") || !strings.Contains(log, "Oncall|rollout: release cluster us-2") {
		t.Errorf("the approvals branch's history: %s", log)
	}

	// A revert goes through the waves without their bake: with a bake of
	// an hour, revision 4 stops after the canary; its revert does not.
	slow := base
	slow.Web, slow.Bake = `"4"`, "1h"
	rev4 := rt.commit(slow)
	rt.pass()
	rt.pass()
	if got := rt.web(); !slices.Equal(got, []string{"4", "3", "3", "3", "3"}) {
		t.Fatalf("revision 4 with a bake of an hour: web %v", got)
	}
	slow.Web = `"3"`
	rt.repo.CommitMessage(map[string]string{"fleet.cue": slow.cue()}, "Revert \"4\"\n\nFlotilla-Revert: "+rev4+"\n")
	rt.until("every cluster back at 3 through the waves, without the bake", all("3"))
	if st := rt.status("us-1"); st.Rollout == nil || st.Rollout.Revert != rev4 {
		t.Errorf("us-1's rollout of the revert: %+v", st.Rollout)
	}

	// A failure in a wave sends back the wave's clusters that took the
	// revision (maxFailures 0): eu-1 takes 5 and is Ready, eu-2 fails at
	// it and rolls back, then eu-1 rolls back too; the rest never sees 5.
	wave := base
	wave.Web, wave.Broken, wave.BrokenOn = `"5"`, true, "eu-2"
	rev5 := rt.commit(wave)
	rt.within(2*time.Minute, "the eu wave rolled back from 5", func() bool {
		rt.pass()
		eu1, eu2 := rt.status("eu-1"), rt.status("eu-2")
		return eu2.Phase == report.ClusterRolledBack && eu1.Phase == report.ClusterRolledBack && eu1.Rollout != nil && eu1.Rollout.Revision == rev5
	})
	if got := rt.web(); !slices.Equal(got, []string{"5", "3", "3", "3", "3"}) {
		t.Fatalf("after the eu wave rolled back: web %v", got)
	}
	if !slices.Contains(rt.seen["eu-1"], "5") {
		t.Errorf("eu-1 never took 5 before going back: %v", rt.seen["eu-1"])
	}
	if st := rt.status("eu-1"); st.Rollout.HaltedBy != "eu-2" || !strings.Contains(st.Rollout.Message, "1 of wave eu failed at "+rev5[:7]+" (maxFailures 0): eu-2") {
		t.Errorf("eu-1's rollout after its wave failed: %+v", st.Rollout)
	}
	for _, name := range []string{"us-1", "us-2"} {
		if slices.Contains(rt.seen[name], "5") {
			t.Errorf("%s took 5: %v", name, rt.seen[name])
		}
	}
}

// availabilityFleet: no waves; web, with a readiness wait of 3 s, must
// stay Ready on one eu cluster at least while another takes a revision
// (clusters: min: 2 over eu-1 and eu-2); broken adds to eu-1's web a
// Deployment that is never Ready.
func availabilityFleet(v string, broken bool) string {
	return availabilityFleetWith(v, broken, "")
}

// availabilityFleetWith is availabilityFleet with a fleet rollout.
func availabilityFleetWith(v string, broken bool, rollout string) string {
	bad := ""
	if broken {
		bad = `if cluster.name == "eu-1" {apiVersion: "apps/v1", kind: "Deployment", metadata: name: "never-ready", spec: {
		selector: matchLabels: app: "never-ready"
		template: metadata: labels: app: "never-ready"
		template: spec: containers: [{name: "c", image: "registry.example/never:1"}]
	}},`
	}
	return `package fleet

` + rollout + `
bundles: web: {namespace: "rollout-web", timeout: "3s", resources: [
	{apiVersion: "v1", kind: "Namespace", metadata: name: "rollout-web"},
	{apiVersion: "v1", kind: "ConfigMap", metadata: name: "web", data: v: "` + v + `"},
	` + bad + `
]}
invariants: "web-in-eu": {
	description: "eu keeps serving"
	target: names: ["eu-*"]
	bundles: ["web"]
	clusters: min: 2
}
`
}

// TestRolloutKeepsInvariants: on five real control planes, without waves,
// an availability invariant makes a cluster wait: eu-1 takes revision 2
// and its web is not Ready, so eu-2 — the last eu cluster with web Ready —
// keeps revision 1 and says which invariant it waits for, while the
// clusters the invariant does not cover take 2; once eu-1 is Ready at
// revision 3, eu-2 takes it.
func TestRolloutKeepsInvariants(t *testing.T) {
	rt := newRolloutTest(t)
	rt.repo.Commit(map[string]string{"fleet.cue": availabilityFleet("1", false)})
	rt.until("every cluster at 1", func() bool {
		rt.pass()
		return slices.Equal(rt.web(), []string{"1", "1", "1", "1", "1"})
	})

	rt.repo.Commit(map[string]string{"fleet.cue": availabilityFleet("2", true)})
	rt.pass("eu-1")
	rt.pass("eu-2", "canary-1", "us-1", "us-2")
	if got := rt.web(); !slices.Equal(got, []string{"2", "2", "1", "2", "2"}) {
		t.Fatalf("eu-1 not Ready at 2: web %v (canary-1, eu-1, eu-2, us-1, us-2), want eu-2 alone at 1", got)
	}
	st := rt.status("eu-2")
	if st.Phase != report.ClusterWaiting || st.Rollout == nil || st.Rollout.State != report.RolloutWaiting ||
		!strings.Contains(st.Rollout.Message, "invariant web-in-eu (eu keeps serving): 0 other clusters with web Ready, at least 1 while one takes a revision; waits for eu-1") {
		t.Fatalf("eu-2 waiting for the invariant: phase %s, rollout %+v", st.Phase, st.Rollout)
	}

	rt.repo.Commit(map[string]string{"fleet.cue": availabilityFleet("3", false)})
	rt.until("every cluster at 3 once eu-1 is Ready", func() bool {
		rt.pass("eu-1", "eu-2", "canary-1", "us-1", "us-2")
		return slices.Equal(rt.web(), []string{"3", "3", "3", "3", "3"})
	})
	if slices.Contains(rt.seen["eu-2"], "2") {
		t.Errorf("eu-2 took 2 while eu-1 was not Ready: %v", rt.seen["eu-2"])
	}
}

// TestRolloutWaveKeepsInvariants: with waves, the availability invariant
// makes the eu wave wait inside itself: canary-1 takes revision 2 and is
// Ready, the eu wave opens, eu-1 takes 2 and is not Ready, and eu-2 — the
// last eu cluster with web Ready — keeps 1, naming the invariant, though
// its wave lets it go; the rest wave waits behind eu. Revision 3 goes
// wave by wave to every cluster, eu-2 never having run 2.
func TestRolloutWaveKeepsInvariants(t *testing.T) {
	const waves = `rollout: {waves: [{name: "canary", names: ["canary-*"]}, {name: "eu", names: ["eu-*"]}, {name: "rest"}], bake: "0s"}`
	rt := newRolloutTest(t)
	rt.repo.Commit(map[string]string{"fleet.cue": availabilityFleetWith("1", false, waves)})
	rt.until("every cluster at 1", func() bool {
		rt.pass()
		return slices.Equal(rt.web(), []string{"1", "1", "1", "1", "1"})
	})

	rt.repo.Commit(map[string]string{"fleet.cue": availabilityFleetWith("2", true, waves)})
	rt.until("canary-1 Ready at 2", func() bool {
		rt.pass("canary-1")
		st := rt.status("canary-1")
		return rt.web()[0] == "2" && st.Phase == report.ClusterReady
	})
	rt.pass("eu-1")
	rt.pass("eu-2", "us-1", "us-2")
	if got := rt.web(); !slices.Equal(got, []string{"2", "2", "1", "1", "1"}) {
		t.Fatalf("the eu wave with eu-1 not Ready at 2: web %v (canary-1, eu-1, eu-2, us-1, us-2), want eu-2 and the rest wave at 1", got)
	}
	st := rt.status("eu-2")
	if st.Phase != report.ClusterWaiting || st.Rollout == nil || st.Wave != "eu" ||
		!strings.Contains(st.Rollout.Message, "invariant web-in-eu (eu keeps serving): 0 other clusters with web Ready, at least 1 while one takes a revision; waits for eu-1") {
		t.Fatalf("eu-2 waiting in its wave for the invariant: phase %s, rollout %+v", st.Phase, st.Rollout)
	}
	if st := rt.status("us-1"); st.Rollout == nil || strings.Contains(st.Rollout.Message, "invariant") {
		t.Errorf("us-1 waits for the eu wave, not the invariant: %+v", st.Rollout)
	}

	rt.repo.Commit(map[string]string{"fleet.cue": availabilityFleetWith("3", false, waves)})
	rt.until("every cluster at 3, wave by wave", func() bool {
		rt.pass("canary-1", "eu-1", "eu-2", "us-1", "us-2")
		return slices.Equal(rt.web(), []string{"3", "3", "3", "3", "3"})
	})
	if slices.Contains(rt.seen["eu-2"], "2") {
		t.Errorf("eu-2 took 2 while eu-1 was not Ready: %v", rt.seen["eu-2"])
	}
	for _, name := range []string{"us-1", "us-2"} {
		if slices.Contains(rt.seen[name], "2") {
			t.Errorf("%s took 2 before the eu wave was done: %v", name, rt.seen[name])
		}
	}
}
