package agent

import (
	"context"
	"sync"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/sandbox"
)

// evaluator runs what a fleet repository controls — evaluating its CUE
// for a cluster, rendering a bundle — for the agent: in the agent's own
// process, or in sandbox workers bounded in time and memory. It is the one
// place the agent chooses; each method takes the folder of one checkout.
type evaluator interface {
	// Plan evaluates the fleet for the cluster.
	Plan(ctx context.Context, dir string, c fleet.Cluster) (*fleet.Plan, error)
	// Rollouts places the known clusters in the rollouts of the fleet (and
	// of the bundles owned).
	Rollouts(ctx context.Context, dir string, known []fleet.Cluster, owned []string) ([]fleet.ClusterRollouts, error)
	// PolicyViolations checks the cluster's rendered bundles against the
	// fleet's policies.
	PolicyViolations(ctx context.Context, dir string, c fleet.Cluster, rendered []fleet.RenderedBundle) (map[string]fleet.Diagnostics, error)
	// Renderers are the renderers by source kind; nil: planrender's, in
	// this process.
	Renderers() map[spec.Kind]render.Renderer
	// Release drops what was kept for the pass: called when a pass ends,
	// so that an idle agent holds no compiled fleet.
	Release()
}

// inProcess evaluates in the agent's process. Within a pass, each
// checkout's fleet is loaded once (a checkout's folder is one revision's,
// and never changes): a pass that plans, places the rollout and checks
// policies compiles the tip's CUE once. Release drops them when the pass
// ends: a waiting agent polls with its cached plan and rollout places, and
// holds no compiled fleet while idle.
type inProcess struct {
	load fleet.LoadOptions

	mu     sync.Mutex
	fleets map[string]*fleet.Fleet // by checkout folder
}

var _ evaluator = (*inProcess)(nil)

func newInProcess(load fleet.LoadOptions) *inProcess {
	return &inProcess{load: load, fleets: map[string]*fleet.Fleet{}}
}

// fleet is the checkout's fleet, loaded the first time.
func (e *inProcess) fleet(dir string) (*fleet.Fleet, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if f := e.fleets[dir]; f != nil {
		return f, nil
	}
	f, err := fleet.Load(dir, e.load)
	if err != nil {
		return nil, err
	}
	e.fleets[dir] = f
	return f, nil
}

func (e *inProcess) Plan(_ context.Context, dir string, c fleet.Cluster) (*fleet.Plan, error) {
	f, err := e.fleet(dir)
	if err != nil {
		return nil, err
	}
	return f.Plan(c)
}

func (e *inProcess) Rollouts(_ context.Context, dir string, known []fleet.Cluster, owned []string) ([]fleet.ClusterRollouts, error) {
	f, err := e.fleet(dir)
	if err != nil {
		return nil, err
	}
	return f.Rollouts(known, owned), nil
}

func (e *inProcess) PolicyViolations(_ context.Context, dir string, c fleet.Cluster, rendered []fleet.RenderedBundle) (map[string]fleet.Diagnostics, error) {
	f, err := e.fleet(dir)
	if err != nil {
		return nil, err
	}
	return f.PolicyViolations(c, rendered), nil
}

func (e *inProcess) Renderers() map[spec.Kind]render.Renderer { return nil }

func (e *inProcess) Release() {
	e.mu.Lock()
	defer e.mu.Unlock()
	clear(e.fleets)
}

// sandboxed evaluates and renders in the pool's workers. Each job loads
// the fleet afresh in a worker: a worker keeps nothing between jobs, so
// each job's time and memory bound measures that job alone, and an idle
// agent's workers hold no fleet (keeping the tip's compiled fleet there
// would save a CUE compile per applying pass at the cost of idle memory).
type sandboxed struct {
	pool *sandbox.Pool
	load fleet.LoadOptions
}

var _ evaluator = sandboxed{}

func (e sandboxed) Plan(ctx context.Context, dir string, c fleet.Cluster) (*fleet.Plan, error) {
	return e.pool.Plan(ctx, dir, e.load, c)
}

func (e sandboxed) Rollouts(ctx context.Context, dir string, known []fleet.Cluster, owned []string) ([]fleet.ClusterRollouts, error) {
	return e.pool.Rollouts(ctx, dir, e.load, known, owned)
}

func (e sandboxed) PolicyViolations(ctx context.Context, dir string, c fleet.Cluster, rendered []fleet.RenderedBundle) (map[string]fleet.Diagnostics, error) {
	return e.pool.PolicyViolations(ctx, dir, e.load, c, rendered)
}

func (e sandboxed) Renderers() map[spec.Kind]render.Renderer { return e.pool.Renderers() }

func (e sandboxed) Release() {}
