// Package planrender renders a cluster's plan. It is where the fleet model
// meets the renderers (fleet and render never import each other): each
// planned bundle becomes a render request, and bundles with the same
// inputs for clusters with the same capabilities render once.
package planrender

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/internal/inorder"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/cue"
	"github.com/flotilla-gitops/flotilla/render/helm"
	"github.com/flotilla-gitops/flotilla/render/kustomize"
	"github.com/flotilla-gitops/flotilla/render/manifests"
	"github.com/flotilla-gitops/flotilla/render/sops"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/apply"
)

// Sources say what renderers may fetch from outside the fleet repository,
// where they keep it and with which credentials: the same for the
// commands, the agent and the sandbox's workers (which receive it as
// JSON).
type Sources struct {
	// AllowRemoteBases lets kustomizations use remote bases.
	AllowRemoteBases bool `json:"allowRemoteBases,omitempty"`
	// AllowChartDownloads lets a chart of the fleet repository have the
	// dependencies its Chart.lock lists fetched when they are not
	// vendored in its charts/ folder.
	AllowChartDownloads bool `json:"allowChartDownloads,omitempty"`
	// ChartCacheDir keeps charts from chart repositories and registries;
	// empty means the user's cache folder.
	ChartCacheDir string `json:"chartCacheDir,omitempty"`
	// RegistryConfig is a file of OCI registry credentials (Docker's
	// config.json format); empty: anonymous.
	RegistryConfig string `json:"registryConfig,omitempty"`
	// PlainHTTPRegistries are registries (host[:port]) reached over plain
	// HTTP.
	PlainHTTPRegistries []string `json:"plainHTTPRegistries,omitempty"`
	// Secrets is what renderers do with SOPS-encrypted files: mask them
	// (sops.ModeMask, the default), decrypt them with the age identities of
	// AgeKeyFiles (sops.ModeDecrypt) or refuse them (sops.ModeRefuse).
	Secrets     sops.Mode `json:"secrets,omitempty"`
	AgeKeyFiles []string  `json:"ageKeyFiles,omitempty"`
}

// Options configure rendering.
type Options struct {
	Sources
	// Scope tells namespaced kinds; nil means the built-in kinds plus the
	// CRDs being rendered (offline rendering).
	Scope render.Scope
	// MaxManifestSize bounds a manifest file (0: the renderer's default).
	MaxManifestSize int64
	// Limits bound each render (see render.Limits).
	Limits render.Limits
	// Renderers replace the in-process renderers by source kind: a
	// sandbox's, which render in child processes it can kill.
	Renderers map[spec.Kind]render.Renderer
}

// InProcess returns the renderers of every source kind, running in this
// process, configured by opts: what a sandbox's workers run.
func InProcess(opts Options) map[spec.Kind]render.Renderer {
	secrets := sops.NewFiles(opts.Secrets, opts.AgeKeyFiles)
	// Every renderer's errors are scrubbed of what it decrypted, here in
	// the process that rendered (a sandbox worker sends no plaintext).
	return map[spec.Kind]render.Renderer{
		spec.KindHelm: render.Scrubbing(helm.New(helm.Options{
			CacheDir: opts.ChartCacheDir, RegistryConfig: opts.RegistryConfig,
			PlainHTTPRegistries: opts.PlainHTTPRegistries, AllowDownloads: opts.AllowChartDownloads,
			Secrets: secrets,
		})),
		spec.KindKustomize: render.Scrubbing(kustomize.New(kustomize.Options{AllowRemoteBases: opts.AllowRemoteBases, Secrets: secrets})),
		spec.KindManifests: render.Scrubbing(manifests.Renderer{MaxFileSize: opts.MaxManifestSize, Secrets: secrets}),
		spec.KindResources: cue.Renderer{},
	}
}

// Renderer renders the plans of one fleet repository checkout. It is safe
// for concurrent use, and remembers what it rendered: make a new one for a
// new checkout.
type Renderer struct {
	repoDir string
	engine  *render.Engine
	// maxClusterBytes is Limits.MaxClusterBytes.
	maxClusterBytes int64

	mu    sync.Mutex
	cache map[string]*cached
	// lru orders the cached results (by key), least recently used first;
	// held is the size of their objects as JSON, kept under
	// maxCachedBytes.
	lru       *list.List
	held      int64
	maxCached int64 // maxCachedBytes; tests lower it
	renders   int
}

// maxCachedBytes bounds the renders a Renderer remembers, by the size of
// their objects as JSON: past it, the least recently used are let go, and
// rendered again if asked for again. A batch that renders a thousand
// clusters then holds the renders its clusters share (which every cluster
// asks for again, so they stay recent), not every cluster's own. Decoded
// objects take about seven times their JSON in memory (measured with the
// synthetic fleet's ConfigMaps and Deployments: 16 MiB of JSON held 110-130
// MB of heap), so this is about 120 MB; at 64 MiB the renders remembered
// were what made render --all of 5,000 clusters grow past a gigabyte, for
// no render saved (the same 10,473 distinct renders at 1,000 clusters).
const maxCachedBytes = 16 << 20

type cached struct {
	once sync.Once
	res  *render.Result
	err  error
	// elem is the entry's place in the Renderer's lru once its result
	// counts in held.
	elem *list.Element
}

// New returns a renderer for the repository at repoDir with every source
// kind.
func New(repoDir string, opts Options) *Renderer {
	renderers := opts.Renderers
	if renderers == nil {
		renderers = InProcess(opts)
	}
	engine := render.NewEngine(renderers, opts.Scope).WithLimits(opts.Limits)
	return &Renderer{repoDir: repoDir, engine: engine, cache: map[string]*cached{}, lru: list.New(), maxCached: maxCachedBytes, maxClusterBytes: opts.Limits.MaxClusterBytes}
}

// Bundle is one planned bundle rendered, or why it could not be.
type Bundle struct {
	Name   string
	Result *render.Result
	Err    error
}

// RenderPlan renders every bundle of the plan, in plan order. A bundle
// that failed to plan or to render carries its error; the others render.
// When ctx ends, rendering stops and the error is ctx's cause: the bundles
// are then incomplete and must not be applied.
func (r *Renderer) RenderPlan(ctx context.Context, plan *fleet.Plan) ([]Bundle, error) {
	out := make([]Bundle, len(plan.Bundles))
	var held int64
	for i, b := range plan.Bundles {
		out[i] = Bundle{Name: b.Name}
		if b.Failed() {
			out[i].Err = b.Errors
			continue
		}
		out[i].Result, out[i].Err = r.RenderBundle(ctx, plan.Cluster, b)
		if res := out[i].Result; res != nil && r.maxClusterBytes > 0 {
			// What the cluster's bundles hold together is bounded: past
			// the bound, a bundle fails (in plan order) and is let go.
			if held+res.Size > r.maxClusterBytes {
				out[i].Result, out[i].Err = nil, &render.Error{Bundle: b.Name, Cluster: plan.Cluster.Name, Err: fmt.Errorf(
					"%w: its objects (%s as JSON) with the cluster's bundles before it (%s) take more than the %s a cluster's may (--max-cluster-size)",
					render.ErrTooLarge, render.MiB(res.Size), render.MiB(held), render.MiB(r.maxClusterBytes))}
				r.forget(plan.Cluster, b)
			} else {
				held += res.Size
			}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("rendering bundle %s for cluster %s (%d of %s rendered): %w",
				b.Name, plan.Cluster.Name, i, english.Count(len(plan.Bundles), "bundle"), context.Cause(ctx))
		}
	}
	RefuseSharedObjects(plan.Cluster.Name, out)
	return out, nil
}

// RenderPlans renders the bundles of many plans (only those keep accepts,
// when it is set) on all CPUs, each distinct input once: out[i] are
// plans[i]'s bundles in plan order, with each cluster's shared objects
// refused as RenderPlan does. done is called after each bundle. When ctx
// ends, rendering stops and the error is ctx's cause. A caller that uses
// each cluster's bundles as they come and keeps nothing (render --all)
// uses a Stream instead.
func (r *Renderer) RenderPlans(ctx context.Context, plans []*fleet.Plan, keep func(*fleet.Bundle) bool, done func()) ([][]Bundle, error) {
	out := make([][]Bundle, len(plans))
	s := r.Stream(ctx, keep, done, func(i int, _ *fleet.Plan, bundles []Bundle) error {
		out[i] = bundles
		return nil
	})
	for i, p := range plans {
		if s.Add(i, p) != nil {
			break // Wait says why
		}
	}
	if err := s.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// Stream renders plans as they are made, for a caller that plans and
// renders at once and holds neither (render --all of a large inventory):
// it is given plans 0, 1, 2... one at a time by Add, and hands each one's
// bundles to use in that order. Add queues a plan's
// bundles for the rendering goroutines (one per CPU) and waits only while
// the queue is full, so whoever makes the plans runs a little ahead of the
// renders and is held back rather than piling plans up: memory holds the
// plans and renders in flight, not the batch.
type Stream struct {
	r       *Renderer
	keep    func(*fleet.Bundle) bool
	done    func()
	cancel  context.CancelCauseFunc
	ctx     context.Context //nolint:containedctx // the stream's own, ended by Wait
	handoff *inorder.Handoff[renderedPlan]
	g       *errgroup.Group
	gctx    context.Context //nolint:containedctx // the renders', ended by their first error
	queue   chan streamTask
}

// streamTask is one bundle of an added plan, to render into *res; the
// last of the plan's bundles to finish hands out over.
type streamTask struct {
	i    int
	p    *fleet.Plan
	b    *fleet.Bundle
	res  *Bundle
	out  []Bundle
	left *atomic.Int64
}

// renderedPlan is a plan and its bundles rendered, on their way to use.
type renderedPlan struct {
	p       *fleet.Plan
	bundles []Bundle
}

// queuedPerCPU is how many bundles may wait per rendering goroutine: a few
// clusters' worth, so that the renders do not wait while the next plan is
// made.
const queuedPerCPU = 64

// Stream starts a Stream: keep (may be nil) chooses the bundles to render,
// done (may be nil) is called after each bundle, use gets each plan with
// its bundles in order and is never called twice at once. Wait must be
// called.
func (r *Renderer) Stream(ctx context.Context, keep func(*fleet.Bundle) bool, done func(), use func(i int, p *fleet.Plan, bundles []Bundle) error) *Stream {
	ctx, cancel := context.WithCancelCause(ctx)
	s := &Stream{r: r, keep: keep, done: done, cancel: cancel, ctx: ctx}
	s.handoff = inorder.New(func(i int, rp renderedPlan) error { return use(i, rp.p, rp.bundles) }, cancel)
	s.g, s.gctx = errgroup.WithContext(ctx)
	cpus := runtime.GOMAXPROCS(0)
	s.queue = make(chan streamTask, queuedPerCPU*cpus)
	for range cpus {
		s.g.Go(s.renderQueued)
	}
	return s
}

// renderQueued renders queued bundles until the queue is closed or
// rendering stops.
func (s *Stream) renderQueued() error {
	for t := range s.queue {
		if s.gctx.Err() != nil {
			return context.Cause(s.gctx)
		}
		if t.b.Failed() {
			t.res.Err = t.b.Errors
		} else {
			t.res.Result, t.res.Err = s.r.RenderBundle(s.gctx, t.p.Cluster, t.b)
		}
		if s.done != nil {
			s.done()
		}
		if s.gctx.Err() != nil {
			return context.Cause(s.gctx)
		}
		if t.left.Add(-1) == 0 {
			RefuseSharedObjects(t.p.Cluster.Name, t.out)
			s.handoff.Done(t.i, renderedPlan{t.p, t.out})
		}
	}
	return nil
}

// Add renders plan p as the i-th (0, 1, 2... every index once), waiting
// while the queue is full. It returns an error once rendering stopped (use
// failed, or ctx ended): nothing more is rendered, and Wait says why.
func (s *Stream) Add(i int, p *fleet.Plan) error {
	if s.gctx.Err() != nil {
		return context.Cause(s.gctx)
	}
	out := []Bundle{} // nothing to render is still handed over
	var kept []*fleet.Bundle
	for _, b := range p.Bundles {
		if s.keep == nil || s.keep(b) {
			out = append(out, Bundle{Name: b.Name})
			kept = append(kept, b)
		}
	}
	if len(kept) == 0 {
		s.handoff.Done(i, renderedPlan{p, out})
		return nil
	}
	left := new(atomic.Int64)
	left.Store(int64(len(kept)))
	for j, b := range kept {
		select {
		case s.queue <- streamTask{i: i, p: p, b: b, res: &out[j], out: out, left: left}:
		case <-s.gctx.Done():
			return context.Cause(s.gctx)
		}
	}
	return nil
}

// Wait waits for what was added to be rendered and handed over, and
// returns use's error or ctx's cause, if rendering stopped. Nothing may be
// added after it.
func (s *Stream) Wait() error {
	defer s.cancel(nil)
	close(s.queue)
	if err := s.g.Wait(); err != nil {
		return err
	}
	return context.Cause(s.ctx)
}

// ErrSharedObject is wrapped when two bundles of one cluster render the
// same object: they would fight over it, and pruning one would delete the
// other's.
var ErrSharedObject = errors.New("an object belongs to one bundle")

// RefuseSharedObjects fails every bundle of one cluster's rendered plan (in
// apply order) that renders an object an earlier bundle already renders,
// naming both; the earlier one is applied as before. Nothing of the failed
// bundle is applied or pruned. RenderPlan does it; callers that render
// bundle by bundle (render --all) call it on each cluster's bundles.
func RefuseSharedObjects(cluster string, bundles []Bundle) {
	owner := map[string]string{}
	for i, b := range bundles {
		if b.Result == nil {
			continue
		}
		var shared []string
		for _, obj := range b.Result.Objects {
			if first, ok := owner[render.StoredKey(obj)]; ok {
				shared = append(shared, fmt.Sprintf("%s (also in bundle %s)", render.ObjectKey(obj), first))
			}
		}
		if len(shared) > 0 {
			bundles[i].Result = nil
			bundles[i].Err = &render.Error{Bundle: b.Name, Cluster: cluster, Err: fmt.Errorf("%w: %s", ErrSharedObject, strings.Join(shared, ", "))}
			continue
		}
		for _, obj := range b.Result.Objects {
			owner[render.StoredKey(obj)] = b.Name
		}
	}
}

// RenderBundle renders one planned bundle for a cluster, once per distinct
// inputs and capabilities. Results are shared between the clusters that
// have them in common: callers must not modify them (deep-copy first).
func (r *Renderer) RenderBundle(ctx context.Context, c fleet.Cluster, b *fleet.Bundle) (*render.Result, error) {
	req := Request(r.repoDir, c, b)
	key := cacheKey(req, b)
	r.mu.Lock()
	entry, ok := r.cache[key]
	switch {
	case !ok:
		entry = &cached{}
		r.cache[key] = entry
		r.renders++
	case entry.elem != nil:
		r.lru.MoveToBack(entry.elem)
	}
	r.mu.Unlock()
	entry.once.Do(func() {
		entry.res, entry.err = r.engine.Render(ctx, req)
		r.remember(key, entry)
	})
	if entry.err != nil {
		// The error names the cluster that rendered first; say this one.
		var re *render.Error
		if errors.As(entry.err, &re) {
			return nil, &render.Error{Bundle: re.Bundle, Cluster: c.Name, Err: re.Err}
		}
		return nil, entry.err
	}
	if err := checkGrant(c.Name, b, entry.res); err != nil {
		return nil, render.ScrubError(err, entry.res.Sensitive)
	}
	return entry.res, nil
}

// remember counts a new result in what the cache holds, and lets the
// least recently used results go past maxCachedBytes (their objects stay
// with whoever has them).
func (r *Renderer) remember(key string, entry *cached) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if entry.res == nil || r.cache[key] != entry {
		return // an error (kept: small), or forgotten meanwhile
	}
	entry.elem = r.lru.PushBack(key)
	r.held += entry.res.Size
	for r.held > r.maxCached && r.lru.Len() > 1 {
		r.drop(r.lru.Front().Value.(string))
	}
}

// drop lets a cached render go; r.mu is held.
func (r *Renderer) drop(key string) {
	entry, ok := r.cache[key]
	if !ok {
		return
	}
	delete(r.cache, key)
	if entry.elem != nil {
		r.lru.Remove(entry.elem)
		r.held -= entry.res.Size
		entry.elem = nil
	}
}

// forget drops a bundle's render from the cache, so that its objects can
// be let go.
func (r *Renderer) forget(c fleet.Cluster, b *fleet.Bundle) {
	key := cacheKey(Request(r.repoDir, c, b), b)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drop(key)
}

// cacheKey is what a render is remembered by: the bundle's inputs and the
// cluster's capabilities.
func cacheKey(req *render.Request, b *fleet.Bundle) string {
	return b.InputsDigest + "|" + req.Capabilities.KubeVersion + "|" + strings.Join(req.Capabilities.APIVersions, ",")
}

// ErrNotGranted is wrapped when a tenant's bundle renders an object its
// tenant may not have: in a namespace not the tenant's, or cluster-scoped
// of a kind not granted.
var ErrNotGranted = errors.New("renders objects its tenant is not granted")

// maxListed bounds how many objects an error lists.
const maxListed = 10

// checkGrant checks a tenant's rendered bundle against its grant (the
// tenancy policy of the fleet): every namespaced object in one of the
// tenant's namespaces, every cluster-scoped object of a granted kind (and
// a Namespace one of the tenant's). The whole bundle fails otherwise, before
// anything of it is applied: the objects' RBAC is the last line, this is
// the one that names the tenant's mistake.
func checkGrant(cluster string, b *fleet.Bundle, res *render.Result) error {
	g := b.Tenant
	if g == nil {
		return nil
	}
	var refused []string
	for _, obj := range res.Objects {
		gk := obj.GroupVersionKind().GroupKind()
		var why string
		switch ns := obj.GetNamespace(); {
		case ns != "" && !g.AllowsNamespace(ns):
			why = fmt.Sprintf("namespace %s is not the tenant's", ns)
		case ns == "" && !g.AllowsClusterKind(gk.String()):
			why = fmt.Sprintf("cluster-scoped %s is not one of the tenant's clusterKinds", gk)
		case ns == "" && gk == (schema.GroupKind{Kind: "Namespace"}) && !g.AllowsNamespace(obj.GetName()):
			why = "the Namespace is not one of the tenant's"
		default:
			continue
		}
		refused = append(refused, fmt.Sprintf("%s (%s)", render.ObjectKey(obj), why))
	}
	if len(refused) == 0 {
		return nil
	}
	more := ""
	if len(refused) > maxListed {
		more = fmt.Sprintf(" and %d more", len(refused)-maxListed)
		refused = refused[:maxListed]
	}
	return &render.Error{Bundle: b.Name, Cluster: cluster, Err: fmt.Errorf("%w: tenant %s (namespaces [%s], clusterKinds [%s]) may not have %s%s",
		ErrNotGranted, g.Tenant, strings.Join(g.Namespaces, ", "), strings.Join(g.ClusterKinds, ", "),
		strings.Join(refused, ", "), more)}
}

// Distinct returns how many renders were done (or tried): each distinct
// input once, unless the cache let it go and it was asked for again.
func (r *Renderer) Distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.renders
}

// Request turns a planned bundle into a render request. The request holds
// the bundle's source as the plan does (one Go form of the spec): renderers
// read it and never change it, so bundles shared between clusters stay
// intact.
func Request(repoDir string, c fleet.Cluster, b *fleet.Bundle) *render.Request {
	return &render.Request{
		Bundle:        b.Name,
		Namespace:     b.Namespace,
		Source:        b.Source,
		Values:        b.Values,
		RenderTimeout: b.RenderTimeout,
		Cluster:       c.Name,
		RepoDir:       repoDir,
		Capabilities: render.Capabilities{
			KubeVersion: c.Facts.KubernetesVersion,
			APIVersions: slices.Sorted(slices.Values(c.Facts.APIVersions)),
		},
	}
}

// ApplyBundles renders the plan into what the apply engine syncs: each
// bundle's objects and apply options, or, for a bundle that failed to plan
// or render, its error (so that nothing of it is applied or pruned). When
// ctx ends during rendering it returns only ctx's cause: nothing is to be
// applied, pruned or deleted from a half-rendered plan.
func (r *Renderer) ApplyBundles(ctx context.Context, plan *fleet.Plan, revision string) ([]apply.Bundle, error) {
	rendered, err := r.RenderPlan(ctx, plan)
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("rendering cluster %s: %w", plan.Cluster.Name, context.Cause(ctx))
	}
	out := make([]apply.Bundle, len(plan.Bundles))
	for i, b := range plan.Bundles {
		out[i] = apply.Bundle{
			Name:         b.Name,
			Namespace:    b.Namespace,
			Revision:     revision,
			DependsOn:    b.DependsOn,
			ApplyOptions: b.Apply,
			Err:          rendered[i].Err,
		}
		if res := rendered[i].Result; res != nil {
			out[i].Objects, out[i].Digest, out[i].Sensitive = res.Objects, res.Digest, res.Sensitive
		}
	}
	return out, nil
}
