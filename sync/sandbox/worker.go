package sandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
)

// Environment variables a worker is started with.
const (
	workerEnv = "FLOTILLA_SANDBOX_WORKER"
	configEnv = "FLOTILLA_SANDBOX_CONFIG"
)

// workerConfig is what a worker's renderers are configured with.
type workerConfig struct {
	planrender.Sources
	MaxManifestSize int64 `json:"maxManifestSize"`
	Memory          int64 `json:"memory"`
	// Offline workers reach no network (goOffline).
	Offline bool `json:"offline,omitempty"`
	// MaxOutput is Options.MaxOutput.
	MaxOutput int64 `json:"maxOutput,omitempty"`
}

// job is one unit of work; exactly one field is set.
type job struct {
	Render   *renderJob   `json:"render,omitempty"`
	Plan     *planJob     `json:"plan,omitempty"`
	Rollouts *rolloutsJob `json:"rollouts,omitempty"`
	Policies *policiesJob `json:"policies,omitempty"`
	Fleet    *fleetJob    `json:"fleet,omitempty"`
	Probe    string       `json:"probe,omitempty"`
	// Env asks for the worker's environment variable of that name (tests).
	Env string `json:"env,omitempty"`
}

// rolloutsJob evaluates the fleet's rollout, and the given bundles' own,
// for many identities (and the inventory's).
type rolloutsJob struct {
	RepoDir  string            `json:"repoDir"`
	Load     fleet.LoadOptions `json:"load"`
	Clusters []fleet.Cluster   `json:"clusters"`
	Bundles  []string          `json:"bundles,omitempty"`
}

// fleetJob plans the whole fleet: the inventory's clusters and the known
// ones (status branches), the known over the inventory's.
type fleetJob struct {
	RepoDir string            `json:"repoDir"`
	Load    fleet.LoadOptions `json:"load"`
	Known   []fleet.Cluster   `json:"known,omitempty"`
}

// fleetPlans is a fleetJob's answer: Plans[i], or Errors[i], for
// Clusters[i].
type fleetPlans struct {
	Clusters []fleet.Cluster `json:"clusters"`
	Plans    []*fleet.Plan   `json:"plans"`
	Errors   []string        `json:"errors"`
}

type renderJob struct {
	Request      *render.Request     `json:"request"`
	Cluster      string              `json:"cluster"`
	RepoDir      string              `json:"repoDir"`
	Capabilities render.Capabilities `json:"capabilities"`
}

// policiesJob checks a cluster's rendered objects against the fleet's
// policies.
type policiesJob struct {
	RepoDir string            `json:"repoDir"`
	Load    fleet.LoadOptions `json:"load"`
	Cluster fleet.Cluster     `json:"cluster"`
	// Bundles are fleet.RenderedBundles, decoded one at a time.
	Bundles []json.RawMessage `json:"bundles"`
}

type planJob struct {
	RepoDir string            `json:"repoDir"`
	Load    fleet.LoadOptions `json:"load"`
	Cluster fleet.Cluster     `json:"cluster"`
}

// reply answers a job: its result, or its error.
type reply struct {
	Output      *wireOutput                 `json:"output,omitempty"`
	Plan        *fleet.Plan                 `json:"plan,omitempty"`
	Rollouts    []fleet.ClusterRollouts     `json:"rollouts,omitempty"`
	Parts       map[string]fleet.PolicyPart `json:"parts,omitempty"`
	Fleet       *fleetPlans                 `json:"fleet,omitempty"`
	Value       string                      `json:"value,omitempty"`
	Error       string                      `json:"error,omitempty"`
	Diagnostics fleet.Diagnostics           `json:"diagnostics,omitempty"`
	PathEscapes bool                        `json:"pathEscapes,omitempty"`
}

type wireObject struct {
	Object map[string]any `json:"object"`
	Source string         `json:"source"`
}

type wireOutput struct {
	Objects []wireObject `json:"objects"`
	Hooks   []wireObject `json:"hooks"`
	// Sensitive are the values the render decrypted, which the objects
	// carry too: the agent scrubs them from what it says about the bundle.
	Sensitive []string `json:"sensitive,omitempty"`
}

func toWire(objs []render.Object) []wireObject {
	out := make([]wireObject, len(objs))
	for i, o := range objs {
		out[i] = wireObject{Object: o.Object.Object, Source: o.Source}
	}
	return out
}

func fromWire(objs []wireObject) []render.Object {
	out := make([]render.Object, len(objs))
	for i, o := range objs {
		out[i] = render.Object{Object: &unstructured.Unstructured{Object: o.Object}, Source: o.Source}
	}
	return out
}

func (w *wireOutput) output() *render.Output {
	return &render.Output{Objects: fromWire(w.Objects), Hooks: fromWire(w.Hooks), Sensitive: w.Sensitive}
}

// Main makes this process a sandbox worker when it was started as one,
// and never returns then; otherwise it returns at once.
func Main() {
	if os.Getenv(workerEnv) == "" {
		return
	}
	os.Exit(serve())
}

// releaseWhenIdle is how long a worker waits for its next job before it
// gives the memory of its last one back to the system. Jobs of one pass
// or batch follow each other within milliseconds.
const releaseWhenIdle = time.Second

// serve answers jobs from stdin until it closes.
func serve() int {
	var cfg workerConfig
	if err := json.Unmarshal([]byte(os.Getenv(configEnv)), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox worker: bad %s: %v\n", configEnv, err)
		return 2
	}
	if cfg.Offline {
		goOffline()
		if err := denySockets(); err != nil {
			// The transport above still holds for Go's shared clients.
			fmt.Fprintf(os.Stderr, "sandbox worker: no socket filter (%v): offline through the HTTP transport alone\n", err)
		}
	}
	if cfg.Memory > 0 {
		// The garbage collector works harder as the bound nears, so that
		// only a job that really needs more memory is killed.
		debug.SetMemoryLimit(cfg.Memory * 3 / 4)
	}
	// Libraries print warnings to stdout now and then: the replies get
	// their own copy of it, and stdout becomes stderr.
	out, err := protocolOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox worker: %v\n", err)
		return 2
	}
	renderers := planrender.InProcess(planrender.Options{Sources: cfg.Sources, MaxManifestSize: cfg.MaxManifestSize})
	in := bufio.NewReaderSize(os.Stdin, 64<<10)
	// A worker waiting for work gives its memory back: an agent's first
	// sync then holds the agent's objects being applied and not also the
	// heap the worker rendered them with (until it exits, idle).
	release := time.AfterFunc(time.Hour, debug.FreeOSMemory)
	release.Stop()
	for {
		line, err := in.ReadBytes('\n')
		release.Stop()
		if errors.Is(err, io.EOF) {
			return 0
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "sandbox worker: reading a job: %v\n", err)
			return 2
		}
		var j job
		rep := &reply{}
		if err := json.Unmarshal(line, &j); err != nil {
			rep.Error = fmt.Sprintf("sandbox worker: bad job: %v", err)
		} else {
			do(&j, renderers, rep)
		}
		if err := send(out, rep, cfg.MaxOutput); err != nil {
			fmt.Fprintf(os.Stderr, "sandbox worker: writing a reply: %v\n", err)
			return 2
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if cfg.Memory > 0 && int64(ms.HeapSys) > cfg.Memory/4 {
			// Give a big job's memory back, so that the next job's use is
			// measured from a low start.
			debug.FreeOSMemory()
		} else {
			release.Reset(releaseWhenIdle)
		}
	}
}

func do(j *job, renderers map[spec.Kind]render.Renderer, rep *reply) {
	fail := func(err error) {
		rep.Error = err.Error()
		rep.Diagnostics = fleet.AsDiagnostics(err)
		rep.PathEscapes = errors.Is(err, render.ErrPathEscapes)
	}
	switch {
	case j.Render != nil:
		req := j.Render.Request
		req.Cluster, req.RepoDir, req.Capabilities = j.Render.Cluster, j.Render.RepoDir, j.Render.Capabilities
		r, ok := renderers[req.Source.Kind]
		if !ok {
			fail(fmt.Errorf("no renderer for source kind %q", req.Source.Kind))
			return
		}
		out, err := r.Render(context.Background(), req)
		if err != nil {
			fail(err)
			return
		}
		rep.Output = &wireOutput{Objects: toWire(out.Objects), Hooks: toWire(out.Hooks), Sensitive: out.Sensitive}
	case j.Plan != nil:
		f, err := fleet.Load(j.Plan.RepoDir, j.Plan.Load)
		if err != nil {
			fail(err)
			return
		}
		plan, err := f.Plan(j.Plan.Cluster)
		if err != nil {
			fail(err)
			return
		}
		rep.Plan = plan
	case j.Rollouts != nil:
		f, err := fleet.Load(j.Rollouts.RepoDir, j.Rollouts.Load)
		if err != nil {
			fail(err)
			return
		}
		rep.Rollouts = f.Rollouts(j.Rollouts.Clusters, j.Rollouts.Bundles)
	case j.Policies != nil:
		f, err := fleet.Load(j.Policies.RepoDir, j.Policies.Load)
		if err != nil {
			fail(err)
			return
		}
		rep.Parts = map[string]fleet.PolicyPart{}
		for _, raw := range j.Policies.Bundles {
			var b fleet.RenderedBundle
			if err := json.Unmarshal(raw, &b); err != nil {
				fail(fmt.Errorf("sandbox worker: bad bundle: %w", err))
				return
			}
			rep.Parts[b.Name] = f.CheckBundlePolicies(j.Policies.Cluster, b)
		}
	case j.Fleet != nil:
		plans, err := planFleet(j.Fleet)
		if err != nil {
			fail(err)
			return
		}
		rep.Fleet = plans
	case j.Env != "":
		rep.Value = os.Getenv(j.Env)
	case j.Probe != "":
		if err := probe(j.Probe); err != nil {
			fail(err)
		}
	default:
		fail(errors.New("sandbox worker: empty job"))
	}
}

// probe reaches addr as the renderers' libraries would (tests): an http://
// URL with the shared HTTP client, a host name with the resolver,
// unix:PATH with a Unix socket (a local proxy), host:port with a plain TCP
// dial.
func probe(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	switch {
	case strings.HasPrefix(addr, "http://"):
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, addr, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	case !strings.Contains(addr, ":"):
		_, err := net.DefaultResolver.LookupHost(ctx, addr)
		return err
	case strings.HasPrefix(addr, "unix:"):
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unix", strings.TrimPrefix(addr, "unix:"))
		if err != nil {
			return err
		}
		return conn.Close()
	default:
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
}

// planFleet does a fleetJob.
func planFleet(j *fleetJob) (*fleetPlans, error) {
	f, err := fleet.Load(j.RepoDir, j.Load)
	if err != nil {
		return nil, err
	}
	out := &fleetPlans{Clusters: fleet.JoinClusters(f.Inventory(), j.Known)}
	plans, errs, err := f.PlanClusters(context.Background(), out.Clusters, nil)
	if err != nil {
		return nil, err
	}
	for _, p := range plans {
		if p != nil {
			p.DropReasons() // most of a plan's size, and no user of a fleet's plans shows them
		}
	}
	out.Plans, out.Errors = plans, make([]string, len(errs))
	for i, e := range errs {
		if e != nil {
			out.Errors[i] = e.Error()
		}
	}
	return out, nil
}

// send writes a reply as one JSON line, encoded once; one that carries
// more objects than maxOutput bytes (as JSON) becomes an error, so that the
// process that collects renders never reads more.
func send(w io.Writer, rep *reply, maxOutput int64) error {
	data, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	if n := int64(len(data)); rep.Output != nil && maxOutput > 0 && n > maxOutput {
		data, err = json.Marshal(&reply{Error: fmt.Sprintf("%v: its objects take %s as JSON, more than %s (--max-bundle-size)",
			render.ErrTooLarge, render.MiB(n), render.MiB(maxOutput))})
		if err != nil {
			return err
		}
	}
	_, err = w.Write(append(data, '\n'))
	return err
}
