package agent_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/internal/testenv"
	"github.com/flotilla-gitops/flotilla/sync/agent"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/identity"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/sandbox"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// fleetV1 is the tests' fleet. Its objects go to the namespace of the agent
// that applies it, which every test agent has as its label ns (see
// newAgent): agents of several tests share the package's control plane.
const fleetV1 = `package fleet

bundles: [string]: namespace: cluster.labels.ns
bundles: common: resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "common", data: "cluster": cluster.name}]
bundles: "prod-only": {
	target: clusterSelector: matchLabels: env: "prod"
	resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "prod-only", data: v: "1"}]
}
`

// The package's control plane, started once by TestMain (as sync/apply
// does), and an administrator's client of it. Tests keep apart by
// namespace: each agent applies, keeps its inventory and reads its identity
// ConfigMap in a namespace of its own.
var (
	cluster *testenv.Cluster
	kube    client.Client
)

func TestMain(m *testing.M) {
	sandbox.Main() // the agents' render workers are this test binary
	ctrllog.SetLogger(logr.Discard())
	os.Exit(testenv.RunMain(m, testenv.Options{Name: "agent"}, func(c *testenv.Cluster) error {
		cluster = c
		var err error
		kube, err = client.New(c.Config, client.Options{})
		return err
	}))
}

// writes counts the API requests that change something.
// writes counts an agent's API requests that change something, and
// those of them about Deployments.
type writes struct{ n, deployments atomic.Int64 }

func (w *writes) wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTrip(func(r *http.Request) (*http.Response, error) {
			if r.Method != http.MethodGet {
				w.n.Add(1)
				if strings.Contains(r.URL.Path, "/deployments") {
					w.deployments.Add(1)
				}
			}
			return rt.RoundTrip(r)
		})
	})
	return cfg
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// testAgent is an agent of a test and its namespace.
type testAgent struct {
	*agent.Agent
	// NS holds the agent's objects, inventory and identity ConfigMap.
	NS string
}

// namespaces counts the namespaces made, to keep their names unique.
var namespaces atomic.Int64

// newNamespace creates a namespace for a test and returns its name.
func newNamespace(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%s", namespaces.Add(1), strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-")))
	name = strings.TrimRight(name[:min(len(name), 50)], "-")
	if err := kube.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

// newAgent makes an agent for the cluster name with labels, applying with
// cfg (the package's control plane, maybe wrapped or impersonating), in a
// new namespace of its own unless ns is given.
func newAgent(t testing.TB, cfg *rest.Config, repo *gittest.Repo, name string, labels map[string]string, tweaks ...func(*agent.Options)) *testAgent {
	t.Helper()
	return newLoggingAgent(t, cfg, repo, name, labels, logr.Discard(), tweaks...)
}

// newLoggingAgent is newAgent logging to log.
func newLoggingAgent(t testing.TB, cfg *rest.Config, repo *gittest.Repo, name string, labels map[string]string, log logr.Logger, tweaks ...func(*agent.Options)) *testAgent {
	t.Helper()
	ns := newNamespace(t)
	labels = maps.Clone(labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels["ns"] = ns
	opts := agent.Options{
		Source:   source.Options{URL: repo.URL, CacheDir: t.TempDir()},
		Identity: identity.Options{Name: name, Labels: labels, ConfigMapNamespace: ns, ConfigMapName: "flotilla-identity"},
		Interval: time.Minute,
		Apply:    apply.DefaultOptions(),
	}
	opts.Apply.InventoryNamespace = ns
	for _, tweak := range tweaks {
		tweak(&opts)
	}
	a, err := agent.New(cfg, opts, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return &testAgent{Agent: a, NS: ns}
}

// configMapData reads a ConfigMap of the agent's namespace.
func (a *testAgent) configMapData(t *testing.T, name string) (map[string]string, bool) {
	t.Helper()
	var cm corev1.ConfigMap
	err := kube.Get(context.Background(), client.ObjectKey{Namespace: a.NS, Name: name}, &cm)
	if apierrors.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data, true
}

// TestAgentPasses runs agents for two clusters from one repository (two
// identities; their objects, inventories and identity ConfigMaps kept
// apart by namespace on the package's control plane): each gets its
// bundles; an unchanged remote makes no write; a commit is applied; an
// identity ConfigMap change re-plans without a commit.
func TestAgentPasses(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": fleetV1})
	var prodWrites writes
	prod := newAgent(t, prodWrites.wrap(cluster.Config), repo, "prod-1", map[string]string{"env": "prod"})
	dev := newAgent(t, cluster.Config, repo, "dev-1", map[string]string{"env": "dev"})

	for _, a := range []*testAgent{prod, dev} {
		if p := a.RunOnce(context.Background()); p.Failed() || !p.Changed {
			t.Fatalf("first pass: changed %v, err %v, result %+v", p.Changed, p.Err, p.Result)
		}
	}
	if data, ok := prod.configMapData(t, "common"); !ok || data["cluster"] != "prod-1" {
		t.Errorf("prod common: %v %v", data, ok)
	}
	if _, ok := prod.configMapData(t, "prod-only"); !ok {
		t.Error("prod lacks prod-only")
	}
	if _, ok := dev.configMapData(t, "prod-only"); ok {
		t.Error("dev got prod-only")
	}

	// Nothing changed: no fetch, no render, no write.
	before := prodWrites.n.Load()
	p := prod.RunOnce(context.Background())
	if p.Failed() || p.Changed || p.Result != nil {
		t.Fatalf("idle pass: changed %v, err %v", p.Changed, p.Err)
	}
	if n := prodWrites.n.Load() - before; n != 0 {
		t.Errorf("idle pass made %d writes", n)
	}

	// A commit is applied.
	rev := repo.Commit(map[string]string{"fleet.cue": strings.Replace(fleetV1, `v: "1"`, `v: "2"`, 1)})
	if p = prod.RunOnce(context.Background()); p.Failed() || !p.Changed || p.Revision != rev {
		t.Fatalf("pass after commit: %+v", p)
	}
	if data, _ := prod.configMapData(t, "prod-only"); data["v"] != "2" {
		t.Errorf("prod-only after commit: %v", data)
	}

	// The identity ConfigMap changes the cluster's labels: re-planned
	// without a commit, prod-only leaves.
	identity := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: prod.NS, Name: "flotilla-identity"}, Data: map[string]string{"label.env": "staging"}}
	if err := kube.Create(context.Background(), identity); err != nil {
		t.Fatal(err)
	}
	if p = prod.RunOnce(context.Background()); p.Failed() || !p.Changed || p.Cluster.Labels["env"] != "staging" {
		t.Fatalf("pass after identity change: changed %v err %v labels %v", p.Changed, p.Err, p.Cluster.Labels)
	}
	if _, ok := prod.configMapData(t, "prod-only"); ok {
		t.Error("prod-only still on a cluster that is no longer prod")
	}
}

// syncedAgent makes a repository with fleetV1 and runs a first successful
// pass of an agent for prod-1 (env=prod).
func syncedAgent(t *testing.T) (*testAgent, *gittest.Repo) {
	t.Helper()
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": fleetV1})
	a := newAgent(t, cluster.Config, repo, "prod-1", map[string]string{"env": "prod"})
	if p := a.RunOnce(context.Background()); p.Failed() {
		t.Fatalf("first pass: %v", p.Err)
	}
	return a, repo
}

// TestAgentBrokenCommitKeepsState checks that a commit that does not
// evaluate fails the pass and leaves the cluster as it was.
func TestAgentBrokenCommitKeepsState(t *testing.T) {
	a, repo := syncedAgent(t)
	repo.Commit(map[string]string{"fleet.cue": "package fleet\n\nbundles: {\n"})
	p := a.RunOnce(context.Background())
	if p.Err == nil || !strings.Contains(p.Err.Error(), "nothing applied or pruned") || !strings.Contains(p.Err.Error(), "fleet.cue:") {
		t.Errorf("broken commit: %v", p.Err)
	}
	if _, ok := a.configMapData(t, "prod-only"); !ok {
		t.Error("a broken commit removed objects")
	}
}

// TestAgentRequiresSignatures checks that with trusted keys, a signed
// commit is applied and an unsigned one is not (the cluster keeps the
// signed state).
func TestAgentRequiresSignatures(t *testing.T) {
	key, keyFile := gittest.NewKey(t, "release")
	repo := gittest.New(t)
	repo.SignedCommit(key, map[string]string{"fleet.cue": fleetV1})
	a := newAgent(t, cluster.Config, repo, "prod-1", map[string]string{"env": "prod"}, func(o *agent.Options) {
		o.TrustedKeys = []string{keyFile}
	})
	if p := a.RunOnce(context.Background()); p.Failed() {
		t.Fatalf("signed commit: %v", p.Err)
	}
	repo.Commit(map[string]string{"fleet.cue": strings.Replace(fleetV1, `v: "1"`, `v: "evil"`, 1)})
	p := a.RunOnce(context.Background())
	if !errors.Is(p.Err, source.ErrUnsigned) {
		t.Errorf("unsigned commit: %v", p.Err)
	}
	if data, _ := a.configMapData(t, "prod-only"); data["v"] != "1" {
		t.Errorf("an unsigned commit changed the cluster: %v", data)
	}
}

// TestRemoteDownThenBack checks that a remote that disappears fails the
// pass without touching the cluster, and that the next pass after it
// returns applies the new tip.
func TestRemoteDownThenBack(t *testing.T) {
	a, repo := syncedAgent(t)
	rev := repo.Commit(map[string]string{"fleet.cue": strings.Replace(fleetV1, `v: "1"`, `v: "2"`, 1)})

	// The server is gone.
	away := repo.Bare + ".away"
	if err := os.Rename(repo.Bare, away); err != nil {
		t.Fatal(err)
	}
	p := a.RunOnce(context.Background())
	if p.Err == nil || !strings.Contains(p.Err.Error(), "git:") {
		t.Fatalf("pass with the remote gone: %v", p.Err)
	}
	if data, _ := a.configMapData(t, "prod-only"); data["v"] != "1" {
		t.Errorf("cluster changed while the remote was gone: %v", data)
	}

	// Back: the next pass applies the tip.
	if err := os.Rename(away, repo.Bare); err != nil {
		t.Fatal(err)
	}
	if p = a.RunOnce(context.Background()); p.Failed() || p.Revision != rev {
		t.Fatalf("pass after the remote came back: %+v", p)
	}
	if data, _ := a.configMapData(t, "prod-only"); data["v"] != "2" {
		t.Errorf("after recovery: %v", data)
	}
}

// TestShutdownMidApply ends the agent's context while a bundle waits for
// readiness that cannot come (no controllers run in this cluster): Run
// returns promptly and what was applied is recorded in the inventory.
func TestShutdownMidApply(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": `package fleet

bundles: app: {
	namespace: cluster.labels.ns
	timeout: "1h"
	resources: [{apiVersion: "apps/v1", kind: "Deployment", metadata: name: "never-ready",
		spec: {selector: matchLabels: app: "x", template: {metadata: labels: app: "x", spec: containers: [{name: "x", image: "x"}]}}}]
}
`})
	a := newAgent(t, cluster.Config, repo, "prod-1", nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()

	// Applied, now waiting: stop it (what SIGTERM does).
	waitFor(t, func() bool {
		var d appsv1.Deployment
		return kube.Get(context.Background(), client.ObjectKey{Namespace: a.NS, Name: "never-ready"}, &d) == nil
	})
	cancel()
	select {
	case <-done: //nolint:errcheck // the run's error is not what this test is about
	case <-time.After(time.Minute):
		t.Fatal("the agent did not stop within a minute of its context ending")
	}
	var inv corev1.ConfigMap
	if err := kube.Get(context.Background(), client.ObjectKey{Namespace: a.NS, Name: "flotilla-inv-app"}, &inv); err != nil {
		t.Fatalf("inventory not recorded: %v", err)
	}
	if !strings.Contains(inv.Data["objects"], "never-ready") {
		t.Errorf("inventory: %q", inv.Data["objects"])
	}
}

// TestAgentPublishesStatus checks the status file an agent writes: phases,
// revision and digests, a Secret's value nowhere on the branch, and a
// status repository that is unreachable not failing the pass and catching
// up once it is back.
func TestAgentPublishesStatus(t *testing.T) {
	repo := gittest.New(t)
	rev := repo.Commit(map[string]string{"fleet.cue": fleetV1 + `
bundles: creds: resources: [{apiVersion: "v1", kind: "Secret", metadata: name: "creds", stringData: token: "sup3r-s3cret-value"}]
`})
	statusRepo := gittest.New(t)
	a := newAgent(t, cluster.Config, repo, "prod-1", map[string]string{"env": "prod"}, func(o *agent.Options) {
		o.Status = &report.Options{URL: statusRepo.URL}
	})
	if p := a.RunOnce(context.Background()); p.Failed() || p.StatusErr != nil {
		t.Fatalf("pass: %v, status: %v", p.Err, p.StatusErr)
	}
	st, err := report.ReadCluster(context.Background(), statusRepo.URL, "", "prod-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != report.ClusterReady || st.AppliedRevision != rev || len(st.Bundles) != 3 || st.Bundles[0].RenderedDigest == "" || st.Bundles[0].InputsDigest == "" {
		t.Errorf("status %+v", st)
	}
	// Ready since this pass (a rollout's bake counts from it).
	if st.ReadySince == nil || time.Since(*st.ReadySince) > time.Minute {
		t.Fatalf("readySince %v", st.ReadySince)
	}
	first := st.ReadySince
	if out := gittest.Git(t, statusRepo.Bare, "log", "-p", "--all"); strings.Contains(out, "sup3r-s3cret") {
		t.Error("a Secret's value reached the status branch")
	}

	// The status repository goes away: the pass still applies; the status
	// is published when it is back.
	away := statusRepo.Bare + ".away"
	if err := os.Rename(statusRepo.Bare, away); err != nil {
		t.Fatal(err)
	}
	rev2 := repo.Commit(map[string]string{"fleet.cue": strings.Replace(fleetV1, `v: "1"`, `v: "2"`, 1)})
	p := a.RunOnce(context.Background())
	if p.Failed() || p.StatusErr == nil {
		t.Fatalf("pass with the status repository gone: err %v, status err %v", p.Err, p.StatusErr)
	}
	if err := os.Rename(away, statusRepo.Bare); err != nil {
		t.Fatal(err)
	}
	if p = a.RunOnce(context.Background()); p.StatusErr != nil {
		t.Fatal(p.StatusErr)
	}
	if st, err = report.ReadCluster(context.Background(), statusRepo.URL, "", "prod-1", nil); err != nil || st.AppliedRevision != rev2 {
		t.Errorf("status after the repository came back: %+v, %v", st, err)
	}
	// A new revision is a new Ready: readySince moves with it.
	if st.ReadySince == nil || !st.ReadySince.After(*first) {
		t.Errorf("readySince %v after a new revision, first %v", st.ReadySince, first)
	}
}
