package fleet_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/fleet"
)

const waves = `rollout: {
	waves: [
		{name: "canary", names: ["staging-*"]},
		{name: "eu", regions: ["eu-*"], maxUnavailable: 1},
		{name: "rest"},
	]
	bake: "10m"
}
`

// TestRolloutWaves: each cluster is in the first wave that selects it,
// with the rollout's settings and the reason; a bundle may have a rollout
// of its own, or none (everywhere at once).
func TestRolloutWaves(t *testing.T) {
	f := mustLoad(t, writeFleet(t, waves+`
bundles: web: resources: []
bundles: hotfix: {resources: [], rollout: waves: []}
`))
	for _, tc := range []struct {
		c     fleet.Cluster
		wave  string
		index int
	}{
		{fleet.Cluster{Name: "staging-eu-1", Region: "eu-west-1"}, "canary", 0},
		{fleet.Cluster{Name: "prod-eu-1", Region: "eu-west-1"}, "eu", 1},
		{fleet.Cluster{Name: "prod-us-1", Region: "us-east-1"}, "rest", 2},
	} {
		p := mustPlan(t, f, tc.c)
		r := p.Rollout
		if r == nil || r.Wave != tc.wave || r.WaveIndex != tc.index || !slices.Equal(r.Waves, []string{"canary", "eu", "rest"}) ||
			r.Bake != "10m0s" || r.Stale != "30m0s" || r.Offline != "skip" || len(r.Because) == 0 {
			t.Errorf("%s: %+v", tc.c.Name, r)
		}
		if tc.wave == "eu" && r.MaxUnavailable != 1 {
			t.Errorf("eu's maxUnavailable: %+v", r)
		}
		if h := p.Bundle("hotfix"); h == nil || h.Rollout == nil || len(h.Rollout.Waves) != 0 || h.Rollout.Wave != "" {
			t.Errorf("%s: the hotfix bundle's own rollout: %+v", tc.c.Name, h)
		}
		if w := p.Bundle("web"); w == nil || w.Rollout != nil {
			t.Errorf("%s: web follows the fleet's rollout: %+v", tc.c.Name, w)
		}
	}
}

// TestRolloutErrors: a cluster no wave selects cannot know when to apply
// (its plan fails: nothing is applied); wave names are unique.
func TestRolloutErrors(t *testing.T) {
	f := mustLoad(t, writeFleet(t, `rollout: waves: [{name: "canary", names: ["staging-*"]}]
bundles: web: resources: []`))
	_, err := f.Plan(fleet.Cluster{Name: "prod-1"})
	if err == nil || !strings.Contains(err.Error(), "cluster prod-1 is in no wave of [canary]") || !strings.Contains(err.Error(), "fleet.cue:3:") {
		t.Errorf("a cluster in no wave: %v", err)
	}
	f = mustLoad(t, writeFleet(t, `rollout: waves: [{name: "a"}, {name: "a"}]
bundles: web: resources: []`))
	if _, err := f.Plan(fleet.Cluster{Name: "prod-1"}); err == nil || !strings.Contains(err.Error(), `wave "a" is named twice`) {
		t.Errorf("twice: %v", err)
	}
	if _, err := fleet.Load(writeFleet(t, `rollout: {waves: [], offline: "maybe"}`), fleet.LoadOptions{}); err == nil {
		t.Error("offline: maybe was accepted")
	}
}

// TestRollouts: the waves of many identities alone, as their plans have
// them; an invalid identity is left out with why; no rollout, none.
func TestRollouts(t *testing.T) {
	f := mustLoad(t, writeFleet(t, waves+`
bundles: web: resources: []
`))
	clusters := []fleet.Cluster{
		{Name: "staging-eu-1", Region: "eu-west-1"},
		{Name: "prod-eu-1", Region: "eu-west-1"},
		{Name: "prod-us-1", Region: "us-east-1", Labels: map[string]string{"env": "prod"}},
	}
	got := f.Rollouts(clusters, nil)
	if len(got) != len(clusters) {
		t.Fatalf("%d rollouts for %d clusters", len(got), len(clusters))
	}
	for i, c := range clusters {
		r := got[i].Fleet
		if p := mustPlan(t, f, c); got[i].Err != "" || p.Rollout == nil || r == nil || r.Wave != p.Rollout.Wave || r.WaveIndex != p.Rollout.WaveIndex {
			t.Errorf("%s: Rollouts %+v, plan %+v", c.Name, got[i], p.Rollout)
		}
	}
	if bad := f.Rollouts([]fleet.Cluster{{Name: "Bad_Name"}}, nil); bad[0].Err == "" {
		t.Error("an invalid identity was evaluated")
	}
	none := mustLoad(t, writeFleet(t, `bundles: web: resources: []`))
	if r := none.Rollouts([]fleet.Cluster{{Name: "a"}}, nil); r[0].Fleet != nil || r[0].Err != "" {
		t.Errorf("no rollout: %+v", r[0])
	}
}

// TestRolloutApproversAreSSHKeys: approvers are SSH public keys; anything
// else fails the plan at its line, and a valid key is in the plan.
func TestRolloutApproversAreSSHKeys(t *testing.T) {
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHDmPA5WxydrmKJRjMc2glVRNdiCvSMsJPGY1QXNrNKc ada@example.com"
	f := mustLoad(t, writeFleet(t, `rollout: {approvers: ["`+key+`"], waves: [{name: "all", approve: true}]}
bundles: web: resources: []`))
	if p := mustPlan(t, f, euProd); p.Rollout == nil || len(p.Rollout.Approvers) != 1 || p.Rollout.Approvers[0] != key {
		t.Fatalf("approvers in the plan: %+v", p.Rollout)
	}
	for entry, want := range map[string]string{
		"Ada <ada@example.com>":                                  "not an SSH public key",
		`expiry-time=\"20000101\" ` + key:                        "key options (expiry-time=",
		"# " + key + "\\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE": "one key per entry, on one line",
	} {
		f = mustLoad(t, writeFleet(t, `rollout: {approvers: ["`+entry+`"], waves: [{name: "all", approve: true}]}
bundles: web: resources: []`))
		_, err := f.Plan(euProd)
		if err == nil || !strings.Contains(err.Error(), "fleet.cue:3:") || !strings.Contains(err.Error(), "rollout.approvers[0]: ") || !strings.Contains(err.Error(), want) {
			t.Errorf("approver %q: %v, want %q", entry, err, want)
		}
	}
}
