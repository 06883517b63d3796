package agent_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-logr/logr"
	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/internal/testenv"
	"github.com/flotilla-gitops/flotilla/sync/agent"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/identity"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/sandbox"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// bake is the rollout test's bake time.
const bake = 3 * time.Second

// rolloutFleet is the fleet of the rollout test: waves canary (1) → eu
// (2, one at a time) → rest (2), a bake of three seconds; bundle web follows
// the fleet's rollout, bundle hotfix goes everywhere at once.
type rolloutFleet struct {
	Web, Hotfix string // CUE values of the two ConfigMaps' data.v
	Offline     string
	Stale       string // default 10m
	Paused      bool
	Approve     bool   // the eu wave asks for an approval
	Approvers   string // an approver's SSH public key, when given
	Inventory   string // CUE of `clusters`, when given
	// OnFailure, ProgressDeadline and Reverts are the rollout's, when
	// given; Bake defaults to 3s; Broken adds a Deployment to web that
	// never becomes Ready (no controller runs in the test's clusters).
	// BrokenOn limits Broken to one cluster.
	OnFailure, ProgressDeadline, Reverts, Bake, BrokenOn string
	Broken                                               bool
}

func (f rolloutFleet) cue() string {
	if f.Offline == "" {
		f.Offline = "skip"
	}
	if f.Hotfix == "" {
		f.Hotfix = `"1"`
	}
	if f.Stale == "" {
		f.Stale = "10m"
	}
	inventory := ""
	if f.Inventory != "" {
		inventory = "clusters: " + f.Inventory
	}
	if f.Approvers != "" {
		inventory += fmt.Sprintf("\nrollout: approvers: [%q]", f.Approvers)
	}
	for field, v := range map[string]string{"onFailure": f.OnFailure, "progressDeadline": f.ProgressDeadline, "reverts": f.Reverts} {
		if v != "" {
			inventory += fmt.Sprintf("\nrollout: %s: %q", field, v)
		}
	}
	if f.Bake == "" {
		f.Bake = "3s"
	}
	broken := ""
	if f.Broken && f.BrokenOn != "" {
		broken = fmt.Sprintf("if cluster.name == %q ", f.BrokenOn)
	}
	if f.Broken {
		broken += `{apiVersion: "apps/v1", kind: "Deployment", metadata: name: "never-ready", spec: {
		selector: matchLabels: app: "never-ready"
		template: metadata: labels: app: "never-ready"
		template: spec: containers: [{name: "c", image: "registry.example/never:1"}]
	}},`
	}
	return fmt.Sprintf(`package fleet

%s
rollout: {
	waves: [
		{name: "canary", names: ["canary-*"]},
		{name: "eu", regions: ["eu-*"], maxUnavailable: 1, approve: %v},
		{name: "rest"},
	]
	bake:    %q
	stale:   %q
	offline: %q
	paused:  %v
}
bundles: web: {namespace: "rollout-web", resources: [
	{apiVersion: "v1", kind: "Namespace", metadata: name: "rollout-web"},
	{apiVersion: "v1", kind: "ConfigMap", metadata: name: "web", data: v: %s},
	%s
]}
bundles: hotfix: {namespace: "rollout-hotfix", rollout: waves: [], resources: [
	{apiVersion: "v1", kind: "Namespace", metadata: name: "rollout-hotfix"},
	{apiVersion: "v1", kind: "ConfigMap", metadata: name: "hotfix", data: v: %s},
]}
`, inventory, f.Approve, f.Bake, f.Stale, f.Offline, f.Paused, f.Web, broken, f.Hotfix)
}

// rolloutCluster is one cluster of the rollout test: its agent and an
// administrator's client of its API server.
type rolloutCluster struct {
	name   string
	agent  *agent.Agent
	kube   client.Client
	writes *writes // the agent's API requests that change something
	// cfg and opts made the agent (restart makes another).
	cfg  *rest.Config
	opts agent.Options
}

// restart replaces the cluster's agent with a new one, as a restarted
// pod would be: nothing in memory, the same cluster and Git.
func (c *rolloutCluster) restart(t *testing.T) {
	t.Helper()
	c.agent.Close()
	a, err := agent.New(c.writes.wrap(c.cfg), c.opts, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	c.agent = a
}

// configMap reads data.v of a ConfigMap, "" when there is none.
func (c *rolloutCluster) configMap(t *testing.T, ns, name string) string {
	t.Helper()
	var cm corev1.ConfigMap
	err := c.kube.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &cm)
	if apierrors.IsNotFound(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data["v"]
}

// rolloutTest is five clusters, each with its own API server and agent,
// following one fleet repository served over HTTP, with their status
// branches in it.
type rolloutTest struct {
	t        *testing.T
	repo     *gittest.Repo
	url      string
	auth     *githttp.BasicAuth
	clusters []*rolloutCluster // canary-1, eu-1, eu-2, us-1, us-2
	// seen records every value of web each cluster had after a pass.
	seen map[string][]string
}

func newRolloutTest(t *testing.T) *rolloutTest {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": rolloutFleet{Web: `"1"`}.cue()})
	rt := &rolloutTest{t: t, repo: repo, url: repo.ServeHTTP("fleet", "fleet-pass"),
		auth: &githttp.BasicAuth{Username: "fleet", Password: "fleet-pass"}, seen: map[string][]string{}}
	password := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(password, []byte("fleet-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// The package's control plane is canary-1; four more API servers.
	extra := testenv.StartFleetT(t, testenv.Options{Name: "eu-1"}, testenv.Options{Name: "eu-2"},
		testenv.Options{Name: "us-1"}, testenv.Options{Name: "us-2"})
	cfgs := []*rest.Config{cluster.Config, extra[0].Config, extra[1].Config, extra[2].Config, extra[3].Config}
	regions := []string{"us-east-1", "eu-west-1", "eu-central-1", "us-east-1", "us-west-2"}
	for i, name := range []string{"canary-1", "eu-1", "eu-2", "us-1", "us-2"} {
		kc, err := client.New(cfgs[i], client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		inventory := "flotilla-system"
		if i == 0 {
			inventory = newNamespace(t) // the package's control plane is shared
		} else if err := kc.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: inventory}}); err != nil {
			t.Fatal(err)
		}
		opts := agent.Options{
			Source:   source.Options{URL: rt.url, CacheDir: t.TempDir(), Auth: source.Auth{Username: "fleet", PasswordFile: password}},
			Identity: identity.Options{Name: name, Region: regions[i]},
			Interval: time.Minute,
			Apply:    apply.DefaultOptions(),
			// A heartbeat each second: a cluster whose agent runs is never
			// stale, even with the short `stale` of the test's last step.
			Status: &report.Options{URL: rt.url, Auth: rt.auth, Heartbeat: time.Second},
		}
		opts.Apply.InventoryNamespace = inventory
		if name == "eu-2" {
			opts.Sandbox = &sandbox.Options{} // the gate's evaluation in a worker, too
		}
		w := &writes{}
		a, err := agent.New(w.wrap(cfgs[i]), opts, logr.Discard())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.Close)
		rt.clusters = append(rt.clusters, &rolloutCluster{name: name, agent: a, kube: kc, writes: w, cfg: cfgs[i], opts: opts})
	}
	return rt
}

func (rt *rolloutTest) commit(f rolloutFleet) string {
	return rt.repo.Commit(map[string]string{"fleet.cue": f.cue()})
}

func (rt *rolloutTest) cluster(name string) *rolloutCluster {
	i := slices.IndexFunc(rt.clusters, func(c *rolloutCluster) bool { return c.name == name })
	if i < 0 {
		rt.t.Fatalf("no cluster %s", name)
	}
	return rt.clusters[i]
}

// pass runs one pass of the named clusters' agents (all, in name order,
// when none are named); a failed pass or status is fatal unless the
// cluster is in failing.
func (rt *rolloutTest) pass(names ...string) map[string]*agent.Pass {
	rt.t.Helper()
	if len(names) == 0 {
		for _, c := range rt.clusters {
			names = append(names, c.name)
		}
	}
	out := map[string]*agent.Pass{}
	for _, name := range names {
		c := rt.cluster(name)
		p := c.agent.RunOnce(context.Background())
		if p.StatusErr != nil {
			rt.t.Fatalf("%s: status not published: %v", name, p.StatusErr)
		}
		out[name] = p
		rt.seen[name] = append(rt.seen[name], c.configMap(rt.t, "rollout-web", "web"))
	}
	return out
}

// web is every cluster's web value, in cluster order.
func (rt *rolloutTest) web() []string {
	var out []string
	for _, c := range rt.clusters {
		out = append(out, c.configMap(rt.t, "rollout-web", "web"))
	}
	return out
}

// until runs step (which runs passes) until it says done, for at most a
// minute (a bake is three seconds; a loaded machine is slow).
func (rt *rolloutTest) until(what string, step func() bool) {
	rt.t.Helper()
	rt.within(time.Minute, what, step)
}

// within runs step until it says done, for at most d.
func (rt *rolloutTest) within(d time.Duration, what string, step func() bool) {
	rt.t.Helper()
	deadline := time.Now().Add(d)
	for !step() {
		if time.Now().After(deadline) {
			rt.t.Fatalf("%s: not within %s; web %v", what, d, rt.web())
		}
	}
}

// waitsAfterBake runs passes of every cluster until the named cluster,
// having reported after the canary's bake at revision, still waits and
// its rollout message contains reason: the wait is not the bake's.
func (rt *rolloutTest) waitsAfterBake(name, revision, reason string) *report.Status {
	rt.t.Helper()
	var st *report.Status
	rt.until(name+" waiting after the canary's bake: "+reason, func() bool {
		rt.pass()
		canary := rt.status("canary-1")
		st = rt.status(name)
		return canary.AppliedRevision == revision && canary.ReadySince != nil &&
			st.ReportedAt.Sub(*canary.ReadySince) > bake && st.Rollout != nil && st.Rollout.Revision == revision &&
			st.Rollout.State != report.RolloutApplied && strings.Contains(st.Rollout.Message, reason)
	})
	return st
}

func (rt *rolloutTest) status(name string) *report.Status {
	rt.t.Helper()
	st, err := report.ReadCluster(context.Background(), rt.url, "", name, rt.auth)
	if err != nil {
		rt.t.Fatal(err)
	}
	return st
}

// TestRolloutWaves: five clusters with their own API servers and agents
// and an HTTP Git server; waves canary (1) → eu (2, maxUnavailable 1) →
// rest (2), a bake of three seconds. A commit reaches canary first and the
// others only after canary's bake, eu one at a time; a commit that fails
// on canary never reaches the others (halted, in their status); a newer
// commit during a rollout supersedes it; a bundle with `waves: []` goes
// everywhere at once while the rest waits; an inventory cluster that never
// reported is skipped with `offline: skip` and blocks with `block`, and so
// is a cluster whose agent stopped, once silent for `stale`;
// `paused` keeps the later waves; an approval lets the eu wave go.
func TestRolloutWaves(t *testing.T) {
	rt := newRolloutTest(t)
	all := func(v string) func() bool {
		return func() bool {
			rt.pass()
			return slices.Equal(rt.web(), []string{v, v, v, v, v})
		}
	}

	// The first revision: canary first; the others wait for its bake.
	rt.pass()
	if got := rt.web(); !slices.Equal(got, []string{"1", "", "", "", ""}) {
		t.Fatalf("after the first passes, web %v: only canary should have it", got)
	}
	canary := rt.status("canary-1")
	if canary.Phase != report.ClusterReady || canary.Wave != "canary" || canary.ReadySince == nil {
		t.Fatalf("canary status %+v", canary)
	}
	eu1 := rt.status("eu-1")
	if eu1.Phase != report.ClusterWaiting || eu1.Rollout == nil || eu1.Rollout.State != report.RolloutWaiting || eu1.Rollout.Until == nil {
		t.Fatalf("eu-1 while canary bakes: %+v, rollout %+v", eu1, eu1.Rollout)
	}
	// hotfix (`waves: []`) is everywhere already.
	for _, c := range rt.clusters {
		if v := c.configMap(t, "rollout-hotfix", "hotfix"); v != "1" {
			t.Errorf("%s: hotfix %q, want it everywhere at once", c.name, v)
		}
	}

	// eu once canary has baked, one at a time: eu-2 asks before eu-1 and
	// waits for it; then eu-1 goes, then eu-2.
	rt.until("eu-2 waiting for its turn after canary's bake", func() bool {
		rt.pass("canary-1", "eu-2")
		st := rt.status("eu-2")
		return st.Rollout != nil && slices.Equal(st.Rollout.WaitingFor, []string{"eu-1"})
	})
	if took := time.Since(*canary.ReadySince); took < bake {
		t.Errorf("eu's turn came %s after canary was Ready, before the bake", took)
	}
	if got := rt.web(); !slices.Equal(got, []string{"1", "", "", "", ""}) {
		t.Fatalf("eu-2 waiting for eu-1: web %v", got)
	}
	rt.pass("eu-1", "eu-2")
	if got := rt.web(); !slices.Equal(got[:3], []string{"1", "1", "1"}) {
		t.Fatalf("eu-1 then eu-2: web %v", got)
	}
	rt.until("every cluster at 1", all("1"))
	// eu-1 took the revision while its agent watched: the time from the
	// commit is in its histogram, by wave.
	rec := httptest.NewRecorder()
	rt.cluster("eu-1").agent.Handler(nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if m := rec.Body.String(); !strings.Contains(m, `flotilla_commit_to_ready_seconds_count{wave="eu"} 1`) {
		t.Errorf("eu-1's commit-to-Ready histogram:\n%s", m)
	}

	// A commit that fails on canary (an invalid ConfigMap) never reaches
	// the others: halted, their objects unchanged, canary's too.
	rev2 := rt.commit(rolloutFleet{Web: `2`})
	for range 3 {
		ps := rt.pass()
		if !ps["canary-1"].Failed() {
			t.Fatalf("canary applied an invalid ConfigMap")
		}
	}
	if got := rt.web(); !slices.Equal(got, []string{"1", "1", "1", "1", "1"}) {
		t.Fatalf("after a commit that fails on canary, web %v", got)
	}
	for _, name := range []string{"eu-1", "us-2"} {
		st := rt.status(name)
		if st.Phase != report.ClusterWaiting || st.Rollout == nil || st.Rollout.State != report.RolloutHalted ||
			st.Rollout.HaltedBy != "canary-1" || st.Rollout.Revision != rev2 {
			t.Errorf("%s after canary failed: phase %s, rollout %+v", name, st.Phase, st.Rollout)
		}
	}

	// The metrics say it too.
	rec = httptest.NewRecorder()
	rt.cluster("eu-1").agent.Handler(nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if m := rec.Body.String(); !strings.Contains(m, `flotilla_rollout_state{state="Halted"} 1`) || !strings.Contains(m, `flotilla_rollout_state{state="Applied"} 0`) {
		t.Errorf("eu-1's metrics while halted:\n%s", m)
	}

	// While halted, eu-1's drift correction keeps running at its revision:
	// a hand edit is put back by the running agent.
	eu := rt.cluster("eu-1")
	var cm corev1.ConfigMap
	if err := eu.kube.Get(context.Background(), client.ObjectKey{Namespace: "rollout-web", Name: "web"}, &cm); err != nil {
		t.Fatal(err)
	}
	cm.Data["v"] = "tampered"
	if err := eu.kube.Update(context.Background(), &cm, client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eu.agent.Run(ctx) }()
	for deadline := time.Now().Add(time.Minute); eu.configMap(t, "rollout-web", "web") != "1"; {
		if time.Now().After(deadline) {
			t.Fatalf("eu-1's hand edit was not put back while halted: %q", eu.configMap(t, "rollout-web", "web"))
		}
		time.Sleep(100 * time.Millisecond) // polling the cluster, not synchronising
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// A good commit supersedes it; a newer one supersedes that one in
	// turn while it bakes on canary: the others go from 1 to 4.
	rt.commit(rolloutFleet{Web: `"3"`})
	rt.pass("canary-1")
	rt.commit(rolloutFleet{Web: `"4"`, Hotfix: `"2"`})
	rt.pass()
	if got := rt.web(); got[0] != "4" {
		t.Fatalf("after a newer commit, web %v", got)
	}
	for _, c := range rt.clusters {
		if v := c.configMap(t, "rollout-hotfix", "hotfix"); v != "2" {
			t.Errorf("%s: hotfix %q while web waits, want 2", c.name, v)
		}
	}
	rt.until("every cluster at 4", all("4"))
	for _, c := range rt.clusters[1:] {
		if slices.Contains(rt.seen[c.name], "3") {
			t.Errorf("%s applied the superseded revision: %v", c.name, rt.seen[c.name])
		}
	}

	// An inventory cluster that never reported: `block` waits for it.
	rev5 := rt.commit(rolloutFleet{Web: `"5"`, Offline: "block", Inventory: `"canary-2": {}`})
	rt.waitsAfterBake("eu-1", rev5, "canary-2 (offline)")
	if got := rt.web(); !slices.Equal(got, []string{"5", "4", "4", "4", "4"}) {
		t.Fatalf("with an offline canary-2 and offline: block, web %v", got)
	}
	if st := rt.status("eu-1"); st.Rollout == nil || !slices.Contains(st.Rollout.WaitingFor, "canary-2 (offline)") {
		t.Errorf("eu-1 blocked by canary-2: rollout %+v", st.Rollout)
	}
	// `skip`: it does not block.
	rt.commit(rolloutFleet{Web: `"6"`, Offline: "skip", Inventory: `"canary-2": {}`})
	rt.until("every cluster at 6, canary-2 skipped", all("6"))

	// Paused: canary takes the commit, the later waves keep theirs — and,
	// waiting, write nothing to their API servers, from the first pass at
	// the new tip on.
	rev7 := rt.commit(rolloutFleet{Web: `"7"`, Paused: true})
	before := map[string]int64{}
	for _, c := range rt.clusters {
		before[c.name] = c.writes.n.Load()
	}
	rt.waitsAfterBake("us-1", rev7, "paused")
	for _, c := range rt.clusters[1:] {
		if n := c.writes.n.Load() - before[c.name]; n != 0 {
			t.Errorf("%s made %d API writes while waiting", c.name, n)
		}
	}
	if got := rt.web(); !slices.Equal(got, []string{"7", "6", "6", "6", "6"}) {
		t.Fatalf("paused: web %v", got)
	}
	if st := rt.status("us-1"); st.Rollout == nil || !strings.Contains(st.Rollout.Message, "paused") {
		t.Errorf("us-1 while paused: %+v", st.Rollout)
	}

	// Approval: eu waits for one after canary's bake; rest waits for eu.
	// The rollout names an approver: an entry anyone pushed to the
	// approvals branch approves nothing, the approver's signed one does.
	signer, approver := approverKey(t)
	rev8 := rt.commit(rolloutFleet{Web: `"8"`, Approve: true, Approvers: approver})
	rt.waitsAfterBake("eu-1", rev8, "approval")
	if got := rt.web(); !slices.Equal(got, []string{"8", "6", "6", "6", "6"}) {
		t.Fatalf("before the approval: web %v", got)
	}
	if st := rt.status("eu-1"); st.Rollout == nil || !strings.Contains(st.Rollout.Message, "approval") {
		t.Errorf("eu-1 before the approval: %+v", st.Rollout)
	}
	forged := report.Approval{Revision: rev8, Wave: "eu", By: "Ada <ada@example.com>", At: time.Now()}
	if _, err := report.Approve(context.Background(), report.ApproveOptions{URL: rt.url, Auth: rt.auth,
		Author: object.Signature{Name: "agent", Email: "agent@example.com"}}, forged); err != nil {
		t.Fatal(err)
	}
	rt.pass("eu-1", "eu-2")
	if got := rt.web(); !slices.Equal(got, []string{"8", "6", "6", "6", "6"}) {
		t.Fatalf("an unsigned approval let eu through: web %v", got)
	}
	signed := report.Approval{Revision: rev8, Wave: "eu", By: "Ada <ada@example.com>", At: time.Now()}
	if err := report.SignApproval(&signed, signer); err != nil {
		t.Fatal(err)
	}
	added, err := report.Approve(context.Background(), report.ApproveOptions{URL: rt.url, Auth: rt.auth,
		Author: object.Signature{Name: "Ada", Email: "ada@example.com"}, Approvers: []string{approver}}, signed)
	if err != nil || !added {
		t.Fatalf("approve: %v %v", added, err)
	}
	rt.until("every cluster at 8 after the approval", all("8"))
	if log := gittest.Git(t, rt.repo.Bare, "log", "--format=%an %s", report.DefaultApprovalsBranch); !strings.Contains(log, "Ada rollout: approve wave eu for "+rev8[:7]) {
		t.Errorf("approvals history: %s", log)
	}

	// canary-1's agent stops. Once it has been silent for `stale`, with
	// `offline: skip`, it no longer holds the others up.
	rt.commit(rolloutFleet{Web: `"9"`, Stale: "6s"})
	lastReport := rt.status("canary-1").ReportedAt
	rt.until("the others at 9 without canary-1", func() bool {
		rt.pass("eu-1", "eu-2", "us-1", "us-2")
		return slices.Equal(rt.web(), []string{"8", "9", "9", "9", "9"})
	})
	if eu := rt.status("eu-1"); eu.ReadySince == nil || eu.ReadySince.Before(lastReport.Add(6*time.Second)) {
		t.Errorf("eu-1 took 9 at %v, before canary-1 (last report %v) was stale", eu.ReadySince, lastReport)
	}
}

// approverKey makes an approver's SSH key: its signer and its
// authorized_keys line.
func approverKey(t *testing.T) (ssh.Signer, string) {
	t.Helper()
	signer, pub := gittest.NewSSHKey(t)
	line, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	return signer, strings.TrimSpace(string(line)) + " ada@example.com"
}
