// Command fluxbench measures the Flotilla agent against its peer, Flux's
// source-controller and kustomize-controller (built by make testenv), on
// the same workload: one namespace with N ConfigMaps and 20 Deployments in
// a Git repository served over HTTP, applied to a real control plane with
// fake nodes (kwok: the Deployments become available), the same poll
// interval, one tool after the other on a fresh control plane each,
// repeated. For each run it prints:
//
//   - first sync: from the tool starting to every object applied and the
//     tool saying so (Flux: the Kustomization Ready at the commit; the
//     agent: its applied revision and its bundle Ready, from its /metrics);
//   - change: 10 ConfigMaps changed in one commit, from the commit (and the
//     tool's trigger: Flux's reconcile.fluxcd.io/requestedAt on the
//     GitRepository, the agent's /trigger) to the tool reporting it applied;
//   - API requests the tool made during the first sync, the change and
//     while idle, by verb: the API server's audit log, counting the
//     requests whose user agent names one of the tool's programs (not the
//     control plane's own controllers, nor this harness's polling);
//   - CPU seconds of the tool's processes while idle for -idle;
//   - resident memory of every process the tool runs (the agent and its
//     workers; both controllers) at the end of the idle time, and the
//     peak of their sum (sampled every 200 ms, or the sum of the peaks the
//     kernel kept for the processes still running at the end, whichever
//     is larger: a worker that exited has no peak left to read); and
//     their proportional set size (PSS), at the end and the largest sum
//     sampled: resident memory counts the pages of a binary once per
//     process that maps them, so an agent and its worker (one binary) are
//     counted twice where PSS counts them once.
//
// bench/flux.sh runs it; results go in bench/RESULTS.md by hand.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fluxcd/pkg/gittestserver"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/flotilla-gitops/flotilla/internal/testenv"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

type options struct {
	objects, runs int
	interval      time.Duration
	idle          time.Duration
	flotilla      string
	tools         string
}

func main() {
	var o options
	flag.IntVar(&o.objects, "objects", 1000, "ConfigMaps in the workload (plus 20 Deployments)")
	flag.IntVar(&o.runs, "runs", 2, "runs of each tool, alternating")
	flag.DurationVar(&o.interval, "interval", 30*time.Second, "poll interval of both tools")
	flag.DurationVar(&o.idle, "idle", 3*time.Minute, "idle time measured after the change")
	flag.StringVar(&o.flotilla, "flotilla", "bin/flotilla", "the agent's binary")
	flag.StringVar(&o.tools, "tools", "flux,flotilla", "the tools to run, in order: flux, flotilla, and flux+observer (Flux with the agent in --observe flux mode beside it)")
	flag.Parse()
	ctrllog.SetLogger(logr.Discard())
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "fluxbench:", err)
		os.Exit(1)
	}
}

// result is one tool's run.
type result struct {
	tool              string
	firstSync, change time.Duration
	// requests of the tool by verb, in the first sync, the change and
	// the idle time.
	firstReqs, changeReqs, idleReqs map[string]int
	idleCPU                         float64
	// changeCPU and changeAPICPU are the CPU seconds of the tool's
	// processes and of the kube-apiserver from the change's commit to the
	// tool reporting it applied.
	changeCPU, changeAPICPU float64
	rss, anon, peak         int64
	// pss is the proportional set size of the processes at the end of the
	// idle time, peakPSS the largest sum sampled: pages the processes
	// share (the agent and its workers run one binary) count once.
	// peakRSS is the largest sum of resident memory sampled: unlike the
	// peaks the kernel keeps (peak), it counts a worker that has exited
	// by the end.
	pss, peakPSS, peakRSS int64
	peakProcs             []procPSS // at peakPSS
	endProcs              []procPSS // at the end of the idle time
}

func mib(bytes int64) float64 { return float64(bytes) / (1 << 20) }

// total is the number of requests of all verbs.
func total(verbs map[string]int) int {
	n := 0
	for _, c := range verbs {
		n += c
	}
	return n
}

// byVerb prints requests by verb, most first.
func byVerb(verbs map[string]int) string {
	names := make([]string, 0, len(verbs))
	for v := range verbs {
		names = append(names, v)
	}
	sort.Slice(names, func(i, j int) bool {
		if verbs[names[i]] != verbs[names[j]] {
			return verbs[names[i]] > verbs[names[j]]
		}
		return names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, v := range names {
		parts[i] = fmt.Sprintf("%s %d", v, verbs[v])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func run(o options) error {
	work, err := os.MkdirTemp("", "fluxbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	repo, err := newRepo(work, o.objects)
	if err != nil {
		return err
	}
	log.SetOutput(io.Discard) // the Git server logs every request
	srv := gittestserver.NewGitServer(filepath.Join(work, "git"))
	if err := srv.StartHTTP(); err != nil {
		return err
	}
	defer srv.StopHTTP()
	repo.url = srv.HTTPAddress() + "/fleet.git"
	fmt.Printf("workload: 1 namespace, %d ConfigMaps, 20 Deployments; interval %s; idle %s\n", o.objects, o.interval, o.idle)
	fmt.Printf("%-13s %-4s %10s %10s %10s %10s %10s %10s %10s %10s %10s %10s\n", "tool", "run", "first s", "change s", "first req", "idle req", "idle cpu", "rss MiB", "anon MiB", "peak rss", "pss MiB", "peak pss")
	for i := 1; i <= o.runs; i++ {
		for _, tool := range strings.Split(o.tools, ",") {
			r, err := measure(o, repo, tool)
			if err != nil {
				return fmt.Errorf("%s, run %d: %w", tool, i, err)
			}
			fmt.Printf("%-13s %-4d %10.1f %10.1f %10d %10d %10.2f %10.0f %10.0f %10.0f %10.0f %10.0f\n", r.tool, i, r.firstSync.Seconds(), r.change.Seconds(),
				total(r.firstReqs), total(r.idleReqs), r.idleCPU, mib(r.rss), mib(r.anon), mib(max(r.peak, r.peakRSS)), mib(r.pss), mib(r.peakPSS))
			fmt.Printf("    requests of the first sync: %s\n    of the change (%d): %s\n    while idle: %s\n",
				byVerb(r.firstReqs), total(r.changeReqs), byVerb(r.changeReqs), byVerb(r.idleReqs))
			fmt.Printf("    CPU seconds of the change: the tool %.2f, the kube-apiserver %.2f\n", r.changeCPU, r.changeAPICPU)
			var at []string
			for _, p := range r.peakProcs {
				at = append(at, fmt.Sprintf("%s %.0f MiB (anonymous %.0f)", p.name, mib(p.pss), mib(p.anon)))
			}
			fmt.Printf("    at the peak of PSS: %s\n", strings.Join(at, ", "))
			at = at[:0]
			for _, p := range r.endProcs {
				at = append(at, fmt.Sprintf("%s %.0f MiB (anonymous %.0f)", p.name, mib(p.pss), mib(p.anon)))
			}
			fmt.Printf("    idle, at the end: %s\n", strings.Join(at, ", "))
		}
	}
	return nil
}

// measure runs one tool on a fresh control plane.
func measure(o options, repo *gitRepo, tool string) (*result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute+o.idle)
	defer cancel()
	if err := repo.reset(o.objects); err != nil {
		return nil, err
	}
	cluster, err := testenv.Start(ctx, testenv.Options{Name: "bench-1", Full: true, Audit: true})
	if err != nil {
		return nil, err
	}
	defer func() { _ = cluster.Stop() }()
	kube, err := client.New(cluster.Config, client.Options{})
	if err != nil {
		return nil, err
	}
	t, err := newTool(o, tool, cluster, kube)
	if err != nil {
		return nil, err
	}
	r := &result{tool: tool}
	audit := &auditReader{cluster: cluster, clients: t.clients()}
	if _, err := audit.since(); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := t.start(ctx, repo.url); err != nil {
		return nil, err
	}
	defer t.stop()
	sampler := samplePSS(ctx, t.pids)
	if err := until(ctx, 10*time.Minute, func() (bool, error) { return t.applied(ctx, repo.head) }); err != nil {
		return nil, fmt.Errorf("first sync: %w", err)
	}
	r.firstSync = time.Since(start)
	if r.firstReqs, err = audit.since(); err != nil {
		return nil, err
	}

	if err := measureChange(ctx, r, repo, t, cluster, kube); err != nil {
		return nil, err
	}
	if o, ok := t.(*observedRun); ok {
		if err := until(ctx, 3*o.interval, func() (bool, error) { return o.reported(ctx, repo.url, repo.head) }); err != nil {
			return nil, fmt.Errorf("the observer's status: %w", err)
		}
	}
	if r.changeReqs, err = audit.since(); err != nil {
		return nil, err
	}

	pids := t.pids()
	cpu0 := cpuSeconds(pids)
	select {
	case <-time.After(o.idle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	pids = t.pids()
	r.idleCPU = cpuSeconds(pids) - cpu0
	if r.idleReqs, err = audit.since(); err != nil {
		return nil, err
	}
	r.rss, r.anon, r.peak = memory(pids)
	r.pss, r.endProcs = pssOf(pids)
	peak := sampler.stop()
	r.peakRSS, r.peakPSS, r.peakProcs = peak.rss, peak.pss, peak.at
	return r, nil
}

// measureChange commits a change of 10 ConfigMaps, triggers the tool and
// records the time and the CPU seconds (the tool's, the kube-apiserver's)
// until it reports the change applied, then checks the change is there.
func measureChange(ctx context.Context, r *result, repo *gitRepo, t toolRun, cluster *testenv.Cluster, kube client.Client) error {
	apiserver, err := cluster.APIServerPID()
	if err != nil {
		return err
	}
	toolCPU, apiCPU := cpuSeconds(t.pids()), cpuSeconds([]int{apiserver})
	if err := repo.change(10); err != nil {
		return err
	}
	start := time.Now()
	if err := t.trigger(ctx); err != nil {
		return err
	}
	if err := until(ctx, 5*time.Minute, func() (bool, error) { return t.applied(ctx, repo.head) }); err != nil {
		return fmt.Errorf("change: %w", err)
	}
	r.change = time.Since(start)
	r.changeCPU, r.changeAPICPU = cpuSeconds(t.pids())-toolCPU, cpuSeconds([]int{apiserver})-apiCPU
	return checkChanged(ctx, kube, 10)
}

// newTool is the named tool's run on cluster.
func newTool(o options, tool string, cluster *testenv.Cluster, kube client.Client) (toolRun, error) {
	switch tool {
	case "flux":
		return &fluxRun{cluster: cluster, kube: kube, interval: o.interval}, nil
	case "flux+observer":
		return &observedRun{fluxRun: fluxRun{cluster: cluster, kube: kube, interval: o.interval, labels: true},
			agent: agentRun{bin: o.flotilla, cluster: cluster, interval: o.interval}}, nil
	case "flotilla":
		return &agentRun{bin: o.flotilla, cluster: cluster, interval: o.interval}, nil
	}
	return nil, fmt.Errorf("unknown tool %q: flux, flux+observer or flotilla", tool)
}

// pssSampler sums the resident memory and the proportional set size of a
// tool's processes every 200 ms and keeps the largest sums, and what each
// process held at the largest PSS.
type pssSampler struct {
	done chan struct{}
	max  chan peakSample
}

// peakSample is the largest sums sampled, and the processes at the
// largest PSS.
type peakSample struct {
	rss, pss int64
	at       []procPSS
}

func samplePSS(ctx context.Context, pids func() []int) *pssSampler {
	s := &pssSampler{done: make(chan struct{}), max: make(chan peakSample, 1)}
	go func() {
		var most peakSample
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			now := pids()
			rss, _, _ := memory(now)
			most.rss = max(most.rss, rss)
			if total, procs := pssOf(now); total > most.pss {
				most.pss, most.at = total, procs
			}
			select {
			case <-tick.C:
			case <-s.done:
				s.max <- most
				return
			case <-ctx.Done():
				s.max <- most
				return
			}
		}
	}()
	return s
}

// stop returns the largest sums of resident memory and of PSS, and the
// processes at the largest PSS.
func (s *pssSampler) stop() peakSample {
	close(s.done)
	return <-s.max
}

// procPSS is one process's proportional set size, and of it the
// anonymous memory (its own heap and stacks).
type procPSS struct {
	name      string
	pss, anon int64
}

// pssOf is the sum of the processes' proportional set sizes, and each
// process's part.
func pssOf(pids []int) (int64, []procPSS) {
	var total int64
	var procs []procPSS
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			continue
		}
		p := procPSS{name: strconv.Itoa(pid)}
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
			args := strings.Split(strings.TrimRight(string(comm), "\x00"), "\x00")
			p.name = filepath.Base(args[0])
			if len(args) > 1 {
				p.name += " " + args[1]
			}
		}
		kb := kilobytes(data)
		p.pss, p.anon = kb["Pss:"], kb["Pss_Anon:"]
		total += p.pss
		procs = append(procs, p)
	}
	return total, procs
}

// auditReader counts a tool's requests in the API server's audit log.
type auditReader struct {
	cluster *testenv.Cluster
	clients []string // the programs of the tool, as their user agents name them
	at      int64
}

// since returns the tool's requests by verb since the last call.
func (a *auditReader) since() (map[string]int, error) {
	events, next, err := a.cluster.ReadAudit(a.at)
	if err != nil {
		return nil, err
	}
	a.at = next
	verbs := map[string]int{}
	for _, e := range events {
		if slices.Contains(a.clients, e.Client()) {
			verbs[e.Verb]++
		}
	}
	return verbs, nil
}

// toolRun is one tool running against a cluster.
type toolRun interface {
	start(ctx context.Context, url string) error
	// applied says whether the tool reports the commit applied and Ready.
	applied(ctx context.Context, commit string) (bool, error)
	trigger(ctx context.Context) error
	// pids are every process the tool runs now.
	pids() []int
	// clients are the programs of the tool that talk to the API server,
	// as their user agents name them.
	clients() []string
	stop()
}

// until polls cond every 250 ms until it holds, fails, or within ends.
func until(ctx context.Context, within time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(within)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done within %s", within)
		}
		select {
		case <-time.After(250 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// checkChanged checks the change reached the API server.
func checkChanged(ctx context.Context, kube client.Client, n int) error {
	for i := range n {
		var cm corev1.ConfigMap
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "bench", Name: cmName(i)}, &cm); err != nil {
			return err
		}
		if cm.Data["version"] != "2" {
			return fmt.Errorf("%s: version %q after the change", cm.Name, cm.Data["version"])
		}
	}
	return nil
}

// cpuSeconds is the user and system CPU time of the processes, with that
// of their children that ended (the agent's workers that exited while idle).
func cpuSeconds(pids []int) float64 {
	var ticks int64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The fields after the command name (which may hold spaces).
		fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
		if len(fields) > 14 {
			for _, f := range fields[11:15] { // utime, stime, cutime, cstime
				n, _ := strconv.ParseInt(f, 10, 64)
				ticks += n
			}
		}
	}
	return float64(ticks) / 100 // USER_HZ
}

// memory is the resident memory of the processes now, the part of it
// that is not mapped from files (the heap, not the binary's code), and the
// sum of their peaks.
func memory(pids []int) (rss, anon, peak int64) {
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		kb := kilobytes(data)
		rss, anon, peak = rss+kb["VmRSS:"], anon+kb["RssAnon:"], peak+kb["VmHWM:"]
	}
	return rss, anon, peak
}

// kilobytes reads the "Name: N kB" lines of a /proc file, in bytes by
// name (with its colon).
func kilobytes(data []byte) map[string]int64 {
	out := map[string]int64{}
	for line := range strings.SplitSeq(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				out[f[0]] = kb << 10
			}
		}
	}
	return out
}

// children are the process's children (the agent's workers).
func children(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		data, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// fluxRun is Flux's two controllers with a GitRepository and a
// Kustomization of the workload.
type fluxRun struct {
	cluster  *testenv.Cluster
	kube     client.Client
	interval time.Duration
	// labels marks the Kustomization as flotilla hydrate does (its
	// cluster and bundle), for an observing agent to read.
	labels bool
}

var (
	gitRepositoryKind = schema.GroupVersionKind{Group: "source.toolkit.fluxcd.io", Version: "v1", Kind: "GitRepository"}
	kustomizationKind = schema.GroupVersionKind{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Kind: "Kustomization"}
)

func (f *fluxRun) start(ctx context.Context, url string) error {
	if err := f.cluster.StartFlux(ctx); err != nil {
		return err
	}
	src := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": "bench", "namespace": testenv.FluxNamespace},
		"spec":     map[string]any{"interval": f.interval.String(), "url": url, "ref": map[string]any{"branch": "main"}},
	}}
	src.SetGroupVersionKind(gitRepositoryKind)
	ks := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": "bench", "namespace": testenv.FluxNamespace},
		"spec": map[string]any{"interval": f.interval.String(), "path": "./manifests", "prune": true, "wait": true, "timeout": "5m",
			"sourceRef": map[string]any{"kind": "GitRepository", "name": "bench"}},
	}}
	ks.SetGroupVersionKind(kustomizationKind)
	if f.labels {
		ks.SetLabels(map[string]string{spec.ClusterLabel: "bench-1", spec.BundleLabel: "bench"})
	}
	for _, o := range []client.Object{src, ks} {
		if err := f.kube.Create(ctx, o); err != nil {
			return err
		}
	}
	return nil
}

func (f *fluxRun) applied(ctx context.Context, commit string) (bool, error) {
	ks := &unstructured.Unstructured{}
	ks.SetGroupVersionKind(kustomizationKind)
	if err := f.kube.Get(ctx, client.ObjectKey{Namespace: testenv.FluxNamespace, Name: "bench"}, ks); err != nil {
		return false, err
	}
	rev, _, _ := unstructured.NestedString(ks.Object, "status", "lastAppliedRevision")
	if !strings.HasSuffix(rev, commit) {
		return false, nil
	}
	conds, _, _ := unstructured.NestedSlice(ks.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
			return m["status"] == "True", nil
		}
	}
	return false, nil
}

func (f *fluxRun) trigger(ctx context.Context) error {
	src := &unstructured.Unstructured{}
	src.SetGroupVersionKind(gitRepositoryKind)
	if err := f.kube.Get(ctx, client.ObjectKey{Namespace: testenv.FluxNamespace, Name: "bench"}, src); err != nil {
		return err
	}
	patch := client.MergeFrom(src.DeepCopy())
	src.SetAnnotations(map[string]string{"reconcile.fluxcd.io/requestedAt": time.Now().Format(time.RFC3339Nano)})
	return f.kube.Patch(ctx, src, patch)
}

func (f *fluxRun) pids() []int {
	p := f.cluster.PIDs()
	return []int{p["source-controller"], p["kustomize-controller"]}
}

func (f *fluxRun) stop() {}

func (f *fluxRun) clients() []string { return []string{"source-controller", "kustomize-controller"} }

// observedRun is Flux with the Flotilla agent beside it in --observe flux
// mode, publishing Flux's progress as the cluster's status branch: what a
// fleet that keeps Flux as its applier runs. Its times are Flux's; its
// memory, CPU and requests are both controllers' and the observer's.
type observedRun struct {
	fluxRun
	agent agentRun
}

func (o *observedRun) start(ctx context.Context, url string) error {
	if err := o.fluxRun.start(ctx, url); err != nil {
		return err
	}
	return o.agent.startWith(ctx, url, "--observe", "flux")
}

// reported says whether the observer's status branch says the cluster is
// Ready at commit: it observed Flux apply it, and published that.
func (o *observedRun) reported(ctx context.Context, url, commit string) (bool, error) {
	st, err := report.ReadCluster(ctx, url, report.DefaultPrefix, "bench-1", nil)
	if err != nil {
		return false, nil // not reported yet
	}
	return st.Phase == report.ClusterReady && st.AppliedRevision == commit, nil
}

func (o *observedRun) pids() []int { return append(o.fluxRun.pids(), o.agent.pids()...) }

func (o *observedRun) clients() []string { return append(o.fluxRun.clients(), o.agent.clients()...) }

func (o *observedRun) stop() { o.agent.stop() }

// agentRun is the Flotilla agent, as a process with its workers.
type agentRun struct {
	bin      string
	cluster  *testenv.Cluster
	interval time.Duration
	cmd      *exec.Cmd
	addr     string
	token    string
}

func (a *agentRun) start(ctx context.Context, url string) error { return a.startWith(ctx, url) }

// startWith starts the agent with more flags.
func (a *agentRun) startWith(ctx context.Context, url string, flags ...string) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	a.addr = l.Addr().String()
	l.Close()
	a.token = "bench-token"
	secret := filepath.Join(a.cluster.Dir, "webhook-secret")
	if err := os.WriteFile(secret, []byte(a.token), 0o600); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(a.cluster.Dir, "agent.log"))
	if err != nil {
		return err
	}
	a.cmd = exec.CommandContext(ctx, a.bin, "agent", "--kubeconfig", a.cluster.Kubeconfig, "--repo", url, "--branch", "main",
		"--name", "bench-1", "--interval", a.interval.String(), "--trigger-spread", "0s", "--listen", a.addr, "--webhook-secret-file", secret, "--log-format", "console")
	a.cmd.Args = append(a.cmd.Args, flags...)
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	return a.cmd.Start()
}

func (a *agentRun) applied(ctx context.Context, commit string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.addr+"/metrics", nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, nil // not listening yet
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	text := buf.String()
	return strings.Contains(text, `flotilla_applied_revision_info{revision="`+commit+`"} 1`) &&
		strings.Contains(text, `flotilla_bundles{phase="Ready"} 1`), nil
}

func (a *agentRun) trigger(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+a.addr+"/trigger", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("/trigger: %s", resp.Status)
	}
	return nil
}

func (a *agentRun) clients() []string { return []string{"flotilla"} }

func (a *agentRun) pids() []int {
	return append([]int{a.cmd.Process.Pid}, children(a.cmd.Process.Pid)...)
}

func (a *agentRun) stop() {
	_ = a.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = a.cmd.Process.Kill()
		<-done
	}
}

// gitRepo is the workload's repository: a bare repository the server
// serves and a work tree.
type gitRepo struct {
	bare, work, url, head string
}

func newRepo(work string, objects int) (*gitRepo, error) {
	r := &gitRepo{bare: filepath.Join(work, "git", "fleet.git"), work: filepath.Join(work, "work")}
	if err := gitCmd(work, "init", "-q", "--bare", "-b", "main", r.bare); err != nil {
		return nil, err
	}
	if err := gitCmd(work, "init", "-q", "-b", "main", r.work); err != nil {
		return nil, err
	}
	if err := gitCmd(r.work, "remote", "add", "origin", r.bare); err != nil {
		return nil, err
	}
	return r, nil
}

// reset commits the workload at version 1 (and the fleet naming it).
func (r *gitRepo) reset(objects int) error {
	files := map[string]string{
		"fleet.cue":                "package fleet\n\nclusters: \"bench-1\": {}\nbundles: bench: {namespace: \"bench\", manifests: path: \"manifests\"}\n",
		"manifests/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n",
	}
	for i := range objects {
		files[fmt.Sprintf("manifests/cm-%05d.yaml", i)] = configMap(i, 1)
	}
	for i := range 20 {
		files[fmt.Sprintf("manifests/deploy-%02d.yaml", i)] = fmt.Sprintf(deployment, i, i, i)
	}
	_ = os.RemoveAll(filepath.Join(r.work, "manifests"))
	return r.commit(files, "workload at version 1")
}

// change sets version 2 in the first n ConfigMaps.
func (r *gitRepo) change(n int) error {
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("manifests/cm-%05d.yaml", i)] = configMap(i, 2)
	}
	return r.commit(files, fmt.Sprintf("%d ConfigMaps at version 2", n))
}

func (r *gitRepo) commit(files map[string]string, message string) error {
	for name, content := range files {
		p := filepath.Join(r.work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	for _, args := range [][]string{{"add", "-A"}, {"-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "-q", "--allow-empty", "-m", message},
		{"push", "-q", "-f", "origin", "main"}} {
		if err := gitCmd(r.work, args...); err != nil {
			return err
		}
	}
	out, err := exec.Command("git", "-C", r.work, "rev-parse", "HEAD").Output()
	r.head = strings.TrimSpace(string(out))
	return err
}

func gitCmd(dir string, args ...string) error {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func cmName(i int) string { return fmt.Sprintf("cm-%05d", i) }

func configMap(i, version int) string {
	return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n  namespace: bench\ndata:\n  version: \"%d\"\n  payload: %q\n",
		cmName(i), version, strings.Repeat("x", 200))
}

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-%02d
  namespace: bench
spec:
  replicas: 1
  selector:
    matchLabels: {app: web-%02d}
  template:
    metadata:
      labels: {app: web-%02d}
    spec:
      containers:
      - name: web
        image: registry.k8s.io/pause:3.10
`
