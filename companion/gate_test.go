package companion_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/flotilla-gitops/flotilla/companion"
	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// gatedFleet: three clusters in three waves, the second behind an
// approval, a bake between waves; web changes with the version, old goes
// away after v1.
const gatedFleet = `package fleet

clusters: {
	"canary-1": {region: "eu-west-1", labels: {}}
	"eu-1":     {region: "eu-west-1", labels: {}}
	"us-1":     {region: "us-east-1", labels: {}}
}
rollout: {
	waves: [{name: "canary", names: ["canary-*"]}, {name: "eu", regions: ["eu-*"], approve: true}, {name: "rest"}]
	bake: "10m"
}
bundles: web: {namespace: "web", resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "web", data: version: "%s"}]}
`

const oldBundle = `
bundles: old: {namespace: "web", resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "old"}]}
`

// publishStatus publishes a cluster's status (us-1 in us-east-1, the
// others in eu-west-1) as `agent --observe` would.
func publishStatus(t *testing.T, repo *gittest.Repo, name, applied, seen string, phase report.ClusterPhase, readySince time.Time) {
	t.Helper()
	r, err := report.New(report.Options{URL: repo.URL})
	if err != nil {
		t.Fatal(err)
	}
	st := &report.Status{Cluster: fleet.Cluster{Name: name, Region: map[bool]string{true: "us-east-1", false: "eu-west-1"}[name == "us-1"], Labels: map[string]string{}},
		AppliedRevision: applied, SeenRevision: seen, Phase: phase, Bundles: []report.BundleStatus{},
		Rollout: &report.RolloutStatus{Revision: seen, State: report.RolloutApplied}}
	if phase == report.ClusterReady {
		st.ReadySince = &readySince
	}
	if _, err := r.Publish(context.Background(), st, readySince); err != nil {
		t.Fatal(err)
	}
}

// Hydration takes the rollout gate the agents take: after a change, the
// canary's folder gets it at once, the later waves keep what they had —
// deletions included — until the canary is Ready and baked and the wave is
// approved, and a failure of an earlier wave at the revision halts the
// rest. The status branches are the ones `agent --observe` writes.
func TestHydrateIsGatedByTheRollout(t *testing.T) {
	ctx := context.Background()
	repo := gittest.New(t)
	v1 := repo.Commit(map[string]string{"fleet.cue": strings.Replace(gatedFleet, "%s", "1", 1) + oldBundle})
	start := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	publish := func(name, applied, seen string, phase report.ClusterPhase, readySince time.Time) {
		t.Helper()
		publishStatus(t, repo, name, applied, seen, phase, readySince)
	}
	hydrateAt := func(now time.Time) *companion.Output {
		t.Helper()
		out, err := companion.Hydrate(ctx, companion.Options{Dir: repo.Work, Status: report.Branches{URL: repo.URL},
			Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Problems) > 0 {
			t.Fatal(out.Problems)
		}
		if _, err := companion.CommitBranch(ctx, repo.Work, out, companion.CommitOptions{Branch: "hydrated"}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	version := func(cluster string) string { t.Helper(); return hydratedVersion(t, repo, cluster) }
	held := func(out *companion.Output) map[string]string {
		m := map[string]string{}
		for _, g := range out.Gates {
			m[g.Cluster] = g.Reason + "|" + g.Halted
		}
		return m
	}

	// Every cluster at v1.
	for _, c := range []string{"canary-1", "eu-1", "us-1"} {
		publish(c, v1, v1, report.ClusterReady, start)
	}
	if out := hydrateAt(start); len(out.Gates) != 0 || version("canary-1") != "1" || version("us-1") != "1" {
		t.Fatalf("at v1 every cluster is hydrated: held %v, canary %q us %q", held(out), version("canary-1"), version("us-1"))
	}

	// v2: the canary takes it, the later waves keep v1 (old included).
	v2 := repo.Commit(map[string]string{"fleet.cue": strings.Replace(gatedFleet, "%s", "2", 1)})
	out := hydrateAt(start.Add(time.Minute))
	h := held(out)
	if version("canary-1") != "2" || version("eu-1") != "1" || version("us-1") != "1" {
		t.Fatalf("versions canary %s eu %s us %s; held %v", version("canary-1"), version("eu-1"), version("us-1"), h)
	}
	if !strings.Contains(h["eu-1"], "waits for the earlier waves: canary-1") || !strings.Contains(h["us-1"], "waits for the earlier waves") {
		t.Errorf("held: %v", h)
	}
	files := gittest.Git(t, repo.Work, "ls-tree", "-r", "--name-only", "hydrated")
	if strings.Contains(files, "clusters/canary-1/old/") || !strings.Contains(files, "clusters/eu-1/old/manifest.yaml") {
		t.Errorf("the canary lost old, the held eu-1 keeps it:\n%s", files)
	}

	// The canary Ready at v2: eu waits for the bake, then for its approval.
	publish("canary-1", v2, v2, report.ClusterReady, start.Add(2*time.Minute))
	if h := held(hydrateAt(start.Add(5 * time.Minute))); !strings.Contains(h["eu-1"], "bake until") {
		t.Errorf("during the bake: %v", h)
	}
	if h := held(hydrateAt(start.Add(15 * time.Minute))); !strings.Contains(h["eu-1"], "waits for an approval") || version("eu-1") != "1" {
		t.Errorf("after the bake, before the approval: %v (eu-1 at %s)", h, version("eu-1"))
	}
	if _, err := report.Approve(ctx, report.ApproveOptions{URL: repo.URL, Author: object.Signature{Name: "Ops", Email: "ops@example.com", When: time.Now()}},
		report.Approval{Revision: v2, Wave: "eu", By: "Ops <ops@example.com>", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	out = hydrateAt(start.Add(16 * time.Minute))
	if h := held(out); version("eu-1") != "2" || version("us-1") != "1" || !strings.Contains(h["us-1"], "eu-1") {
		t.Errorf("approved: eu-1 at %s, us-1 at %s, held %v", version("eu-1"), version("us-1"), h)
	}

	// eu-1 fails at v2: the rest halts.
	publish("eu-1", v1, v2, report.ClusterFailed, start.Add(17*time.Minute))
	h = held(hydrateAt(start.Add(40 * time.Minute)))
	if !strings.HasSuffix(h["us-1"], "|eu-1") || version("us-1") != "1" {
		t.Errorf("after eu-1 failed: us-1 at %s, held %v", version("us-1"), h)
	}
}

// Hydration honours the pause and holds on the approvals branch as the
// agents do, in a fleet without waves too: paused, no cluster's folder
// takes the change; a hold of a bundle on one cluster keeps that bundle's
// folder while the other clusters take it; released, it follows.
func TestHydrateKeepsWhatControlsHold(t *testing.T) {
	ctx := context.Background()
	const fleetCUE = `package fleet

clusters: {"eu-1": {region: "eu-west-1"}, "us-1": {region: "us-east-1"}}
bundles: web: {namespace: "web", resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "web", data: version: "%s"}]}
`
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": strings.Replace(fleetCUE, "%s", "1", 1)})
	control := func(change report.Change) {
		t.Helper()
		if _, err := report.Update(ctx, report.ApproveOptions{URL: repo.URL, Author: object.Signature{Name: "Ops", Email: "ops@example.com", When: time.Now()}}, change); err != nil {
			t.Fatal(err)
		}
	}
	hydrate := func() *companion.Output { t.Helper(); return hydrateBranch(t, repo) }
	versions := func() string {
		t.Helper()
		return hydratedVersion(t, repo, "eu-1") + " " + hydratedVersion(t, repo, "us-1")
	}
	hydrate()

	control(report.Pause(report.Control{By: "Ops <ops@example.com>", At: time.Now(), Reason: "INC-9"}))
	repo.Commit(map[string]string{"fleet.cue": strings.Replace(fleetCUE, "%s", "2", 1)})
	if out := hydrate(); versions() != "1 1" || len(out.Gates) != 2 || !strings.Contains(out.Gates[0].Reason, "paused by Ops <ops@example.com>") {
		t.Fatalf("paused: versions %s, gates %+v", versions(), out.Gates)
	}
	control(report.Hold(report.Control{Cluster: "eu-1", Bundle: "web", By: "Ops <ops@example.com>", At: time.Now()}))
	control(report.Resume("Ops <ops@example.com>", ""))
	if out := hydrate(); versions() != "1 2" || len(out.Gates) != 1 || out.Gates[0].Cluster != "eu-1" ||
		!strings.Contains(out.Gates[0].Reason, "bundle web on cluster eu-1 is held") {
		t.Fatalf("eu-1's web held: versions %s, gates %+v", versions(), out.Gates)
	}
	control(report.Release("eu-1", "web", "Ops <ops@example.com>", ""))
	if out := hydrate(); versions() != "2 2" || len(out.Gates) != 0 {
		t.Fatalf("released: versions %s, gates %+v", versions(), out.Gates)
	}
}

// Hydration keeps an invariant's availability as the agents do: with eu-1
// not Ready, eu-2 — the last eu cluster with web Ready — keeps web's last
// hydrated state, while eu-1 takes the change (eu-2 is Ready).
func TestHydrateKeepsAvailability(t *testing.T) {
	ctx := context.Background()
	const fleetCUE = `package fleet

clusters: {"eu-1": {region: "eu-west-1"}, "eu-2": {region: "eu-west-1"}}
bundles: web: {namespace: "web", resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "web", data: version: "%s"}]}
invariants: "web-in-eu": {bundles: ["web"], clusters: min: 2}
`
	repo := gittest.New(t)
	v1 := repo.Commit(map[string]string{"fleet.cue": strings.Replace(fleetCUE, "%s", "1", 1)})
	hydrate := func() *companion.Output { t.Helper(); return hydrateBranch(t, repo) }
	version := func(c string) string { t.Helper(); return hydratedVersion(t, repo, c) }
	hydrate()
	for name, phase := range map[string]apply.Phase{"eu-1": apply.PhaseProgressing, "eu-2": apply.PhaseReady} {
		r, err := report.New(report.Options{URL: repo.URL})
		if err != nil {
			t.Fatal(err)
		}
		st := &report.Status{Cluster: fleet.Cluster{Name: name, Region: "eu-west-1", Labels: map[string]string{}}, Phase: report.ClusterReady,
			AppliedRevision: v1, SeenRevision: v1, Bundles: []report.BundleStatus{{Name: "web", Phase: phase, Revision: v1}}}
		if _, err := r.Publish(ctx, st, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	repo.Commit(map[string]string{"fleet.cue": strings.Replace(fleetCUE, "%s", "2", 1)})
	out := hydrate()
	if version("eu-1") != "2" || version("eu-2") != "1" || len(out.Gates) != 1 || out.Gates[0].Cluster != "eu-2" ||
		!strings.Contains(out.Gates[0].Reason, "invariant web-in-eu: 0 other clusters with web Ready, at least 1 while one takes a revision; waits for eu-1") {
		t.Fatalf("eu-1 not Ready: eu-1 at %s, eu-2 at %s, gates %+v", version("eu-1"), version("eu-2"), out.Gates)
	}
}

// hydrateBranch hydrates the work tree with the status branches of the
// repository and commits the output to the branch "hydrated".
func hydrateBranch(t *testing.T, repo *gittest.Repo) *companion.Output {
	t.Helper()
	out, err := companion.Hydrate(context.Background(), companion.Options{Dir: repo.Work, Status: report.Branches{URL: repo.URL}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := companion.CommitBranch(context.Background(), repo.Work, out, companion.CommitOptions{Branch: "hydrated"}); err != nil {
		t.Fatal(err)
	}
	return out
}

// hydratedVersion is data.version of a cluster's web ConfigMap on the
// branch "hydrated".
func hydratedVersion(t *testing.T, repo *gittest.Repo, cluster string) string {
	t.Helper()
	_, v, _ := strings.Cut(show(t, repo.Work, "hydrated", "clusters/"+cluster+"/web/manifest.yaml"), "version: ")
	v, _, _ = strings.Cut(v, "\n")
	return strings.Trim(strings.TrimSpace(v), `"'`)
}
