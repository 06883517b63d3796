package rollout_test

import (
	"strings"
	"testing"
	"time"

	flotillafleet "github.com/flotilla-gitops/flotilla/fleet"

	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/rollout"
)

const rev, old = "2222222222222222222222222222222222222222", "1111111111111111111111111111111111111111"

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// fleet: canary (wave 0), eu-1 and eu-2 (wave 1), us-1 (wave 2).
func fleet(mod func(map[string]*rollout.Cluster)) []rollout.Cluster {
	cs := map[string]*rollout.Cluster{
		"canary": {Name: "canary", Wave: 0},
		"eu-1":   {Name: "eu-1", Wave: 1},
		"eu-2":   {Name: "eu-2", Wave: 1},
		"us-1":   {Name: "us-1", Wave: 2},
	}
	for _, c := range cs {
		c.Reported, c.Revision, c.Ready, c.Seen, c.ReportedAt, c.ReadySince = true, old, true, old, now.Add(-time.Minute), now.Add(-time.Hour)
	}
	if mod != nil {
		mod(cs)
	}
	var out []rollout.Cluster
	for _, c := range cs {
		out = append(out, *c)
	}
	return out
}

func ready(c *rollout.Cluster, since time.Time) {
	c.Revision, c.Seen, c.Ready, c.ReadySince = rev, rev, true, since
}

var settings = rollout.Settings{Waves: []string{"canary", "eu", "rest"}, Bake: 10 * time.Minute, Stale: 30 * time.Minute}

// rollbackSettings are settings with onFailure: rollback.
var rollbackSettings = func() rollout.Settings { s := settings; s.Rollback = true; return s }()

func find(cs []rollout.Cluster, name string) rollout.Cluster {
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	panic(name)
}

func TestDecide(t *testing.T) {
	cases := []struct {
		name     string
		me       string
		s        rollout.Settings
		mod      func(map[string]*rollout.Cluster)
		approved bool
		apply    bool
		says     string
	}{
		{"the first wave goes at once", "canary", settings, nil, false, true, "wave canary may apply"},
		{"a later wave waits for the earlier", "eu-1", settings, nil, false, false, "waits for the earlier waves: canary"},
		{"then for the bake", "eu-1", settings, func(cs map[string]*rollout.Cluster) { ready(cs["canary"], now.Add(-5*time.Minute)) }, false, false, "bake until 2026-11-27T12:05:00Z"},
		{"then goes", "eu-1", settings, func(cs map[string]*rollout.Cluster) { ready(cs["canary"], now.Add(-11*time.Minute)) }, false, true, "wave eu may apply"},
		{"every earlier wave counts", "us-1", settings, func(cs map[string]*rollout.Cluster) {
			ready(cs["canary"], now.Add(-time.Hour))
			ready(cs["eu-1"], now.Add(-time.Hour))
		}, false, false, "waits for the earlier waves: eu-2"},
		{"a failure halts the later waves", "us-1", settings, func(cs map[string]*rollout.Cluster) {
			ready(cs["canary"], now.Add(-time.Hour))
			cs["eu-2"].Seen, cs["eu-2"].Failed = rev, true
		}, false, false, "halted: eu-2 (wave eu) failed at 2222222"},
		{"an offline cluster is skipped", "eu-1", settings, func(cs map[string]*rollout.Cluster) { cs["canary"].ReportedAt = now.Add(-time.Hour) }, false, true, "may apply"},
		{"or blocks", "eu-1", func() rollout.Settings { s := settings; s.BlockOffline = true; return s }(), func(cs map[string]*rollout.Cluster) {
			cs["canary"].ReportedAt = now.Add(-time.Hour)
		}, false, false, "canary (offline)"},
		{"paused", "eu-1", func() rollout.Settings { s := settings; s.Paused = true; return s }(), nil, false, false, "paused"},
		{"approval", "eu-1", func() rollout.Settings { s := settings; s.Approve = true; return s }(), func(cs map[string]*rollout.Cluster) {
			ready(cs["canary"], now.Add(-time.Hour))
		}, false, false, "flotilla rollout approve --wave eu"},
		{"approved", "eu-1", func() rollout.Settings { s := settings; s.Approve = true; return s }(), func(cs map[string]*rollout.Cluster) {
			ready(cs["canary"], now.Add(-time.Hour))
		}, true, true, "may apply"},
		{"maxUnavailable: the first in name order goes", "eu-1", func() rollout.Settings { s := settings; s.MaxUnavailable = 1; return s }(), func(cs map[string]*rollout.Cluster) {
			ready(cs["canary"], now.Add(-time.Hour))
		}, false, true, "may apply"},
		{"maxUnavailable: the next waits its turn", "eu-2", func() rollout.Settings { s := settings; s.MaxUnavailable = 1; return s }(), func(cs map[string]*rollout.Cluster) {
			ready(cs["canary"], now.Add(-time.Hour))
		}, false, false, "applies 1 at a time: after eu-1"},
		{"no waves", "us-1", rollout.Settings{}, nil, false, true, "everywhere at once"},
		{"a revert skips the bake", "eu-1", func() rollout.Settings { s := settings; s.Revert = true; return s }(), func(cs map[string]*rollout.Cluster) {
			ready(cs["canary"], now.Add(-time.Minute))
		}, false, true, "wave eu may apply"},
		{"a revert still waits for the earlier waves", "eu-1", func() rollout.Settings { s := settings; s.Revert = true; return s }(), nil, false, false, "waits for the earlier waves: canary"},
		{"rollback: a wave-mate's failure sends back a cluster that took the revision", "eu-1", rollbackSettings, func(cs map[string]*rollout.Cluster) {
			ready(cs["canary"], now.Add(-time.Hour))
			ready(cs["eu-1"], now.Add(-time.Minute))
			cs["eu-2"].Seen, cs["eu-2"].Failed = rev, true
		}, false, false, "rolled back: 1 of wave eu failed at 2222222 (maxFailures 0): eu-2"},
		{"rollback: and keeps one that did not take it", "eu-1", rollbackSettings, func(cs map[string]*rollout.Cluster) {
			ready(cs["canary"], now.Add(-time.Hour))
			cs["eu-2"].Seen, cs["eu-2"].Failed = rev, true
		}, false, false, "halted: 1 of wave eu failed"},
		{"rollback: up to maxFailures the wave goes on", "eu-1", func() rollout.Settings { s := rollbackSettings; s.MaxFailures = 1; return s }(), func(cs map[string]*rollout.Cluster) {
			ready(cs["canary"], now.Add(-time.Hour))
			cs["eu-2"].Seen, cs["eu-2"].Failed = rev, true
		}, false, true, "wave eu may apply"},
		{"halt: a wave-mate's failure does not send it back", "eu-1", settings, func(cs map[string]*rollout.Cluster) {
			ready(cs["canary"], now.Add(-time.Hour))
			ready(cs["eu-1"], now.Add(-time.Minute))
			cs["eu-2"].Seen, cs["eu-2"].Failed = rev, true
		}, false, true, "already at"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cs := fleet(tc.mod)
			d := rollout.Decide(find(cs, tc.me), rev, tc.s, cs, tc.approved, now)
			if d.RollBack != strings.HasPrefix(tc.says, "rolled back") {
				t.Errorf("%+v: RollBack %v", d, d.RollBack)
			}
			if d.Apply != tc.apply || !strings.Contains(d.Reason, tc.says) {
				t.Errorf("%+v; want apply=%v saying %q", d, tc.apply, tc.says)
			}
		})
	}
}

// TestRevertOf: the trailer `flotilla rollout revert` writes is read back;
// a trailer that names no full hash, or is not in the trailers, is not.
func TestRevertOf(t *testing.T) {
	rev := strings.Repeat("ab", 20)
	for msg, want := range map[string]string{
		"Revert \"x\"\n\nThis reverts commit " + rev + ".\n\nFlotilla-Revert: " + rev + "\n": rev,
		"Revert\n\nflotilla-revert: " + rev:                                                  rev,
		"Revert\n\nFlotilla-Revert: 3f2a9c1\n":                                               "",
		"Flotilla-Revert: " + rev + "\n\nbody after it\n":                                    "",
		"a plain commit": "",
	} {
		if got := rollout.RevertOf(msg); got != want {
			t.Errorf("RevertOf(%q) = %q, want %q", msg, got, want)
		}
	}
}

// TestRevertsImmediate: with `reverts: "immediate"` a revert goes to a
// later wave at once, whatever the earlier waves say; with the default it
// waits for them (but not for their bake).
func TestRevertsImmediate(t *testing.T) {
	r := &flotillafleet.Rollout{Wave: "eu", WaveIndex: 1, Waves: []string{"canary", "eu"}, Bake: "1h", Stale: "30m", Offline: "skip", Reverts: rollout.RevertsImmediate}
	places := []flotillafleet.ClusterRollouts{
		{Cluster: flotillafleet.Cluster{Name: "canary"}, Fleet: &flotillafleet.Rollout{Wave: "canary", WaveIndex: 0, Waves: r.Waves}},
		{Cluster: flotillafleet.Cluster{Name: "eu-1"}, Fleet: r},
	}
	statuses := map[string]*report.Status{"canary": {Cluster: flotillafleet.Cluster{Name: "canary"}, ReportedAt: now, Phase: report.ClusterReady, AppliedRevision: old, SeenRevision: rev}}
	me := rollout.Cluster{Name: "eu-1", Reported: true, ReportedAt: now, Revision: old}
	none := rollout.ApprovalsOf(nil, rev)
	tip := rollout.Tip{Revision: rev, Revert: old}
	d, err := rollout.DecideGroup(me, r, "", places, statuses, none, tip, now)
	if err != nil || !d.Apply || !strings.Contains(d.Reason, "everywhere at once (reverts: immediate)") {
		t.Errorf("immediate revert: %+v, %v", d, err)
	}
	waves := *r
	waves.Reverts = "waves"
	if d, err := rollout.DecideGroup(me, &waves, "", places, statuses, none, tip, now); err != nil || d.Apply || !strings.Contains(d.Reason, "waits for the earlier waves: canary") {
		t.Errorf("a revert through the waves: %+v, %v", d, err)
	}
}
