// Package agent is the loop that runs in each cluster: it composes the
// source (Git), the fleet model, the renderers and the apply engine. One
// pass asks the remote for its tip, and only when the revision or the
// cluster's identity and facts changed (or the last pass failed) does it
// fetch, plan, render and apply: the steady state costs one ls-remote and a
// few reads, no render and no write.
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/sops"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/identity"
	"github.com/flotilla-gitops/flotilla/sync/notify"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/rollout"
	"github.com/flotilla-gitops/flotilla/sync/sandbox"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// Options configure an agent.
type Options struct {
	// Source follows the fleet repository.
	Source source.Options
	// Path is the folder of fleet.cue inside the repository.
	Path     string
	Identity identity.Options
	// Interval between polls; each wait is jittered by up to a tenth.
	Interval time.Duration
	// TriggerSpread spreads the passes a webhook (/trigger) asks for: each
	// agent waits a random time under it first, so that a push webhook
	// fanned out to every cluster of a fleet makes the Git host serve the
	// fetches over the window, never all at once. Zero: at once.
	TriggerSpread time.Duration
	Apply         apply.Options
	// Sources say what rendering may fetch, with which credentials, and
	// which age identities decrypt SOPS-encrypted files (Secrets defaults
	// to sops.ModeDecrypt).
	Sources planrender.Sources
	// Limits bound each bundle's render; MaxManifestSize a manifest file.
	Limits          render.Limits
	MaxManifestSize int64
	// Sandbox, when set, evaluates the fleet and renders each bundle in
	// worker processes that are killed at their deadline or memory bound
	// (see package sandbox), so that one bundle cannot stop the others or
	// the agent. Nil: in the agent's own process.
	Sandbox *sandbox.Options
	// TrustedKeys are files of armored OpenPGP public keys; when given, a
	// revision is applied only if its commit is signed by one of them.
	TrustedKeys []string
	// Status, when set, publishes each pass to a status branch; the
	// rollout gate reads the other clusters' from the same repository.
	Status *report.Options
	// ApprovalsBranch holds rollout approvals, pauses and holds (default
	// report.DefaultApprovalsBranch): in the fleet repository when it has
	// the branch, else in the status repository.
	ApprovalsBranch string
	// SelfUpdateDeadline is how long the new agent has to report after
	// this one applied its own new Deployment (Apply.Self); past it,
	// readers take the cluster as Failed. Default 5 minutes.
	SelfUpdateDeadline time.Duration
	// Notify, when set, sends the agent's events (Failed, recovered,
	// drift corrected, waiting for an approval, halted) to its receivers;
	// NotifyOptions tune the delivery.
	Notify        *notify.Config
	NotifyOptions notify.Options
	// FullSyncInterval is how often a pass checks every applied object
	// with the cluster (a dry run of each; drift corrected or reported)
	// even when nothing changed, jittered by up to a tenth. Between full
	// passes a pass applies in proportion to the change (see fullPass).
	// Zero: DefaultFullSyncInterval; negative: every pass is full.
	FullSyncInterval time.Duration
}

// DefaultFullSyncInterval is the default of Options.FullSyncInterval.
const DefaultFullSyncInterval = time.Hour

// Agent syncs one cluster from the fleet repository.
type Agent struct {
	opts   Options
	kube   client.Client
	ident  *identity.Resolver
	src    *source.Source
	verify *source.Verifier // nil: signatures are not required
	mgr    *apply.Manager
	log    logr.Logger

	// What the last complete pass applied; a pass with the same revision
	// and identity does nothing. appliedRevision is set once the whole tip
	// is applied; while part of it waits in the rollout, appliedGate says
	// what the gate let through, and a pass that would let through the same
	// applies nothing. fleetRevision is the revision of the bundles that
	// follow the fleet's rollout (the status file's appliedRevision).
	appliedRevision string
	appliedIdentity string
	appliedGate     string
	fleetRevision   string
	loggedWait      string // the rollout reason last logged
	// watchWave: at the tip, the gate still runs each pass (gate.watch).
	watchWave bool

	// cache keeps the tip's plan and the other clusters' places in its
	// rollouts while the tip and the identities stay the same.
	cache struct {
		plan             *fleet.Plan
		planKey          string
		places           []fleet.ClusterRollouts
		placesKey        string
		placesEvaluation int // evaluations made, for tests
		// controls are the approvals branch as last read.
		controls *report.ControlBranch
	}

	// full is the last full pass, when the next is due, the cluster's API
	// it saw, and why the next must be full when something asked (a watch
	// broke); settled are the bundles whose last sync ended Ready or
	// Drifted, the only ones a pass may apply incrementally.
	full struct {
		last, next time.Time
		api        string
		asked      string
	}
	settled map[string]bool

	// statuses reads the other clusters' status branches, fetching only
	// what moved since its last read.
	statuses *report.Reader

	ready   atomic.Bool   // a pass has succeeded
	trigger chan struct{} // a pass is asked for now (drift)
	webhook chan struct{} // a pass is asked for within TriggerSpread (/trigger)
	metrics *metrics

	drift          *driftWatch
	kinds          []schema.GroupVersionKind // the kinds last applied
	applied        []object.ObjMetadata      // the objects last applied
	driftSuspected atomic.Bool               // a managed object was changed by someone else

	reporter *report.Reporter // nil: no status branch
	status   *report.Status   // the status last built

	notifier   *notify.Notifier // nil: no receivers
	stopNotify context.CancelFunc

	pool *sandbox.Pool // nil: evaluate and render in process
	eval evaluator     // the pool's workers, or this process

	// replacedBy is set once this agent applied its own new Deployment:
	// it waits to be replaced until the deadline, doing nothing.
	replacedBy *report.AgentUpdate
}

// New builds an agent for the cluster cfg names.
func New(cfg *rest.Config, opts Options, log logr.Logger) (*Agent, error) {
	// The poll's advertisement says where the approvals branch is.
	srcOpts := opts.Source
	srcOpts.Watch = append(slices.Clone(srcOpts.Watch), cmp.Or(opts.ApprovalsBranch, report.DefaultApprovalsBranch))
	src, err := source.New(srcOpts)
	if err != nil {
		return nil, err
	}
	mgr, err := apply.New(cfg, opts.Apply)
	if err != nil {
		return nil, err
	}
	kube, err := client.New(cfg, client.Options{Mapper: mgr.RESTMapper()})
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	var verify *source.Verifier
	if len(opts.TrustedKeys) > 0 {
		if verify, err = source.NewVerifier(opts.TrustedKeys...); err != nil {
			return nil, err
		}
	}
	// The agent applies what it renders: an encrypted file is decrypted
	// (with Sources.AgeKeyFiles) or fails its bundle; never applied masked.
	if opts.Sources.Secrets == "" {
		opts.Sources.Secrets = sops.ModeDecrypt
	}
	a := &Agent{opts: opts, kube: kube, ident: identity.New(opts.Identity, kube, dc), src: src, verify: verify, mgr: mgr, log: log,
		trigger: make(chan struct{}, 1), webhook: make(chan struct{}, 1), metrics: newMetrics()}
	if opts.Sandbox != nil {
		sb := *opts.Sandbox
		sb.Sources, sb.MaxManifestSize = opts.Sources, opts.MaxManifestSize
		if a.pool, err = sandbox.New(sb); err != nil {
			return nil, err
		}
		a.eval = sandboxed{pool: a.pool, load: fleet.LoadOptions{Path: opts.Path}}
		a.metrics.countWorkers(a.pool)
	} else {
		a.eval = newInProcess(fleet.LoadOptions{Path: opts.Path})
	}
	if opts.Status != nil {
		if a.reporter, err = report.New(*opts.Status); err != nil {
			return nil, err
		}
		a.statuses = report.NewReader(opts.Status.URL, opts.Status.Prefix, opts.Status.Auth)
	}
	if opts.Notify != nil {
		a.notifier = notify.New(opts.Notify, opts.NotifyOptions, log.WithName("notify"))
		a.metrics.countNotifications(a.notifier)
		ctx, cancel := context.WithCancel(context.Background())
		a.stopNotify = cancel
		go a.notifier.Run(ctx)
	}
	a.drift, err = newDriftWatch(cfg, mgr.RESTMapper(), opts.Apply.FieldManager, func() {
		a.driftSuspected.Store(true)
		a.Trigger()
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// Pass is what one pass did.
type Pass struct {
	// Revision is the remote's tip.
	Revision string
	// Changed says whether anything was planned and applied; false when
	// neither the revision nor the identity changed.
	Changed bool
	Cluster fleet.Cluster
	// Result is the sync's, when one ran.
	Result *apply.Result
	// Err is why the pass failed: the remote, the fleet evaluation, the
	// apply. The last applied state stays.
	Err error
	// Full says why the pass checked every object with the cluster; ""
	// when it applied in proportion to the change.
	Full string

	// StatusErr is why the status could not be published (the pass itself
	// is not failed by it).
	StatusErr error

	// AgentUpdate is set when the pass held back the agent's own new
	// Deployment: published first, then applied (RunOnce).
	AgentUpdate *report.AgentUpdate
	selfUpdate  *apply.SelfUpdate

	gitErr  bool                      // Err came from the remote
	kinds   []schema.GroupVersionKind // the kinds applied, to watch for drift
	digests map[string]bundleDigests  // per bundle, for the status file
	wave    string                    // the cluster's wave in the fleet's rollout, for the status file
	// committed is when the tip was committed (zero: unknown); revert
	// the revision its commit reverts (flotilla rollout revert).
	committed time.Time
	revert    string
	gate      *gate // what the rollout let through of the tip
}

// bundleDigests identify a bundle's rendered objects and its inputs, and
// the revision they come from.
type bundleDigests struct{ rendered, inputs, revision string }

// Failed reports whether the pass failed or any bundle did.
func (p *Pass) Failed() bool {
	return p.Err != nil || (p.Result != nil && p.Result.Failed())
}

// RunOnce runs one pass, records it in the metrics and publishes the
// cluster's status.
//
// When the pass held back the agent's own new Deployment, the status says
// so first (Progressing, with the image and the deadline of the new
// agent's report), and only then is the Deployment applied: the agent is
// replaced after its last word. Until the deadline it applies nothing
// more; if it is still running then, passes resume.
func (a *Agent) RunOnce(ctx context.Context) *Pass {
	now := time.Now()
	if a.replacedBy != nil && now.Before(a.replacedBy.Deadline) {
		return &Pass{} // being replaced: nothing to do, nothing to publish
	}
	a.replacedBy = nil
	p := a.pass(ctx, now)
	a.metrics.observe(p)
	if p.Result != nil && p.Err == nil {
		if p.selfUpdate = p.Result.SelfUpdate(); p.selfUpdate != nil {
			p.AgentUpdate = &report.AgentUpdate{Image: p.selfUpdate.Image, Deadline: now.Add(a.selfUpdateDeadline()).UTC().Truncate(time.Second)}
		}
	}
	p.StatusErr = a.publish(ctx, p, now)
	if p.selfUpdate != nil {
		a.applySelf(ctx, p)
	}
	if p.Changed {
		// A pass that applied leaves garbage (rendered objects, dry-run
		// answers) that the next collection would free only when the heap
		// grows again: give it back now, so an agent between changes holds
		// its live data and no more (a few milliseconds, once per change).
		debug.FreeOSMemory()
	}
	return p
}

func (a *Agent) selfUpdateDeadline() time.Duration {
	if a.opts.SelfUpdateDeadline > 0 {
		return a.opts.SelfUpdateDeadline
	}
	return 5 * time.Minute
}

// applySelf applies the agent's own new Deployment, once its status is
// published (without a status saying so, nobody would know why the
// cluster went quiet, so it waits for the next pass). Whatever happens,
// the next pass that runs applies the revision again.
func (a *Agent) applySelf(ctx context.Context, p *Pass) {
	a.appliedRevision, a.appliedGate = "", ""
	if p.StatusErr != nil && a.reporter != nil {
		return
	}
	if err := a.mgr.ApplySelf(ctx, p.selfUpdate); err != nil {
		p.Err = err
		return
	}
	a.replacedBy = p.AgentUpdate
	a.log.Info("applied the agent's own new Deployment: this agent is being replaced", "image", p.AgentUpdate.Image,
		"deadline", p.AgentUpdate.Deadline.Format(time.RFC3339), "cluster", p.Cluster.Name)
}

// pass is one pass, as named steps. now is the pass's time: the rollout
// decides at it, and the status says the cluster became Ready at it.
func (a *Agent) pass(ctx context.Context, now time.Time) *Pass {
	p := &Pass{}
	defer a.eval.Release()

	// 1. Who is this cluster now (flags, identity ConfigMap, facts)?
	c, err := a.ident.Resolve(ctx)
	if err != nil {
		p.Err = fmt.Errorf("identity: %w", err)
		return p
	}
	p.Cluster = c
	key := identity.Key(c)

	// 2. What does the remote have? One ls-remote, nothing fetched.
	if p.Revision, err = a.src.Head(ctx); err != nil {
		p.Err, p.gitErr = fmt.Errorf("git: %w", err), true
		return p
	}
	drift := a.driftSuspected.Swap(false)
	defer a.keepDrift(p, drift)
	var due bool
	p.Full, due = a.fullPass(now, c)
	if p.Revision == a.appliedRevision && key == a.appliedIdentity && !drift && !a.watchWave && !due {
		return p
	}
	p.Changed = true

	// 3. The tip, and the fleet planned there for this cluster. A fleet
	// that does not evaluate applies and prunes nothing.
	co, plan, ok := a.tip(ctx, p, key)
	if !ok {
		return p
	}

	// 4. The rollout: which of the tip this cluster may take now, from the
	// other clusters' status branches. Held bundles keep their revision.
	inv := &inventories{kube: a.kube, namespace: a.opts.Apply.InventoryNamespace}
	tip := rollout.Tip{Revision: p.Revision, Revert: p.revert}
	if p.gate, err = a.decideRollout(ctx, co.Dir, plan, tip, func() (map[string]*apply.Inventory, error) { return inv.read(ctx) }, now); err != nil {
		p.Err = fmt.Errorf("rollout of %s; nothing applied or pruned: %w", gitrev.Short(p.Revision), err)
		return p
	}
	a.watchWave = p.gate.watch
	if p.gate.key == a.appliedGate && key == a.appliedIdentity && !drift && !due {
		p.Changed = false // still waiting: nothing new to apply
		return p
	}

	// 5. Render what the tip may change with the cluster's own API scopes
	// and the held bundles at their revisions, and check the policies.
	bundles, kept, err := a.bundles(ctx, co, plan, p.gate, inv.current)
	if err != nil {
		p.Err = fmt.Errorf("nothing applied or pruned: %w", err)
		return p
	}
	a.recordBundles(p, plan, bundles)
	if p.gate.waiting() && key == a.appliedIdentity && !drift && !due && unchanged(bundles, inv.current) {
		// Waiting at a new tip with nothing of it let through: what is
		// applied stays as it is, and the API server is not written to.
		a.appliedGate = p.gate.key
		p.Changed = false
		return p
	}

	// 6. Apply. The render workers have done their part of the pass: they
	// end now rather than idle through the apply (with their memory).
	if a.pool != nil {
		a.pool.RetireIdle()
	}
	a.markIncremental(bundles, p.Full)
	if p.Result, err = a.mgr.Sync(ctx, bundles); err != nil {
		p.Err = fmt.Errorf("apply: %w", err)
		return p
	}
	a.fullDone(p, now)
	defer a.noteSynced(p) // with the bundles rolled back, if any
	// With onFailure: rollback, what failed at the tip goes back.
	if bundles, err = a.rollBack(ctx, p, plan, bundles, inv.current); err != nil {
		p.Err = fmt.Errorf("rolling back from %s: %w", gitrev.Short(p.Revision), err)
		return p
	}

	// 7. Remember what was applied; a failed bundle is retried next pass.
	if !p.Result.Failed() {
		a.appliedIdentity, a.appliedGate = key, p.gate.key
		if !p.gate.waiting() {
			a.appliedRevision = p.Revision
		}
		a.fleetRevision = fleetRevisionOf(p, plan, bundles)
		a.ready.Store(true)
	}
	_ = a.src.Prune(append(kept, p.Revision)...)
	return p
}

// keepDrift asks again for the drift a failed pass may not have
// corrected: the retry passes even at a revision already applied.
func (a *Agent) keepDrift(p *Pass, drift bool) {
	if drift && p.Failed() {
		a.driftSuspected.Store(true)
	}
}

// fullPass says why this pass must check every applied object with the
// cluster ("" when it may apply in proportion to the change), and whether
// that is a reason to pass even when nothing changed. A pass is full:
//
//   - the first of the agent (a restart: what happened while it was down
//     is unknown);
//   - after a watch of the applied objects broke (it may have missed
//     events until its relist);
//   - past the full-sync interval (the safety net for anything the watch
//     can miss, and for kinds it may not list);
//   - when the cluster's API changed (its Kubernetes version or served
//     API versions).
//
// A sync that applies a new or changed CRD is full as well (apply.Sync);
// a bundle whose last sync did not end Ready or Drifted is synced in full
// (markIncremental).
func (a *Agent) fullPass(now time.Time, c fleet.Cluster) (reason string, due bool) {
	if a.drift.takeBroken() {
		a.full.asked = "a watch of the applied objects was interrupted"
	}
	switch {
	case a.full.asked != "":
		return a.full.asked, true
	case a.full.last.IsZero():
		return "the agent's first pass", true
	case a.opts.FullSyncInterval < 0:
		return "every pass is full (full-sync interval 0)", false
	case !now.Before(a.full.next):
		return "the full-sync interval", true
	case apiKey(c) != a.full.api:
		return "the cluster's API changed", true
	}
	return "", false
}

// fullDone notes a full pass's sync: the next is due an interval later,
// jittered by up to a tenth so that a fleet's agents spread theirs.
func (a *Agent) fullDone(p *Pass, now time.Time) {
	if p.Full == "" {
		return
	}
	every := cmp.Or(a.opts.FullSyncInterval, DefaultFullSyncInterval)
	a.full.last, a.full.api, a.full.asked = now, apiKey(p.Cluster), ""
	a.full.next = now.Add(every + time.Duration(rand.Int64N(int64(every/10)+1)))
}

// apiKey identifies the cluster's API: its version and served versions.
func apiKey(c fleet.Cluster) string {
	return c.Facts.KubernetesVersion + "|" + strings.Join(c.Facts.APIVersions, ",")
}

// markIncremental makes the bundles of a pass that is not full apply in
// proportion to their change, with the drift watch vouching for the live
// copies of what they skip; a bundle whose last sync did not end Ready
// or Drifted (failed, skipped, not ready in time, new) syncs in full.
func (a *Agent) markIncremental(bundles []apply.Bundle, full string) {
	if full != "" {
		return
	}
	for i := range bundles {
		if a.settled[bundles[i].Name] {
			bundles[i].Incremental, bundles[i].Unmoved = true, a.drift.unmoved
		}
	}
}

// noteSynced notes, after a pass's sync, which bundles ended Ready or
// Drifted (the next pass may sync them incrementally), and gives the
// drift watch what the dry runs found as rendered.
func (a *Agent) noteSynced(p *Pass) {
	a.settled = map[string]bool{}
	for _, b := range p.Result.Bundles {
		a.settled[b.Name] = b.Phase == apply.PhaseReady || b.Phase == apply.PhaseDrifted
	}
	a.drift.vouch(p.Result)
}

// tip fetches the tip (verified) and plans the fleet there for the
// cluster; on failure it records why on p and returns false.
func (a *Agent) tip(ctx context.Context, p *Pass, key string) (*source.Checkout, *fleet.Plan, bool) {
	co, err := a.atRevision(ctx, p.Revision, true)
	if err != nil {
		p.Err, p.gitErr = err, errors.Is(err, errFetch)
		return nil, nil, false
	}
	plan, err := a.tipPlan(ctx, co.Dir, p.Cluster, p.Revision, key)
	if err != nil {
		p.Err = fmt.Errorf("fleet at %s does not evaluate for %s; nothing applied or pruned: %w", gitrev.Short(p.Revision), p.Cluster.Name, err)
		// The cluster took the revision and failed at it: a rollout halts.
		p.gate = &gate{status: &report.RolloutStatus{Revision: p.Revision, State: report.RolloutApplied, Waves: []string{},
			Message: "the fleet does not evaluate for this cluster at this revision"}}
		return nil, nil, false
	}
	if plan.Rollout != nil {
		p.wave = plan.Rollout.Wave
	}
	if co.Repository != nil {
		if c, err := co.Repository.CommitObject(plumbing.NewHash(p.Revision)); err == nil {
			p.committed, p.revert = c.Committer.When, rollout.RevertOf(c.Message)
		}
	} else if !co.Committed.IsZero() { // a fleet from an OCI registry
		p.committed, p.revert = co.Committed, rollout.RevertOf(co.Message)
	}
	return co, plan, true
}

// errFetch is wrapped when a revision could not be fetched from the remote
// (a Git error for the metrics; reads "git: …").
var errFetch = errors.New("git")

// atRevision is a revision of the fleet repository at hand: the tip (a
// shallow fetch) or an earlier revision the branch still has (a held
// bundle's), its signature checked when the agent requires one. The pass
// and the held bundles take the same step.
func (a *Agent) atRevision(ctx context.Context, revision string, tip bool) (*source.Checkout, error) {
	fetch := a.src.FetchRevision
	if tip {
		fetch = a.src.Fetch
	}
	co, err := fetch(ctx, revision)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errFetch, err)
	}
	if a.verify != nil {
		if _, err := a.verify.Verify(co); err != nil {
			return nil, fmt.Errorf("revision %s not applied: %w", gitrev.Short(revision), err)
		}
	}
	return co, nil
}

// inventories reads the bundles' inventories once, when first needed (the
// rollout gate of a fleet with waves, the held bundles).
type inventories struct {
	kube      client.Client
	namespace string
	current   map[string]*apply.Inventory
}

func (i *inventories) read(ctx context.Context) (map[string]*apply.Inventory, error) {
	if i.current == nil {
		inv, _, err := apply.ReadInventories(ctx, i.kube, i.namespace)
		if err != nil {
			return nil, fmt.Errorf("reading the inventories: %w", err)
		}
		i.current = inv
	}
	return i.current, nil
}

// bundles is what the pass syncs, in plan order: the tip's bundles the
// gate lets through, rendered at the tip, the held ones rendered at the
// revisions their inventories record, each bundle that violates the
// fleet's policies failed. kept are the held revisions.
func (a *Agent) bundles(ctx context.Context, co *source.Checkout, plan *fleet.Plan, g *gate, inv map[string]*apply.Inventory) ([]apply.Bundle, []string, error) {
	rendered, err := a.renderAt(ctx, co, plan, func(b string) bool { _, held := g.held[b]; return !held })
	if err != nil {
		return nil, nil, err
	}
	byName := map[string]apply.Bundle{}
	for _, b := range rendered {
		byName[b.Name] = b
	}
	var bundles []apply.Bundle
	for _, b := range plan.Bundles {
		if r, ok := byName[b.Name]; ok {
			bundles = append(bundles, r)
		} else {
			bundles = append(bundles, apply.Bundle{Name: b.Name}) // held: replaced below
		}
	}
	boundByDeadline(plan, bundles, inv, co.Revision)
	bundles, kept, err := a.heldBundles(ctx, plan.Cluster, g, bundles, inv)
	if err != nil {
		return nil, nil, err
	}
	if plan.Policies > 0 {
		if err := a.checkPolicies(ctx, co.Dir, plan.Cluster, bundles, g.held); err != nil {
			return nil, nil, err
		}
	}
	return bundles, kept, nil
}

// renderAt renders the plan's bundles that keep accepts, of the checkout,
// into what the apply engine syncs (tagged with the checkout's revision).
func (a *Agent) renderAt(ctx context.Context, co *source.Checkout, plan *fleet.Plan, keep func(bundle string) bool) ([]apply.Bundle, error) {
	some := &fleet.Plan{Cluster: plan.Cluster, Rollout: plan.Rollout}
	for _, b := range plan.Bundles {
		if keep(b.Name) {
			some.Bundles = append(some.Bundles, b)
		}
	}
	return a.renderer(co.Dir).ApplyBundles(ctx, some, co.Revision)
}

// recordBundles notes, for the status file and the drift watch, the kinds
// of the bundles' objects, the objects, and each bundle's digests.
func (a *Agent) recordBundles(p *Pass, plan *fleet.Plan, bundles []apply.Bundle) {
	p.kinds = kindsOf(bundles)
	a.kinds = p.kinds
	// A new slice: the drift watch may still read the last one.
	a.applied = nil
	p.digests = map[string]bundleDigests{}
	for _, b := range bundles {
		for _, o := range b.Objects {
			a.applied = append(a.applied, object.UnstructuredToObjMetadata(o))
		}
		d := bundleDigests{rendered: b.Digest, revision: b.Revision}
		if pb := plan.Bundle(b.Name); pb != nil && b.Revision == p.Revision {
			d.inputs = pb.InputsDigest
		}
		p.digests[b.Name] = d
	}
}

// unchanged reports whether syncing bundles would change nothing: each is
// applied in full as rendered now (its inventory's digest), and no other
// bundle is recorded (nothing to prune).
func unchanged(bundles []apply.Bundle, inv map[string]*apply.Inventory) bool {
	if len(bundles) != len(inv) {
		return false
	}
	for _, b := range bundles {
		i := inv[b.Name]
		if b.Err != nil || i == nil || i.Digest == "" || i.Digest != b.Digest {
			return false
		}
	}
	return true
}

// fleetRevisionOf is the revision of the bundles that follow the fleet's
// rollout after a pass: the tip unless they were held, then the revision
// they were kept at.
func fleetRevisionOf(p *Pass, plan *fleet.Plan, bundles []apply.Bundle) string {
	fleetGroup := func(name string) bool { pb := plan.Bundle(name); return pb == nil || rollout.GroupOf(pb) == "" }
	held := false
	for name := range p.gate.held {
		held = held || fleetGroup(name)
	}
	if !held {
		return p.Revision
	}
	for _, b := range bundles {
		if _, held := p.gate.held[b.Name]; held && fleetGroup(b.Name) && b.Revision != "" {
			return b.Revision
		}
	}
	return ""
}

// renderer renders bundles of the checkout in dir.
func (a *Agent) renderer(dir string) *planrender.Renderer {
	ropts := planrender.Options{
		Sources:         a.opts.Sources,
		Scope:           render.MapperScope(a.mgr.RESTMapper()),
		MaxManifestSize: a.opts.MaxManifestSize,
		Limits:          a.opts.Limits,
	}
	ropts.Renderers = a.eval.Renderers()
	return planrender.New(dir, ropts)
}

// tipPlan is the plan of the tip for the cluster, kept while neither
// changes: an agent waiting in a rollout polls without evaluating again.
func (a *Agent) tipPlan(ctx context.Context, dir string, c fleet.Cluster, revision, key string) (*fleet.Plan, error) {
	if a.cache.plan != nil && a.cache.planKey == revision+"|"+key {
		return a.cache.plan, nil
	}
	plan, err := a.eval.Plan(ctx, dir, c)
	if err != nil {
		return nil, err
	}
	a.cache.plan, a.cache.planKey = plan, revision+"|"+key
	return plan, nil
}

// checkPolicies checks the objects the cluster is about to have against
// the tip's policies (in a sandbox worker, as a plan), and fails each
// bundle of the tip that violates one, with the policy's message: the
// apply manager then applies and prunes nothing of it, and the status says
// why. Held bundles count for what the cluster has, but keep their own
// revision's verdict.
func (a *Agent) checkPolicies(ctx context.Context, dir string, c fleet.Cluster, bundles []apply.Bundle, held map[string]string) error {
	var rendered []fleet.RenderedBundle
	for _, b := range bundles {
		if b.Err == nil {
			rendered = append(rendered, fleet.RenderedBundle{Name: b.Name, Objects: b.Objects})
		}
	}
	violations, err := a.eval.PolicyViolations(ctx, dir, c, rendered)
	if err != nil {
		return err
	}
	for i, b := range bundles {
		if _, isHeld := held[b.Name]; isHeld || b.Err != nil || len(violations[b.Name]) == 0 {
			continue
		}
		bundles[i].Err = fmt.Errorf("violates the fleet's policies, so nothing of it is applied or pruned: %w", violations[b.Name])
	}
	return nil
}

// Close ends the agent's sandbox workers.
func (a *Agent) Close() {
	if a.pool != nil {
		a.pool.Close()
	}
	if a.stopNotify != nil {
		a.stopNotify()
	}
}

// retryBase is the first wait after a failed pass.
const retryBase = 5 * time.Second

// Run runs passes every Interval (jittered) until ctx ends, at once on
// Trigger, and at once when a managed object is changed by someone else
// (watched, not polled). After a failed pass it retries sooner, backing
// off up to the interval. It logs each pass that did something or failed.
// Ending ctx (SIGTERM) cancels the pass under way: an apply stops between
// objects, a readiness wait at once, and what was applied is recorded.
func (a *Agent) Run(ctx context.Context) error {
	if a.opts.Interval <= 0 {
		return errors.New("the poll interval must be positive")
	}
	failures := 0
	for {
		p := a.RunOnce(ctx)
		a.Log(p)
		// Watched from the first pass of Run on, even when the kinds were
		// applied before it (RunOnce) and Run's passes only wait.
		a.drift.watch(ctx, a.kinds, a.applied)
		wait := a.opts.Interval
		if p.Failed() {
			// Retry sooner, backing off: 5s, 10s, 20s … up to the interval.
			failures++
			wait = min(wait, retryBase<<min(failures-1, 16))
		} else {
			failures = 0
		}
		wait += time.Duration(rand.Int64N(int64(wait/10) + 1))
		wait = p.gate.waitFor(wait, time.Now()) // a bake ends: look again then
		select {
		case <-ctx.Done():
			return nil
		case <-a.trigger:
		case <-a.webhook:
			if !a.spreadWebhook(ctx) {
				return nil
			}
		case <-time.After(wait):
		}
	}
}

// spreadWebhook waits a random time under TriggerSpread before the pass a
// webhook asked for (a drift trigger meanwhile goes at once); false when
// ctx ended.
func (a *Agent) spreadWebhook(ctx context.Context) bool {
	d := spreadDelay(a.opts.TriggerSpread)
	if d == 0 {
		return true
	}
	a.log.V(1).Info("webhook: passing within the trigger spread", "in", d.Round(time.Millisecond).String())
	select {
	case <-ctx.Done():
		return false
	case <-a.trigger:
	case <-time.After(d):
	}
	return true
}

// spreadDelay is a uniformly random wait in [0, window).
func spreadDelay(window time.Duration) time.Duration {
	if window <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(window)))
}

// Log logs a pass: constant messages, key/value pairs, never a secret.
// Idle passes log at V(1).
func (a *Agent) Log(p *Pass) {
	if p.StatusErr != nil {
		a.log.Error(p.StatusErr, "status not published; retried next pass", "cluster", p.Cluster.Name)
	}
	if p.gate.waiting() && p.gate.status.Message != a.loggedWait {
		a.loggedWait = p.gate.status.Message
		a.log.Info("waiting in the rollout", "revision", gitrev.Short(p.Revision), "cluster", p.Cluster.Name, "wave", p.wave,
			"state", p.gate.status.State, "reason", p.gate.status.Message, "held", len(p.gate.held))
	}
	switch {
	case p.Err != nil:
		a.log.Error(p.Err, "pass failed", "revision", gitrev.Short(p.Revision), "cluster", p.Cluster.Name)
	case !p.Changed:
		a.log.V(1).Info("up to date", "revision", gitrev.Short(p.Revision))
	default:
		for _, b := range p.Result.Bundles {
			a.log.Info("bundle synced", "bundle", b.Name, "phase", b.Phase, "created", b.Counts.Created,
				"configured", b.Counts.Configured, "deleted", b.Counts.Deleted, "drifted", b.Counts.Drifted, "message", b.Message)
		}
		a.log.Info("pass done", "revision", gitrev.Short(p.Revision), "cluster", p.Cluster.Name, "full", p.Full,
			"duration", p.Result.Duration.String(), "requests", p.Result.Requests, "guard", p.Result.Guard)
	}
}

// kindsOf lists the kinds of the bundles' objects.
func kindsOf(bundles []apply.Bundle) []schema.GroupVersionKind {
	seen := map[schema.GroupVersionKind]bool{}
	var out []schema.GroupVersionKind
	for _, b := range bundles {
		for _, o := range b.Objects {
			if gvk := o.GroupVersionKind(); !seen[gvk] {
				seen[gvk] = true
				out = append(out, gvk)
			}
		}
	}
	return out
}
