package sandbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/rendertest"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
	"github.com/flotilla-gitops/flotilla/sync/sandbox"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestMain(m *testing.M) {
	sandbox.Main() // this test binary is also the workers' program
	os.Exit(m.Run())
}

func newPool(t *testing.T, opts sandbox.Options) *sandbox.Pool {
	t.Helper()
	p, err := sandbox.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// repo writes a repository with a well-behaved chart, a runaway chart
// (a loop of 10^10 steps), a chart that wants 2 GB and a manifests folder.
func repo(t testing.TB) string {
	dir := t.TempDir()
	chart := func(name, template string) {
		rendertest.WriteFile(t, dir, "charts/"+name+"/Chart.yaml", "apiVersion: v2\nname: "+name+"\nversion: 0.1.0\n")
		rendertest.WriteFile(t, dir, "charts/"+name+"/templates/cm.yaml", template)
	}
	chart("good", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  replicas: {{ .Values.replicas | quote }}\n")
	chart("forever", "{{ range until 100000 }}{{ range until 100000 }}{{ end }}{{ end }}\n")
	chart("hungry", "{{ $s := repeat 2000000000 \"x\" }}apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ len $s }}\n")
	rendertest.WriteFile(t, dir, "manifests/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\ndata:\n  n: \"1\"\n  big: 12345678901\n")
	return dir
}

func helmRequest(dir, chart string) *render.Request {
	return &render.Request{Bundle: chart, Namespace: "apps", Cluster: "c1", RepoDir: dir,
		Values: json.RawMessage(`{"replicas": 3}`),
		Source: spec.Source{Kind: spec.KindHelm, Helm: &spec.Helm{Chart: "charts/" + chart}}}
}

// TestSandboxRendersAsInProcess: the same requests give the same objects
// (integers stay integers across the process boundary).
func TestSandboxRendersAsInProcess(t *testing.T) {
	dir := repo(t)
	pool := newPool(t, sandbox.Options{})
	sandboxed := render.NewEngine(pool.Renderers(), nil)
	local := render.NewEngine(planrender.InProcess(planrender.Options{}), nil)
	for _, req := range []*render.Request{
		helmRequest(dir, "good"),
		{Bundle: "m", Namespace: "apps", RepoDir: dir, Source: spec.Source{Kind: spec.KindManifests, Manifests: &spec.Manifests{Path: "manifests"}}},
	} {
		want, err := local.Render(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := sandboxed.Render(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if got.Digest != want.Digest || len(got.Objects) != len(want.Objects) {
			t.Errorf("%s: sandboxed digest %s (%d objects), in process %s (%d)", req.Bundle, got.Digest, len(got.Objects), want.Digest, len(want.Objects))
		}
	}
	// Errors come back whole, path escapes recognisable.
	_, err := sandboxed.Render(context.Background(), &render.Request{Bundle: "x", RepoDir: dir,
		Source: spec.Source{Kind: spec.KindManifests, Manifests: &spec.Manifests{Path: "../elsewhere"}}})
	if !errors.Is(err, render.ErrPathEscapes) {
		t.Errorf("path escape: %v", err)
	}
}

// TestRunawayRenderFailsAlone: a chart that never finishes fails at its
// deadline, one that wants 2 GB fails at the memory bound; each kills
// only its own worker, and the next render succeeds.
func TestRunawayRenderFailsAlone(t *testing.T) {
	dir := repo(t)
	pool := newPool(t, sandbox.Options{Workers: 1, Memory: 256 << 20})
	engine := render.NewEngine(pool.Renderers(), nil).WithLimits(render.Limits{Timeout: 3 * time.Second})

	start := time.Now()
	_, err := engine.Render(context.Background(), helmRequest(dir, "forever"))
	if !errors.Is(err, render.ErrTimeout) || !strings.Contains(err.Error(), "bundle forever: rendering stopped: took longer than its render timeout (3s)") {
		t.Errorf("runaway: %v", err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("the runaway render held on for %s", took)
	}
	// A bundle's own renderTimeout wins.
	req := helmRequest(dir, "forever")
	req.RenderTimeout = "1s"
	if _, err := engine.Render(context.Background(), req); err == nil || !strings.Contains(err.Error(), "(1s)") {
		t.Errorf("bundle's renderTimeout: %v", err)
	}

	// Generous deadlines from here: the memory bound must be what stops
	// the hungry chart, on a loaded machine too.
	engine = render.NewEngine(pool.Renderers(), nil).WithLimits(render.Limits{Timeout: 2 * time.Minute})
	_, err = engine.Render(context.Background(), helmRequest(dir, "hungry"))
	if !errors.Is(err, sandbox.ErrMemory) || !strings.Contains(err.Error(), "more than the 256 MiB allowed") {
		t.Errorf("hungry: %v", err)
	}

	res, err := engine.Render(context.Background(), helmRequest(dir, "good"))
	if err != nil || len(res.Objects) != 1 {
		t.Fatalf("after the failures: %v", err)
	}
}

// TestOfflineWorkersReachNoNetwork: a worker for a job that needs no
// network cannot connect anywhere, not even to this machine. (Proof of
// the isolation beneath the renderers' own refusals: kustomize's remote
// checks, Helm's offline lookup, CUE without a registry.)
func TestOfflineWorkersReachNoNetwork(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	pool := newPool(t, sandbox.Options{})
	err = sandbox.Probe(pool, context.Background(), l.Addr().String())
	if known, isolated := pool.Isolated(); !known || !isolated {
		t.Fatalf("offline workers got no network namespace of their own on this machine (root, or unprivileged user namespaces, is needed); probe: %v", err)
	}
	if err == nil || !strings.Contains(err.Error(), "network is unreachable") {
		t.Errorf("an offline worker reached %s: %v", l.Addr(), err)
	}
}

// TestOfflineWorkersWithoutNamespaceReachNothing: where no network
// namespace can be made (a pod's default seccomp profile, many CI
// runners), an offline worker's HTTP client and resolver still reach
// nothing — loopback included, which the environment's dead proxy does
// not cover (Go never proxies localhost): a server on this machine logs
// no request.
func TestOfflineWorkersWithoutNamespaceReachNothing(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		fmt.Fprintln(w, "apiVersion: v1\nkind: ConfigMap")
	}))
	defer srv.Close()
	sock := filepath.Join(t.TempDir(), "proxy.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	pool := newPool(t, sandbox.Options{})
	sandbox.WithoutNetworkNamespace(pool)
	for addr, want := range map[string]string{
		"unix:" + sock:                         "network is unreachable", // a local proxy's socket
		srv.URL + "/base.yaml":                 "no network while rendering offline",
		"flotilla.invalid":                     "no network while rendering offline",
		strings.TrimPrefix(srv.URL, "http://"): "network is unreachable", // a dial of its own
		"[::1]:" + srv.URL[strings.LastIndex(srv.URL, ":")+1:]: "network is unreachable",
	} {
		err := sandbox.Probe(pool, context.Background(), addr)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("an offline worker without a namespace reached %s: %v (want %q)", addr, err, want)
		}
	}
	if _, isolated := pool.Isolated(); isolated {
		t.Fatal("the workers had a namespace: the test proves nothing")
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("the loopback server got %d requests from an offline worker", n)
	}
}

// TestPlanInSandbox: the plan a worker returns is the one this process
// would make; a fleet's problems come back as positioned diagnostics; an
// evaluation that never ends fails at the deadline.
func TestPlanInSandbox(t *testing.T) {
	dir := t.TempDir()
	rendertest.WriteFile(t, dir, "fleet.cue", `package fleet

bundles: web: {namespace: "apps", values: replicas: *2 | int, resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "web"}]
	overlays: [{regions: ["eu-*"], values: replicas: 3}]}
`)
	c := fleet.Cluster{Name: "eu-1", Region: "eu-west-1"}
	f, err := fleet.Load(dir, fleet.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, err := f.Plan(c)
	if err != nil {
		t.Fatal(err)
	}
	pool := newPool(t, sandbox.Options{})
	got, err := pool.Plan(context.Background(), dir, fleet.LoadOptions{}, c)
	if err != nil {
		t.Fatal(err)
	}
	wj, _ := json.Marshal(want)
	gj, _ := json.Marshal(got)
	if string(wj) != string(gj) {
		t.Errorf("sandboxed plan\n%s\nin process\n%s", gj, wj)
	}

	rendertest.WriteFile(t, dir, "fleet.cue", "package fleet\n\nbundles: web: {resources: [], wait: \"yes\"}\nbundle: x: 1\n")
	_, err = pool.Plan(context.Background(), dir, fleet.LoadOptions{}, c)
	if ds := fleet.AsDiagnostics(err); len(ds) == 0 || !strings.Contains(err.Error(), "fleet.cue:4:1") {
		t.Errorf("a broken fleet: %v", err)
	}

	rendertest.WriteFile(t, dir, "fleet.cue", `package fleet

import "list"

bundles: web: {resources: [], values: n: len([for i in list.Range(0, 2000000000, 1) {i}])}
`)
	start := time.Now()
	short := newPool(t, sandbox.Options{PlanTimeout: 3 * time.Second})
	_, err = short.Plan(context.Background(), dir, fleet.LoadOptions{}, c)
	if err == nil || (!strings.Contains(err.Error(), "took longer than 3s") && !errors.Is(err, sandbox.ErrMemory)) {
		t.Errorf("a runaway fleet: %v", err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("the runaway evaluation held on for %s", took)
	}
}

// TestRolloutsInSandbox: the waves a worker evaluates for many identities
// (and the inventory's clusters, and a bundle's own rollout) are the
// fleet's own; an identity no wave takes is left out with why.
func TestRolloutsInSandbox(t *testing.T) {
	dir := t.TempDir()
	rendertest.WriteFile(t, dir, "fleet.cue", `package fleet

clusters: "edge-9": region: "ap-south-1"
rollout: waves: [{name: "canary", names: ["staging-*"]}, {name: "rest", names: ["prod-*", "edge-*"]}]
bundles: web: resources: []
bundles: hotfix: {resources: [], rollout: waves: [{name: "all"}]}
`)
	pool := newPool(t, sandbox.Options{})
	clusters := []fleet.Cluster{{Name: "staging-1"}, {Name: "prod-1"}, {Name: "prod-2", Region: "eu-west-1"}, {Name: "lab-1"}}
	got, err := pool.Rollouts(context.Background(), dir, fleet.LoadOptions{}, clusters, []string{"web", "hotfix"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"staging-1": "canary", "prod-1": "rest", "prod-2": "rest", "edge-9": "rest"}
	if len(got) != 5 {
		t.Fatalf("%d clusters evaluated, want the 4 known and the inventory's edge-9: %+v", len(got), got)
	}
	for _, r := range got {
		name := r.Cluster.Name
		if name == "lab-1" {
			if !strings.Contains(r.Err, "no wave") {
				t.Errorf("lab-1, in no wave: %+v", r)
			}
			continue
		}
		if r.Err != "" || r.Fleet == nil || r.Fleet.Wave != want[name] {
			t.Errorf("%s: %+v, want wave %s", name, r, want[name])
		}
		if h := r.Bundles["hotfix"]; h == nil || h.Wave != "all" || r.Bundles["web"] != nil {
			t.Errorf("%s: bundle rollouts %+v, want hotfix's own only", name, r.Bundles)
		}
	}
	bad, err := pool.Rollouts(context.Background(), dir, fleet.LoadOptions{}, []fleet.Cluster{{Name: "Bad_Name"}}, nil)
	if err != nil || len(bad) != 2 || bad[0].Err == "" {
		t.Errorf("an invalid identity: %+v, %v", bad, err)
	}
}

// TestWorkersGetAMinimalEnvironment: what the agent's environment holds
// (a cloud credential, say) is not in a worker's; HOME is.
func TestWorkersGetAMinimalEnvironment(t *testing.T) {
	t.Setenv("AWS_SECRET_ACCESS_KEY", "canary-secret")
	pool := newPool(t, sandbox.Options{})
	if v, err := sandbox.Getenv(pool, context.Background(), "AWS_SECRET_ACCESS_KEY"); err != nil || v != "" {
		t.Errorf("a worker sees AWS_SECRET_ACCESS_KEY=%q (%v)", v, err)
	}
	if v, err := sandbox.Getenv(pool, context.Background(), "HOME"); err != nil || v != os.Getenv("HOME") {
		t.Errorf("a worker's HOME is %q (%v), want %q", v, err, os.Getenv("HOME"))
	}
	if v, err := sandbox.Getenv(pool, context.Background(), "PATH"); err != nil || v != "" {
		t.Errorf("an offline worker's PATH is %q (%v)", v, err)
	}
}

// TestPolicyCheckPerBundle: a cluster's policy check is made bundle by
// bundle (small ones batched): one bundle whose objects are too many to
// check within the memory bound fails alone, saying so; the others are
// checked — a forbidden object still fails its bundle, a require entry met
// by one bundle holds for all — and pass.
func TestPolicyCheckPerBundle(t *testing.T) {
	dir := t.TempDir()
	rendertest.WriteFile(t, dir, "fleet.cue", `package fleet

policies: {
	"no-secrets": forbid: [{kind: "Secret"}]
	"has-quota": require: [{kind: "ResourceQuota"}]
}
bundles: {
	huge: resources: []
	quota: resources: []
	leaky: resources: []
	clean: resources: []
}
`)
	obj := func(kind, name string, data map[string]any) *unstructured.Unstructured {
		o := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": kind, "metadata": map[string]any{"name": name, "namespace": "default"}}}
		if data != nil {
			o.Object["data"] = data
		}
		return o
	}
	var huge []*unstructured.Unstructured
	for i := range 40000 {
		huge = append(huge, obj("ConfigMap", fmt.Sprintf("cm-%d", i), map[string]any{"a": strings.Repeat("x", 200), "b": fmt.Sprint(i)}))
	}
	bundles := []fleet.RenderedBundle{
		{Name: "huge", Objects: huge},
		{Name: "quota", Objects: []*unstructured.Unstructured{obj("ResourceQuota", "q", nil)}},
		{Name: "leaky", Objects: []*unstructured.Unstructured{obj("Secret", "s", nil)}},
		{Name: "clean", Objects: []*unstructured.Unstructured{obj("ConfigMap", "c", nil)}},
	}
	pool := newPool(t, sandbox.Options{Memory: 300 << 20, PlanTimeout: time.Minute})
	got, err := pool.PolicyViolations(context.Background(), dir, fleet.LoadOptions{}, fleet.Cluster{Name: "c1"}, bundles)
	if err != nil {
		t.Fatal(err)
	}
	if v := got["huge"]; len(v) != 1 || !strings.Contains(v.Error(), "could not be checked against the fleet's policies") || !strings.Contains(v.Error(), "memory") {
		t.Errorf("huge: %v", v)
	}
	if v := got["leaky"]; len(v) != 1 || !strings.Contains(v.Error(), "policy no-secrets forbids") {
		t.Errorf("leaky: %v", v)
	}
	for _, name := range []string{"quota", "clean"} {
		if v := got[name]; len(v) != 0 {
			t.Errorf("%s failed: %v", name, v)
		}
	}
	// Without the quota, the require entry fails every bundle checked.
	got, err = pool.PolicyViolations(context.Background(), dir, fleet.LoadOptions{}, fleet.Cluster{Name: "c1"}, bundles[2:])
	if err != nil {
		t.Fatal(err)
	}
	if v := got["clean"]; len(v) != 1 || !strings.Contains(v.Error(), "policy has-quota requires") {
		t.Errorf("clean without a quota anywhere: %v", v)
	}
}

// TestWorkerSendsNoOversizedBundle: a render whose objects are larger than
// MaxOutput fails in the worker, saying so, and this process reads none of
// them; the worker serves the next render.
func TestWorkerSendsNoOversizedBundle(t *testing.T) {
	dir := repo(t)
	rendertest.WriteFile(t, dir, "big/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  v: "+strings.Repeat("x", 300<<10)+"\n")
	pool := newPool(t, sandbox.Options{MaxOutput: 200 << 10})
	engine := render.NewEngine(pool.Renderers(), nil)
	_, err := engine.Render(context.Background(), &render.Request{Bundle: "big", Namespace: "apps", RepoDir: dir,
		Source: spec.Source{Kind: spec.KindManifests, Manifests: &spec.Manifests{Path: "big"}}})
	if err == nil || !strings.Contains(err.Error(), "more than 0.2 MiB (--max-bundle-size)") {
		t.Fatalf("an oversized bundle: %v", err)
	}
	if _, err := engine.Render(context.Background(), helmRequest(dir, "good")); err != nil {
		t.Errorf("the next render: %v", err)
	}
}

// TestIdleWorkersExit: with an IdleTimeout, a worker that has had no job
// for that long exits (its memory goes back), and the next job starts a
// new one.
func TestIdleWorkersExit(t *testing.T) {
	dir := t.TempDir()
	rendertest.WriteFile(t, dir, "fleet.cue", "package fleet\n\nbundles: web: {namespace: \"apps\", resources: []}\n")
	pool := newPool(t, sandbox.Options{IdleTimeout: 200 * time.Millisecond})
	c := fleet.Cluster{Name: "eu-1", Region: "eu-west-1"}
	plan := func() {
		t.Helper()
		if _, err := pool.Plan(context.Background(), dir, fleet.LoadOptions{}, c); err != nil {
			t.Fatal(err)
		}
		if n := pool.Workers(); n != 1 {
			t.Fatalf("%d workers after a job, want its 1", n)
		}
	}
	gone := func() {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for pool.Workers() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d workers still live 30 s after their last job", pool.Workers())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	plan()
	gone()
	plan()
	gone()
}

// TestRetireIdle: RetireIdle ends the idle workers at once when the pool
// retires idle workers at all, and keeps them when it keeps workers.
func TestRetireIdle(t *testing.T) {
	dir := t.TempDir()
	rendertest.WriteFile(t, dir, "fleet.cue", "package fleet\n\nbundles: web: {namespace: \"apps\", resources: []}\n")
	c := fleet.Cluster{Name: "eu-1", Region: "eu-west-1"}
	for _, keep := range []bool{false, true} {
		opts := sandbox.Options{IdleTimeout: time.Hour}
		if keep {
			opts.IdleTimeout = 0
		}
		pool := newPool(t, opts)
		if _, err := pool.Plan(context.Background(), dir, fleet.LoadOptions{}, c); err != nil {
			t.Fatal(err)
		}
		pool.RetireIdle()
		want := 0
		if keep {
			want = 1
		}
		if n := pool.Workers(); n != want {
			t.Errorf("workers kept %v: %d live after RetireIdle, want %d", keep, n, want)
		}
		if _, err := pool.Plan(context.Background(), dir, fleet.LoadOptions{}, c); err != nil {
			t.Fatalf("a job after RetireIdle: %v", err)
		}
	}
}
