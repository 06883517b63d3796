// Package sandbox runs the work a fleet repository controls — evaluating
// its CUE for a cluster, rendering a bundle — in child processes that can
// be killed. Each job has a deadline and a memory bound; a job that
// exceeds them, crashes its process or never ends fails alone, with a
// message saying which bound it hit, and the next job gets a fresh
// process. Helm's template engine, kustomize and CUE cannot be stopped
// from inside a process (an exponential `include` ignores everything), so
// a process boundary is the only bound that holds.
//
// Workers are this same program, started with an environment variable that
// Main recognises: call Main first thing in main (and in TestMain of tests
// that use a Pool). A worker serves jobs one at a time, read as JSON lines
// on stdin and answered on stdout, and is reused until a job fails it.
//
// Workers for jobs that need no network (everything but Helm charts from
// chart repositories and OCI registries, charts whose Chart.lock
// dependencies may be fetched, and kustomize remote bases, when allowed)
// start in a
// network namespace of their own, with no interface up, when the kernel
// lets this process make one (root, or unprivileged user namespaces); and
// always with an empty PATH (no `git`), a proxy that answers nothing, an
// HTTP transport and resolver that dial nothing, and a seccomp filter that
// refuses every socket (offline.go, sys_linux.go): where no namespace can be
// made, loopback is as unreachable as the internet.
package sandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	utiljson "k8s.io/apimachinery/pkg/util/json"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/internal/procfs"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/helm"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
)

// Defaults of Options.
const (
	DefaultMemory      = 1 << 30
	DefaultPlanTimeout = time.Minute
)

// Options configure a Pool.
type Options struct {
	// Command starts a worker: a program that calls Main, and its
	// arguments. Defaults to this program, without arguments.
	Command []string
	// Workers bounds how many jobs run at once; defaults to GOMAXPROCS.
	Workers int
	// Memory bounds a worker's resident memory, in bytes; default
	// DefaultMemory. A job that makes its worker exceed it fails.
	Memory int64
	// PlanTimeout bounds loading and evaluating the fleet for one cluster;
	// default DefaultPlanTimeout. Render jobs are bounded by their ctx
	// (render.Engine sets the render timeout).
	PlanTimeout time.Duration
	// IdleTimeout, when positive, ends a worker that has had no job for
	// that long: a long-running process (the agent) keeps no worker's
	// memory between the passes that need one; the next job starts a new
	// worker. Zero keeps idle workers until Close.
	IdleTimeout time.Duration
	// MaxOutput bounds what a worker sends of one render's objects, as
	// JSON, in bytes (render.Limits.MaxBytes): a bundle larger fails in
	// the worker, before this process reads any of it. Zero for none.
	MaxOutput int64

	// What the workers' renderers are configured with.
	planrender.Sources
	MaxManifestSize int64
}

// ErrMemory is wrapped when a job made its worker exceed the memory bound.
var ErrMemory = errors.New("exceeded its memory bound")

// ErrCrashed is wrapped when a worker ended in the middle of a job.
var ErrCrashed = errors.New("its process ended without finishing")

// Pool runs jobs in worker processes. It is safe for concurrent use;
// Close it to end the idle workers.
type Pool struct {
	opts  Options
	slots chan struct{}

	mu     sync.Mutex
	idle   map[bool][]*worker // by online
	all    map[*worker]bool   // every live worker, idle or busy
	closed bool

	// netns is 0 until a worker was started: then 1 when offline workers
	// get a network namespace of their own, 2 when they cannot.
	netns atomic.Int32
}

// New returns a pool; no process starts until a job needs one.
func New(opts Options) (*Pool, error) {
	if len(opts.Command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("sandbox: finding this program to run workers: %w", err)
		}
		opts.Command = []string{exe}
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Memory <= 0 {
		opts.Memory = DefaultMemory
	}
	if opts.PlanTimeout <= 0 {
		opts.PlanTimeout = DefaultPlanTimeout
	}
	return &Pool{opts: opts, slots: make(chan struct{}, opts.Workers), idle: map[bool][]*worker{}, all: map[*worker]bool{}}, nil
}

// Close ends every worker: idle ones are told to stop, busy ones are
// killed (their jobs fail). Workers also die with this process (Linux:
// the parent-death signal), so that an abandoned render never outlives
// the command that started it.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	idle := map[*worker]bool{}
	for _, ws := range p.idle {
		for _, w := range ws {
			idle[w] = true
		}
	}
	all := p.all
	p.idle, p.all = map[bool][]*worker{}, map[*worker]bool{}
	p.mu.Unlock()
	for w := range all {
		if idle[w] {
			w.stop()
		} else {
			w.kill()
		}
	}
	return nil
}

// Isolated reports whether offline workers get a network namespace of
// their own (known once one has started).
func (p *Pool) Isolated() (known, isolated bool) {
	switch p.netns.Load() {
	case 1:
		return true, true
	case 2:
		return true, false
	}
	return false, false
}

// Renderers returns a renderer for every source kind that renders in the
// pool's workers.
func (p *Pool) Renderers() map[spec.Kind]render.Renderer {
	out := map[spec.Kind]render.Renderer{}
	for _, kind := range spec.Kinds {
		out[kind] = kindRenderer{pool: p}
	}
	return out
}

type kindRenderer struct{ pool *Pool }

// Render renders in a worker, until ctx ends (the engine's render
// timeout): then the worker is killed.
func (k kindRenderer) Render(ctx context.Context, req *render.Request) (*render.Output, error) {
	online := (req.Source.Kind == spec.KindHelm && helm.NeedsNetwork(req, k.pool.opts.AllowChartDownloads)) ||
		(req.Source.Kind == spec.KindKustomize && k.pool.opts.AllowRemoteBases)
	rep, err := k.pool.run(ctx, online, &job{Render: &renderJob{
		Request: req, Cluster: req.Cluster, RepoDir: req.RepoDir, Capabilities: req.Capabilities,
	}})
	if err != nil {
		return nil, err
	}
	if rep.Output == nil {
		return nil, fmt.Errorf("sandbox: a worker answered a render with no output")
	}
	return rep.Output.output(), nil
}

// Plan loads the fleet at repoDir and evaluates it for the cluster in a
// worker, within the pool's PlanTimeout and memory bound. Problems of the
// fleet come back as fleet.Diagnostics, as from fleet.Load and Plan.
func (p *Pool) Plan(ctx context.Context, repoDir string, load fleet.LoadOptions, c fleet.Cluster) (*fleet.Plan, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, p.opts.PlanTimeout, fmt.Errorf(
		"evaluating the fleet took longer than %s (--eval-timeout)", p.opts.PlanTimeout))
	defer cancel()
	rep, err := p.run(ctx, false, &job{Plan: &planJob{RepoDir: repoDir, Load: load, Cluster: c}})
	if err != nil {
		return nil, fmt.Errorf("evaluating the fleet for %s: %w", c.Name, err)
	}
	if rep.Plan == nil {
		return nil, fmt.Errorf("sandbox: a worker answered a plan with no plan")
	}
	return rep.Plan, nil
}

// Rollouts evaluates, in a worker bounded like a plan, each cluster's
// place in the fleet's rollout and in the own rollouts of the given
// bundles (fleet.Fleet.Rollouts): the known clusters and the inventory's.
func (p *Pool) Rollouts(ctx context.Context, repoDir string, load fleet.LoadOptions, clusters []fleet.Cluster, bundles []string) ([]fleet.ClusterRollouts, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, p.opts.PlanTimeout, fmt.Errorf(
		"evaluating the fleet's rollout took longer than %s (--eval-timeout)", p.opts.PlanTimeout))
	defer cancel()
	rep, err := p.run(ctx, false, &job{Rollouts: &rolloutsJob{RepoDir: repoDir, Load: load, Clusters: clusters, Bundles: bundles}})
	if err != nil {
		return nil, fmt.Errorf("evaluating the fleet's rollout for %s: %w", english.Count(len(clusters), "cluster"), err)
	}
	return rep.Rollouts, nil
}

// PolicyViolations checks a cluster's rendered objects against the
// fleet's policies (fleet.Fleet.PolicyViolations): the problems each bundle
// must fail with. Bundles are checked in workers bounded like a plan, a
// batch of small bundles per worker and a large one alone: a bundle whose
// check exceeds the bounds fails alone, saying so, and the others are
// checked and applied.
func (p *Pool) PolicyViolations(ctx context.Context, repoDir string, load fleet.LoadOptions, c fleet.Cluster, bundles []fleet.RenderedBundle) (map[string]fleet.Diagnostics, error) {
	parts := map[string]fleet.PolicyPart{}
	var batch []json.RawMessage
	var names []string
	size := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := p.checkPolicies(ctx, repoDir, load, c, names, batch, parts)
		batch, names, size = nil, nil, 0
		return err
	}
	budget := int(p.opts.Memory / policyBatchShare)
	for _, b := range bundles {
		raw, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		if size+len(raw) > budget {
			if err := flush(); err != nil {
				return nil, err
			}
		}
		batch, names, size = append(batch, raw), append(names, b.Name), size+len(raw)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return fleet.JoinPolicyParts(parts), nil
}

// policyBatchShare: a batch of bundles checked in one worker holds at most
// its memory bound / policyBatchShare of rendered objects (as JSON; CUE
// takes many times that to evaluate them).
const policyBatchShare = 32

// checkPolicies checks a batch of bundles in one worker, into parts. When
// the worker fails (a bound), a batch of several is checked again one
// bundle at a time; a single bundle that fails gets the failure as its
// violation. Only the end of ctx is an error.
func (p *Pool) checkPolicies(ctx context.Context, repoDir string, load fleet.LoadOptions, c fleet.Cluster,
	names []string, batch []json.RawMessage, parts map[string]fleet.PolicyPart) error {
	jctx, cancel := context.WithTimeoutCause(ctx, p.opts.PlanTimeout, fmt.Errorf(
		"checking the fleet's policies took longer than %s (--eval-timeout)", p.opts.PlanTimeout))
	defer cancel()
	rep, err := p.run(jctx, false, &job{Policies: &policiesJob{RepoDir: repoDir, Load: load, Cluster: c, Bundles: batch}})
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("checking the fleet's policies for %s: %w", c.Name, context.Cause(ctx))
	case err == nil:
		maps.Copy(parts, rep.Parts)
		return nil
	case len(batch) > 1:
		for i := range batch {
			if err := p.checkPolicies(ctx, repoDir, load, c, names[i:i+1], batch[i:i+1], parts); err != nil {
				return err
			}
		}
		return nil
	}
	parts[names[0]] = fleet.PolicyPart{Violations: fleet.Diagnostics{{Bundle: names[0], Clusters: []string{c.Name},
		Message: fmt.Sprintf("its objects could not be checked against the fleet's policies: %v", err)}}}
	return nil
}

// FleetPlans are every cluster's plans of a fleet: Plans[i], or Errors[i],
// for Clusters[i].
type FleetPlans struct {
	Clusters []fleet.Cluster
	Plans    []*fleet.Plan
	Errors   []error
}

// PlanFleet loads the fleet at repoDir and plans it, in a worker bounded
// like a plan (the pool's PlanTimeout for the whole fleet), for the
// inventory's clusters joined with known (clusters known from their status
// branches, which replace the inventory's identity of the same name).
// The plans come without the reasons of their selection
// (fleet.Plan.DropReasons): most of their size.
func (p *Pool) PlanFleet(ctx context.Context, repoDir string, load fleet.LoadOptions, known []fleet.Cluster) (*FleetPlans, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, p.opts.PlanTimeout, fmt.Errorf(
		"planning the fleet took longer than %s (--eval-timeout)", p.opts.PlanTimeout))
	defer cancel()
	rep, err := p.run(ctx, false, &job{Fleet: &fleetJob{RepoDir: repoDir, Load: load, Known: known}})
	if err != nil {
		return nil, fmt.Errorf("planning the fleet: %w", err)
	}
	if rep.Fleet == nil || len(rep.Fleet.Plans) != len(rep.Fleet.Clusters) || len(rep.Fleet.Errors) != len(rep.Fleet.Clusters) {
		return nil, errors.New("sandbox: a worker answered a fleet plan with no plans")
	}
	out := &FleetPlans{Clusters: rep.Fleet.Clusters, Plans: rep.Fleet.Plans, Errors: make([]error, len(rep.Fleet.Errors))}
	for i, e := range rep.Fleet.Errors {
		if e != "" {
			out.Errors[i] = errors.New(e)
		}
	}
	return out, nil
}

// getenv reads a variable of an offline worker's environment: how tests
// prove what it does not inherit.
func (p *Pool) getenv(ctx context.Context, name string) (string, error) {
	rep, err := p.run(ctx, false, &job{Env: name})
	if err != nil {
		return "", err
	}
	return rep.Value, nil
}

// probe dials addr from an offline worker: how tests prove that the
// network is out of reach.
func (p *Pool) probe(ctx context.Context, addr string) error {
	_, err := p.run(ctx, false, &job{Probe: addr})
	return err
}

// run does one job in a worker: an idle one of the kind, or a new one.
func (p *Pool) run(ctx context.Context, online bool, j *job) (*reply, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	defer func() { <-p.slots }()

	w, err := p.take(online)
	if err != nil {
		return nil, err
	}
	if !p.track(w) {
		w.kill()
		return nil, errors.New("sandbox: the pool is closed")
	}
	rep, err := w.do(ctx, j, p.opts.Memory)
	if err != nil {
		p.forget(w)
		w.stop()
		return nil, err
	}
	p.give(w)
	if rep.Error != "" {
		if len(rep.Diagnostics) > 0 {
			return nil, rep.Diagnostics
		}
		if rep.PathEscapes {
			return nil, &wrapped{msg: rep.Error, err: render.ErrPathEscapes}
		}
		return nil, errors.New(rep.Error)
	}
	return rep, nil
}

func (p *Pool) take(online bool) (*worker, error) {
	p.mu.Lock()
	if ws := p.idle[online]; len(ws) > 0 {
		w := ws[len(ws)-1]
		p.idle[online] = ws[:len(ws)-1]
		if w.retire != nil {
			// Out of the idle list: a retirement that fires now finds
			// nothing to do.
			w.retire.Stop()
		}
		p.mu.Unlock()
		return w, nil
	}
	p.mu.Unlock()
	return p.start(online)
}

func (p *Pool) give(w *worker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		w.stop()
		return
	}
	p.idle[w.online] = append(p.idle[w.online], w)
	if p.opts.IdleTimeout > 0 {
		w.retire = time.AfterFunc(p.opts.IdleTimeout, func() { p.retire(w) })
	}
}

// retire ends a worker that stayed idle for IdleTimeout, unless a job took
// it meanwhile.
func (p *Pool) retire(w *worker) {
	p.mu.Lock()
	ws := p.idle[w.online]
	i := slices.Index(ws, w)
	if i < 0 {
		p.mu.Unlock()
		return
	}
	p.idle[w.online] = slices.Delete(ws, i, i+1)
	delete(p.all, w)
	p.mu.Unlock()
	w.stop()
}

// RetireIdle ends every idle worker now, as IdleTimeout would later: a
// caller done with the workers for a while (an agent about to apply what
// they rendered) gives their memory back at once, and a later job starts
// a new one. Without an IdleTimeout (workers kept), it does nothing.
func (p *Pool) RetireIdle() {
	if p.opts.IdleTimeout <= 0 {
		return
	}
	p.mu.Lock()
	idle := slices.Concat(p.idle[false], p.idle[true])
	p.mu.Unlock()
	for _, w := range idle {
		p.retire(w) // unless a job took it meanwhile; its timer then finds nothing to do
	}
}

// Workers counts the live worker processes, idle or busy.
func (p *Pool) Workers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.all)
}

func (p *Pool) forget(w *worker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.all, w)
}

// track records a new worker; false when the pool closed meanwhile.
func (p *Pool) track(w *worker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.all[w] = true
	return true
}

// start starts a worker; an offline one in a network namespace of its own
// when the kernel allows it.
func (p *Pool) start(online bool) (*worker, error) {
	cfg, err := json.Marshal(workerConfig{Sources: p.opts.Sources, MaxManifestSize: p.opts.MaxManifestSize, Memory: p.opts.Memory, Offline: !online, MaxOutput: p.opts.MaxOutput})
	if err != nil {
		return nil, err
	}
	env := append(workerEnviron(online), workerEnv+"=1", configEnv+"="+string(cfg))
	if !online {
		// No `git` to run, and no proxy that answers (a last resort where
		// no network namespace can be made: Go's HTTP clients use it for
		// every host but localhost).
		env = append(env, "PATH=", "HTTP_PROXY=http://127.0.0.1:9", "HTTPS_PROXY=http://127.0.0.1:9", "NO_PROXY=")
	}
	attr := netnsAttr()
	if attr == nil {
		p.netns.Store(2)
	}
	if online || p.netns.Load() == 2 {
		return startWorker(p.opts.Command, env, online, baseAttr())
	}
	w, err := startWorker(p.opts.Command, env, online, attr)
	if err == nil {
		p.netns.CompareAndSwap(0, 1)
		return w, nil
	}
	p.netns.Store(2)
	return startWorker(p.opts.Command, env, online, baseAttr())
}

// workerEnviron is the part of this process's environment a worker gets:
// what finding files, certificates and (online) proxies and `git` needs,
// and nothing else. The agent's environment may hold what a fleet must
// never see (cloud credentials of the node, tokens); no renderer should
// expose it, and a worker does not have it to expose.
func workerEnviron(online bool) []string {
	keep := []string{"HOME", "TMPDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR", "GODEBUG", "LANG", "LC_ALL"}
	if online {
		keep = append(keep, "PATH", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
	}
	var env []string
	for _, name := range keep {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	return env
}

// worker is one worker process.
type worker struct {
	online bool
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *tail
	exited chan struct{} // closed once the process has been waited for
	// retire ends the worker once it has been idle for the pool's
	// IdleTimeout (nil without one); the pool's lock guards it.
	retire *time.Timer
}

func startWorker(command, env []string, online bool, attr *syscall.SysProcAttr) (*worker, error) {
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Env = env
	cmd.SysProcAttr = attr
	w := &worker{online: online, cmd: cmd, stderr: &tail{max: 4 << 10}, exited: make(chan struct{})}
	cmd.Stderr = w.stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("sandbox: starting a worker: %w", err)
	}
	w.in, w.out = in, bufio.NewReaderSize(out, 64<<10)
	go func() {
		_ = cmd.Wait()
		close(w.exited)
	}()
	return w, nil
}

// do sends one job and reads its reply, killing the worker when ctx ends
// or its memory exceeds the bound.
func (w *worker) do(ctx context.Context, j *job, memory int64) (*reply, error) {
	data, err := json.Marshal(j)
	if err != nil {
		return nil, err
	}
	type result struct {
		rep *reply
		err error
	}
	done := make(chan result, 1)
	go func() {
		if _, err := w.in.Write(append(data, '\n')); err != nil {
			done <- result{err: err}
			return
		}
		line, err := w.out.ReadBytes('\n')
		if err != nil {
			done <- result{err: err}
			return
		}
		rep := &reply{}
		// Numbers as Kubernetes decodes them: integers stay int64.
		done <- result{rep: rep, err: utiljson.Unmarshal(line, rep)}
	}()

	watch := time.NewTicker(50 * time.Millisecond)
	defer watch.Stop()
	for {
		select {
		case r := <-done:
			if r.err != nil {
				w.kill()
				return nil, w.crashed(r.err)
			}
			return r.rep, nil
		case <-ctx.Done():
			w.kill()
			return nil, context.Cause(ctx)
		case <-watch.C:
			if rss := procfs.Resident(w.cmd.Process.Pid); rss > memory {
				w.kill()
				return nil, fmt.Errorf("%w: %s of memory, more than the %s allowed (--render-memory); the process was killed",
					ErrMemory, size(rss), size(memory))
			}
		}
	}
}

// crashed explains a worker that ended mid-job, with the end of what it
// printed (a Go runtime error, usually).
func (w *worker) crashed(err error) error {
	<-w.exited
	msg := strings.TrimSpace(w.stderr.String())
	if i := strings.Index(msg, "\ngoroutine "); i > 0 {
		msg = msg[:i] // the first line says what; the stacks do not help a user
	}
	if msg == "" {
		msg = err.Error()
	}
	return fmt.Errorf("%w (%s): %s", ErrCrashed, w.cmd.ProcessState, errtext.Clean(msg))
}

func (w *worker) kill() {
	_ = w.cmd.Process.Kill()
	<-w.exited
}

func (w *worker) stop() {
	_ = w.in.Close() // the worker ends at EOF
	select {
	case <-w.exited:
	case <-time.After(5 * time.Second):
		w.kill()
	}
}

func size(b int64) string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", b>>30)
	case b >= 1<<20:
		return fmt.Sprintf("%d MiB", b>>20)
	}
	return fmt.Sprintf("%d bytes", b)
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.buf) > t.max {
		return string(t.buf[len(t.buf)-t.max:])
	}
	return string(t.buf)
}

// wrapped is a worker's error message that still wraps the sentinel the
// worker's error wrapped.
type wrapped struct {
	msg string
	err error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.err }
