package companion

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/go-git/go-git/v5"
	"github.com/go-logr/logr"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/sandbox"
	"github.com/flotilla-gitops/flotilla/sync/snapshot"
)

// GeneratorPath is where Argo CD's ApplicationSet plugin generator posts.
const GeneratorPath = "/api/v1/getparams.execute"

// maxRequestBytes bounds a generator request's body.
const maxRequestBytes = 1 << 20

// GeneratorOptions configure the plugin generator.
type GeneratorOptions struct {
	// Dir is the fleet's folder (kept up to date by whatever runs beside
	// the server, a git-sync sidecar for example); Path the folder of
	// fleet.cue under it.
	Dir, Path string
	// Token is the bearer token Argo CD must present (from the plugin's
	// ConfigMap and Secret).
	Token string
	// Refresh is how old the plans may be before a request loads the fleet
	// again (default 30s).
	Refresh time.Duration
	// Status is where clusters known from their status branches are read
	// (no URL: the fleet folder's repository's status branches, when it is
	// one).
	Status report.Branches
	Log    logr.Logger
	// Pool plans the fleet in a sandbox worker, within its PlanTimeout
	// and memory bound (a fleet whose evaluation runs away fails that
	// refresh alone); nil plans in this process.
	Pool *sandbox.Pool
	// PathPrefix is the path the server is reached under behind a proxy
	// ("/flotilla": Argo CD's baseUrl ends with it, and it posts to
	// PathPrefix + GeneratorPath).
	PathPrefix string
	// ApprovalsBranch holds the rollout approvals (default
	// report.DefaultApprovalsBranch), in the status repository.
	ApprovalsBranch string
	// Now is the time the rollout gate decides at (default time.Now).
	Now func() time.Time
}

// Generator serves Argo CD's ApplicationSet plugin generator protocol:
// POST GeneratorPath with {"applicationSetName", "input": {"parameters":
// {…}}} and a bearer token; the answer is {"output": {"parameters": [one
// Params per cluster and bundle]}}. The input parameters narrow the
// answer: cluster, bundle and wave, each a string or a list of strings.
type Generator struct {
	opts GeneratorOptions

	mu      sync.Mutex
	loaded  time.Time // when the last refresh ended
	params  []map[string]any
	loadErr error // what requests get while there are no parameters
	lastErr error // the last refresh's
	// refreshing is closed when the refresh under way ends; nil when none
	// is.
	refreshing chan struct{}
	// kept counts the parameter sets the last refresh kept from before
	// (their cluster or bundle stopped evaluating).
	kept    int
	metrics *generatorMetrics
}

// generatorMetrics are the generator's Prometheus metrics, on a registry
// of its own, served at /metrics: what to alert on when the fleet stops
// planning and Argo CD keeps getting the last good parameters.
type generatorMetrics struct {
	registry    *prometheus.Registry
	failing     prometheus.Gauge
	kept        prometheus.Gauge
	sets        prometheus.Gauge
	lastSuccess prometheus.Gauge
}

func newGeneratorMetrics() *generatorMetrics {
	m := &generatorMetrics{
		registry: prometheus.NewRegistry(),
		failing: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flotilla_generator_refresh_failing",
			Help: "1 when the last planning of the fleet failed and the last good parameters are served."}),
		kept: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flotilla_generator_stale_parameter_sets",
			Help: "Parameter sets served from an earlier planning because their cluster or bundle stopped evaluating."}),
		sets: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flotilla_generator_parameter_sets",
			Help: "Parameter sets served."}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flotilla_generator_last_success_timestamp_seconds",
			Help: "When the fleet last planned without failing (Unix time)."}),
	}
	m.registry.MustRegister(m.failing, m.kept, m.sets, m.lastSuccess)
	return m
}

// NewGenerator returns a generator; it loads the fleet on the first
// request.
func NewGenerator(opts GeneratorOptions) (*Generator, error) {
	if strings.TrimSpace(opts.Token) == "" {
		return nil, errors.New("the plugin generator needs a token: Argo CD sends it as a bearer token")
	}
	if opts.Refresh <= 0 {
		opts.Refresh = 30 * time.Second
	}
	if opts.ApprovalsBranch == "" {
		opts.ApprovalsBranch = report.DefaultApprovalsBranch
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.PathPrefix != "" {
		opts.PathPrefix = "/" + strings.Trim(path.Clean("/"+opts.PathPrefix), "/")
		if opts.PathPrefix == "/" {
			opts.PathPrefix = ""
		}
	}
	return &Generator{opts: opts, metrics: newGeneratorMetrics()}, nil
}

// generatorRequest is what Argo CD posts.
type generatorRequest struct {
	ApplicationSetName string `json:"applicationSetName"`
	Input              struct {
		Parameters map[string]any `json:"parameters"`
	} `json:"input"`
}

type generatorResponse struct {
	Output struct {
		Parameters []map[string]any `json:"parameters"`
	} `json:"output"`
}

// ServeHTTP answers the plugin protocol (and /healthz).
func (g *Generator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case g.opts.PathPrefix + "/healthz":
		_, _ = io.WriteString(w, "ok\n")
		return
	case g.opts.PathPrefix + "/metrics":
		promhttp.HandlerFor(g.metrics.registry, promhttp.HandlerOpts{}).ServeHTTP(w, r)
		return
	case g.opts.PathPrefix + GeneratorPath:
	default:
		httpError(w, http.StatusNotFound, "not found: the plugin generator answers POST "+g.opts.PathPrefix+GeneratorPath)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpError(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(g.opts.Token)) != 1 {
		g.opts.Log.Info("refused a generator request with a missing or wrong token", "remote", r.RemoteAddr)
		httpError(w, http.StatusUnauthorized, "missing or wrong bearer token")
		return
	}
	var req generatorRequest
	body := http.MaxBytesReader(w, r.Body, maxRequestBytes)
	if err := json.NewDecoder(body).Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "the request is not the plugin generator's JSON: "+err.Error())
		return
	}
	filters := map[string][]string{}
	for _, key := range []string{"cluster", "bundle", "wave"} {
		vals, err := stringList(req.Input.Parameters[key])
		if err != nil {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("input parameter %s: %v", key, err))
			return
		}
		if len(vals) > 0 {
			filters[key] = vals
		}
	}
	params, err := g.current(r.Context())
	if err != nil {
		g.opts.Log.Error(err, "the fleet does not load", "applicationSet", req.ApplicationSetName)
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	var resp generatorResponse
	resp.Output.Parameters = []map[string]any{}
	for _, p := range params {
		if matches(p, filters) {
			resp.Output.Parameters = append(resp.Output.Parameters, p)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func matches(p map[string]any, filters map[string][]string) bool {
	for key, vals := range filters {
		s, _ := p[key].(string)
		if !slices.Contains(vals, s) {
			return false
		}
	}
	return true
}

// stringList reads a parameter given as a string or a list of strings.
func stringList(v any) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		if v == "" {
			return nil, nil
		}
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("want a string or a list of strings, got %T in the list", x)
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("want a string or a list of strings, got %T", v)
	}
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// current returns every cluster's bundles as parameters. Plans older than
// Refresh are made again in the background, and requests meanwhile get
// the last good parameters at once: a fleet whose evaluation is slow or
// runs away never holds up Argo CD. Only a request with nothing to serve
// yet waits for the refresh under way.
func (g *Generator) current(ctx context.Context) ([]map[string]any, error) {
	g.mu.Lock()
	if g.loaded.IsZero() || time.Since(g.loaded) >= g.opts.Refresh {
		g.startRefresh()
	}
	done := g.refreshing
	if g.params != nil || done == nil {
		defer g.mu.Unlock()
		return g.params, g.loadErr
	}
	g.mu.Unlock()
	if err := waitFor(ctx, done); err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.params, g.loadErr
}

// Refresh plans the fleet now and returns its error; the generator keeps
// serving the last good parameters if it fails. A refresh already under
// way started before this call and may have read the Git branches before
// a change the caller made (an approval, a status): it is waited for, and
// then a refresh of its own runs. The command calls Refresh before
// serving, so that Argo CD's first request finds parameters ready.
func (g *Generator) Refresh(ctx context.Context) error {
	for {
		g.mu.Lock()
		before := g.refreshing != nil
		g.startRefresh()
		done := g.refreshing
		g.mu.Unlock()
		if err := waitFor(ctx, done); err != nil {
			return err
		}
		if !before {
			break
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lastErr
}

// waitFor waits until done is closed (a refresh ended) or ctx ends.
func waitFor(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// startRefresh starts a refresh unless one is under way (g.mu held).
func (g *Generator) startRefresh() {
	if g.refreshing != nil {
		return
	}
	done := make(chan struct{})
	g.refreshing = done
	last := g.params
	go func() {
		// Not a request's context: a request that gives up does not end
		// the refresh (the pool's PlanTimeout bounds it).
		params, err := g.load(context.Background(), last)
		g.mu.Lock()
		defer g.mu.Unlock()
		g.loaded, g.refreshing, g.lastErr = time.Now(), nil, err
		close(done)
		g.observe(err, len(params))
		switch {
		case err == nil:
			g.params, g.loadErr = params, nil
		case g.params != nil:
			g.opts.Log.Error(err, "the fleet does not plan: serving the last good parameters")
		default:
			g.loadErr = err
		}
	}()
}

// observe records a refresh in the metrics (g.mu held).
func (g *Generator) observe(err error, sets int) {
	m := g.metrics
	if err != nil {
		m.failing.Set(1)
		return
	}
	m.failing.Set(0)
	m.sets.Set(float64(sets))
	m.kept.Set(float64(g.kept))
	m.lastSuccess.Set(float64(time.Now().Unix()))
}

// plan plans every known cluster from the fleet in dir: in a sandbox
// worker with a pool.
func (g *Generator) plan(ctx context.Context, dir string, known []fleet.Cluster) (*sandbox.FleetPlans, error) {
	load := fleet.LoadOptions{Path: g.opts.Path}
	if g.opts.Pool != nil {
		return g.opts.Pool.PlanFleet(ctx, dir, load, known)
	}
	f, err := fleet.Load(dir, load)
	if err != nil {
		return nil, err
	}
	out := &sandbox.FleetPlans{Clusters: fleet.JoinClusters(f.Inventory(), known)}
	out.Plans, out.Errors, err = f.PlanClusters(ctx, out.Clusters, nil)
	return out, err
}

// load plans the fleet for the clusters of its inventory and status
// branches at the fleet folder's commit, and takes the rollout gate: a
// cluster or bundle its wave holds gets the parameters of the revision it
// applied last (from its status branch), or those served before. A
// cluster or bundle that fails keeps its parameters of prev, the last
// good ones.
func (g *Generator) load(ctx context.Context, prev []map[string]any) ([]map[string]any, error) {
	repo, _ := git.PlainOpenWithOptions(g.opts.Dir, &git.PlainOpenOptions{DetectDotGit: true, EnableDotGitCommonDir: true})
	known, err := report.KnownClusters(ctx, repo, g.opts.Status)
	if err != nil {
		return nil, err
	}
	fp, err := g.plan(ctx, g.opts.Dir, known.Clusters)
	if err != nil {
		return nil, err
	}
	revision := headOf(repo)
	decisions, err := g.gate(ctx, repo, known, fp, revision)
	if err != nil {
		return nil, fmt.Errorf("the rollout gate: %w", err)
	}
	last := byClusterAndBundle(prev)
	held := heldParams{g: g, ctx: ctx, known: known, last: last, plans: map[string]*sandbox.FleetPlans{}}
	var out []map[string]any
	kept := 0
	defer func() {
		g.mu.Lock()
		g.kept = kept
		g.mu.Unlock()
	}()
	for i, p := range fp.Plans {
		name := fp.Clusters[i].Name
		if fp.Errors[i] != nil {
			g.opts.Log.Error(fp.Errors[i], "cluster does not evaluate: its last good parameters stay", "cluster", name)
			out = append(out, last[name]...)
			kept += len(last[name])
			continue
		}
		var d decision
		if decisions != nil {
			d = decisions[i]
		}
		if d.whole {
			out = append(out, held.of(name, "")...)
			continue
		}
		for _, b := range p.Bundles {
			switch {
			case d.held[b.Name]:
				out = append(out, held.of(name, b.Name)...)
			case b.Failed():
				g.opts.Log.Error(b.Errors, "bundle does not evaluate: its last good parameters stay", "cluster", name, "bundle", b.Name)
				out = append(out, last[name+"/"+b.Name]...)
				kept += len(last[name+"/"+b.Name])
			default:
				out = append(out, withRevision(Params(p, b, clusterDir(name)+"/"+b.Name), revision))
			}
		}
	}
	return out, nil
}

// withRevision adds the commit the parameters were planned at: the
// "revision" parameter, for the Application's targetRevision, so that
// what Argo CD renders from the fleet repository is the gated revision's
// too.
func withRevision(p map[string]any, revision string) map[string]any {
	p["revision"] = revision
	return p
}

// byClusterAndBundle indexes parameter sets by cluster and by
// cluster/bundle.
func byClusterAndBundle(params []map[string]any) map[string][]map[string]any {
	out := map[string][]map[string]any{}
	for _, p := range params {
		c, _ := p["cluster"].(string)
		b, _ := p["bundle"].(string)
		out[c] = append(out[c], p)
		out[c+"/"+b] = []map[string]any{p}
	}
	return out
}

// headOf is the commit checked out in the fleet folder's repository ("":
// not a repository, and no gate).
func headOf(repo *git.Repository) string {
	if repo == nil {
		return ""
	}
	head, err := repo.Head()
	if err != nil {
		return ""
	}
	return head.Hash().String()
}

// gate runs the agents' rollout gate over the plans (nil: no rollout
// has waves, or the folder is not a repository).
func (g *Generator) gate(ctx context.Context, repo *git.Repository, known *report.Known, fp *sandbox.FleetPlans, revision string) ([]decision, error) {
	if revision == "" {
		return nil, nil
	}
	plans := make([]*fleet.Plan, len(fp.Plans))
	for i, p := range fp.Plans {
		plans[i] = p
		if p == nil {
			// A cluster that does not evaluate is decided nothing for.
			plans[i] = &fleet.Plan{Cluster: fp.Clusters[i]}
		}
	}
	cb, err := controlBranch(ctx, g.opts.Status, g.opts.ApprovalsBranch, repo)
	if err != nil {
		return nil, err
	}
	return decide(plans, known, cb, tipOf(repo, revision), g.opts.Now())
}

// heldParams are the parameters of clusters and bundles the rollout
// holds: planned at the revision each applied last, as its status branch
// says (each revision planned once), else the ones served before; none
// for a cluster that has neither (it has nothing yet, and gets nothing
// until its wave opens).
type heldParams struct {
	g     *Generator
	ctx   context.Context
	known *report.Known
	last  map[string][]map[string]any
	plans map[string]*sandbox.FleetPlans
}

// of is a held cluster's parameters (bundle "": the whole cluster), or a
// held bundle's.
func (h *heldParams) of(cluster, bundle string) []map[string]any {
	key := cluster
	if bundle != "" {
		key += "/" + bundle
	}
	rev := appliedRevision(h.known.Statuses[cluster], bundle)
	if rev == "" {
		return h.last[key]
	}
	fp, err := h.planAt(rev)
	if err != nil {
		h.g.opts.Log.Error(err, "planning the revision a held cluster applied: its last parameters stay", "cluster", cluster, "revision", rev)
		return h.last[key]
	}
	for i, p := range fp.Plans {
		if fp.Clusters[i].Name != cluster || p == nil {
			continue
		}
		var out []map[string]any
		for _, b := range p.Bundles {
			if (bundle == "" || b.Name == bundle) && !b.Failed() {
				out = append(out, withRevision(Params(p, b, clusterDir(cluster)+"/"+b.Name), rev))
			}
		}
		return out
	}
	return h.last[key]
}

// planAt plans the fleet at a revision of the folder's repository.
func (h *heldParams) planAt(rev string) (*sandbox.FleetPlans, error) {
	if fp := h.plans[rev]; fp != nil {
		return fp, nil
	}
	repo, err := snapshot.Open(h.g.opts.Dir)
	if err != nil {
		return nil, err
	}
	defer repo.Close()
	snap, err := repo.At(rev)
	if err != nil {
		return nil, err
	}
	fp, err := h.g.plan(h.ctx, snap.Dir, h.known.Clusters)
	if err != nil {
		return nil, err
	}
	h.plans[rev] = fp
	return fp, nil
}

// appliedRevision is the revision a cluster's status says it applied
// (bundle "": the cluster's; else that bundle's).
func appliedRevision(st *report.Status, bundle string) string {
	if st == nil {
		return ""
	}
	if bundle == "" {
		return st.AppliedRevision
	}
	for _, b := range st.Bundles {
		if b.Name == bundle {
			return b.Revision
		}
	}
	return ""
}
