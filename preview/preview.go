// Package preview compares the fleet at two revisions for every cluster
// the fleet knows — the inventories at both and every cluster that
// reported on a status branch, with its real labels and facts — and says
// which clusters a change touches and how: bundles added, removed,
// changed (objects added, removed, changed, with field-level diffs, Secret
// values masked) or newly failing, and moves between rollout waves. It is
// `flotilla preview`, the pull-request view of a fleet change.
//
// A bundle whose inputs digest is the same at both revisions, and that
// reads no file that changed (its chart or manifests folder; for a
// kustomization, its folder or any file outside the fleet's charts and
// manifests that is not CUE), is unchanged without rendering; every
// distinct input is rendered once for the whole fleet (as `render --all`).
package preview

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/internal/trailer"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/snapshot"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
)

// Options say what to compare.
type Options struct {
	// Dir is the fleet's folder (the command's DIR), inside a Git
	// repository; Path the folder of fleet.cue under it.
	Dir  string
	Path string
	// Base is the revision compared against; Head the revision previewed,
	// empty for the work tree as it is. Both are read from the local
	// repository without checking anything out.
	Base, Head string
	// Status is where the status branches are read (no URL: the local
	// repository's own status branches, when it has any).
	Status report.Branches
	// Clusters and Bundles narrow the preview to those names.
	Clusters, Bundles []string
	// Render configures the renderers (limits, sandbox workers).
	Render planrender.Options
	// Progress, when set, hears what is being done.
	Progress func(string)
}

// Change is what a change does to a bundle for a cluster (added,
// removed, changed, unchanged, failed), or to one of its objects (added,
// removed, changed).
type Change string

// Changes.
const (
	Added     Change = "added"
	Removed   Change = "removed"
	Changed   Change = "changed"
	Unchanged Change = "unchanged"
	Failed    Change = "failed"
)

func (c Change) String() string { return string(c) }

// Report is a preview's result.
type Report struct {
	// Base and Head are the commits compared ("" head: the work tree).
	Base string `json:"base"`
	Head string `json:"head"`
	// Clusters are every cluster previewed, changed or not, by name.
	Clusters []Cluster `json:"clusters"`
	// Waves are the rollout's waves at head, in order (none without).
	Waves []string `json:"waves,omitempty"`
	// Warnings are what was left out (unreadable status branches …).
	Warnings []string `json:"warnings,omitempty"`
	// Renders counts the distinct renders done, at base and at head.
	Renders int `json:"renders"`
	// Invariants are the fleet's invariants the change breaks; they count
	// as new failures.
	Invariants []InvariantBreak `json:"invariants,omitempty"`
}

// Cluster is one cluster's part of the preview.
type Cluster struct {
	Name string `json:"name"`
	// Region is the cluster's region; InWave its rollout wave at head
	// (at base when it does not evaluate at head).
	Region string `json:"region,omitempty"`
	InWave string `json:"inWave,omitempty"`
	// Known says where the cluster comes from: inventory, status, or both.
	Known   report.Origin `json:"known"`
	Changed bool          `json:"changed"`
	// Wave is set when the change moves the cluster to another rollout
	// wave.
	Wave *WaveMove `json:"wave,omitempty"`
	// Error is why the fleet does not evaluate for the cluster at head
	// (positioned); NewError says that it did at base.
	Error    string   `json:"error,omitempty"`
	NewError bool     `json:"newError,omitempty"`
	Bundles  []Bundle `json:"bundles"`
	// Violations are the fleet's policies the cluster's objects break at
	// head and did not at base (positioned); they count as new failures.
	Violations []string `json:"violations,omitempty"`
}

// InvariantBreak is an invariant the change breaks: it holds at base and
// not at head, for a bundle and a group (positioned).
type InvariantBreak struct {
	Invariant string   `json:"invariant"`
	Message   string   `json:"message"`
	Clusters  []string `json:"clusters,omitempty"`
}

// WaveMove is a cluster's move between rollout waves.
type WaveMove struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Bundle is one bundle's change for a cluster.
type Bundle struct {
	Name string `json:"name"`
	// Change is added, removed, changed, unchanged or failed.
	Change Change `json:"change"`
	// Error is why it fails at head (positioned for fleet errors);
	// NewError says that it did not fail at base.
	Error    string   `json:"error,omitempty"`
	NewError bool     `json:"newError,omitempty"`
	Objects  []Object `json:"objects,omitempty"`
}

// Object is one object's change in a bundle.
type Object struct {
	// Object is "group/version, Kind=…, namespace/name" as render names it.
	Object string `json:"object"`
	Change Change `json:"change"`
	// Fields are a changed object's changed fields; Secret values masked.
	Fields []Field `json:"fields,omitempty"`
}

// Field is one changed field (a JSON patch operation).
type Field struct {
	Op   string `json:"op"`
	Path string `json:"path"`
	Old  any    `json:"old,omitempty"`
	New  any    `json:"new,omitempty"`
}

// ChangedClusters counts the clusters that change.
func (r *Report) ChangedClusters() int {
	n := 0
	for _, c := range r.Clusters {
		if c.Changed {
			n++
		}
	}
	return n
}

// NewFailures lists what fails at head and did not at base, as
// "cluster/bundle" (or "cluster" for a fleet that no longer evaluates).
func (r *Report) NewFailures() []string {
	var out []string
	for _, b := range r.Invariants {
		out = append(out, "invariant "+b.Invariant)
	}
	for _, c := range r.Clusters {
		if c.NewError || len(c.Violations) > 0 {
			out = append(out, c.Name)
		}
		for _, b := range c.Bundles {
			if b.NewError {
				out = append(out, c.Name+"/"+b.Name)
			}
		}
	}
	return out
}

// planAndCheck plans both sides, compares each cluster, and checks the
// invariants over every cluster's plans — not when the preview is
// narrowed to some clusters: they hold over all of them. It returns the
// invariant states of base and head (nil when not checked).
func planAndCheck(ctx context.Context, sides []*side, clusters []fleet.Cluster, narrowed bool, cmp *comparison) ([2]*fleet.InvariantState, error) {
	invariants := [2]*fleet.InvariantState{}
	if !narrowed {
		invariants = [2]*fleet.InvariantState{sides[0].Fleet.NewInvariantState(), sides[1].Fleet.NewInvariantState()}
	} else if len(sides[1].Fleet.Invariants()) > 0 {
		cmp.rep.Warnings = append(cmp.rep.Warnings, "the fleet's invariants are not checked: --cluster narrows the preview, and they hold over every cluster")
	}
	err := planBoth(ctx, sides, clusters, func(c fleet.Cluster, base, head planned) error {
		invariants[0].Add(base.p)
		invariants[1].Add(head.p)
		return cmp.add(c, base, head)
	})
	return invariants, err
}

// promotions checks the invariants' promotedFrom rules: a value the change
// brings must have run Ready at base where the rule says, as the status
// branches report it.
func promotions(states [2]*fleet.InvariantState, statuses map[string]*report.Status, base string) []InvariantBreak {
	readyAtBase := func(cluster, bundle string) bool {
		st := statuses[cluster]
		if st == nil {
			return false
		}
		i := slices.IndexFunc(st.Bundles, func(b report.BundleStatus) bool { return b.Name == bundle })
		return i >= 0 && st.Bundles[i].Revision == base && st.Bundles[i].Phase == apply.PhaseReady
	}
	var out []InvariantBreak
	for _, b := range fleet.PromotionBreaks(states[0], states[1], readyAtBase) {
		out = append(out, InvariantBreak{Invariant: b.Invariant, Message: b.Diagnostic.Error(), Clusters: b.Diagnostic.Clusters})
	}
	return out
}

// newBreaks are the invariant breaks at head that are not at base.
func newBreaks(states [2]*fleet.InvariantState) []InvariantBreak {
	before := map[string]bool{}
	for _, b := range states[0].Breaks() {
		before[b.Key] = true
	}
	var out []InvariantBreak
	for _, b := range states[1].Breaks() {
		if !before[b.Key] {
			out = append(out, InvariantBreak{Invariant: b.Invariant, Message: b.Diagnostic.Error(), Clusters: b.Diagnostic.Clusters})
		}
	}
	return out
}

// side is the fleet at one revision.
type side struct {
	name string // "base" or "head"
	// Snapshot is the fleet folder at that revision (Dir) and its Fleet.
	*snapshot.Snapshot
	plans map[string]*fleet.Plan
	errs  map[string]error
	r     *planrender.Renderer
}

// Run previews the change.
func Run(ctx context.Context, opts Options) (*Report, error) {
	say := opts.Progress
	if say == nil {
		say = func(string) {}
	}
	repo, err := snapshot.Open(opts.Dir)
	if err != nil {
		return nil, err
	}
	defer repo.Close()
	rep := &Report{}

	// The fleet at both revisions: written out from Git (head: the work
	// tree as it is, unless a revision is named).
	sides := []*side{{name: "base"}, {name: "head"}}
	for i, ref := range []string{opts.Base, opts.Head} {
		s := sides[i]
		snap, err := repo.At(ref)
		if err != nil {
			return nil, err
		}
		say(fmt.Sprintf("loading the fleet at %s", s.name))
		if err := snap.Load(fleet.LoadOptions{Path: opts.Path}); err != nil {
			if s.name == "base" {
				return nil, fmt.Errorf("the fleet at base (%s) does not load: %w", opts.Base, err)
			}
			return nil, fmt.Errorf("the fleet at head does not load: %w", err)
		}
		s.Snapshot = snap
		s.r = planrender.New(snap.Dir, opts.Render)
	}
	rep.Base, rep.Head = sides[0].Revision(), sides[1].Revision()

	// The clusters: both inventories and the status branches.
	k, err := repo.Known(ctx, opts.Status, sides[0].Snapshot, sides[1].Snapshot)
	if err != nil {
		return nil, err
	}
	clusters, err := k.Narrow(opts.Clusters)
	if err != nil {
		return nil, err
	}
	known := k.Where
	rep.Warnings = k.Warnings
	// Both sides plan at once, one planner each (no copy of either fleet
	// is compiled), and each cluster is compared as soon as both have
	// planned it: what differs in its inputs, or reads a file that
	// changed, is rendered (once per distinct input, at each side). Plans
	// are let go once compared, unless the policies need them.
	changed, err := changedFiles(sides[0].Snapshot, sides[1].Snapshot)
	if err != nil {
		return nil, err
	}
	say(fmt.Sprintf("planning and comparing %s at base and head", english.Count(len(clusters), "cluster")))
	// The invariants' rules over rendered objects need every cluster
	// rendered, as the policies do.
	renderedRules := len(opts.Clusters) == 0 && sides[1].Fleet.RenderedInvariants() > 0
	cmp := &comparison{rep: rep, known: known, sides: sides, only: opts.Bundles, files: changesOf(changed),
		keepPlans: len(sides[1].Fleet.Policies()) > 0 || renderedRules}
	for _, s := range sides {
		s.plans, s.errs = map[string]*fleet.Plan{}, map[string]error{}
	}
	states, err := planAndCheck(ctx, sides, clusters, len(opts.Clusters) > 0, cmp)
	if err != nil {
		return nil, err
	}
	files, jobs := cmp.finish()
	say(fmt.Sprintf("rendering %s whose inputs changed", english.Count(len(jobs), "bundle")))
	if err := renderJobs(ctx, jobs); err != nil {
		return nil, err
	}
	for _, j := range jobs {
		j.finish()
	}
	if len(sides[1].Fleet.Policies()) > 0 || renderedRules {
		if err := checkObjects(ctx, rep, clusters, sides, files, states, renderedRules, say); err != nil {
			return nil, err
		}
	}
	rep.markChanged()
	rep.Invariants = newBreaks(states)
	rep.Invariants = append(rep.Invariants, rep.blastRadius(states[1], commitMessage(repo.Git, rep.Head))...)
	rep.Invariants = append(rep.Invariants, promotions(states, k.Statuses, rep.Base)...)
	rep.Renders = sides[0].r.Distinct() + sides[1].r.Distinct()
	return rep, nil
}

// blastRadius checks the invariants' `changes` bounds against the clusters
// the change changes; the head commit's Flotilla-Override trailers let it
// past the invariants they name.
func (rep *Report) blastRadius(head *fleet.InvariantState, message string) []InvariantBreak {
	changed := map[string]bool{}
	for _, c := range rep.Clusters {
		changed[c.Name] = c.Changed
	}
	overrides := trailer.Values(message, fleet.OverrideTrailer)
	var out []InvariantBreak
	for _, b := range head.ChangeBreaks(func(c string) bool { return changed[c] }, func(inv string) bool { return slices.Contains(overrides, inv) }) {
		out = append(out, InvariantBreak{Invariant: b.Invariant, Message: b.Diagnostic.Error(), Clusters: b.Diagnostic.Clusters})
	}
	return out
}

// commitMessage is a commit's message ("" for the work tree or a commit
// that cannot be read).
func commitMessage(repo *git.Repository, revision string) string {
	if revision == "" || repo == nil {
		return ""
	}
	c, err := repo.CommitObject(plumbing.NewHash(revision))
	if err != nil {
		return ""
	}
	return c.Message
}

// markChanged marks the clusters the change changes: a bundle changed or
// newly failing (a failure at both revisions is shown, but is no change),
// a move between waves, a new evaluation failure, a new policy violation.
func (rep *Report) markChanged() {
	for i := range rep.Clusters {
		c := &rep.Clusters[i]
		for _, b := range c.Bundles {
			if b.Change != Unchanged && (b.Change != Failed || b.NewError) {
				c.Changed = true
			}
		}
		if c.Wave != nil || c.NewError || len(c.Violations) > 0 {
			c.Changed = true
		}
	}
}

// job is a bundle whose inputs differ between base and head (or that is
// only at one of them): rendered at the sides it is at, then compared.
type job struct {
	cluster    fleet.Cluster
	out        *Bundle
	base, head *fleet.Bundle
	sides      []*side
	res        [2]*render.Result
	errs       [2]error
}

// planBoth plans the clusters at both sides at once, one goroutine each,
// and hands use each cluster's plans (or errors) in order as soon as both
// sides have made them.
func planBoth(ctx context.Context, sides []*side, clusters []fleet.Cluster, use func(c fleet.Cluster, base, head planned) error) error {
	g, gctx := errgroup.WithContext(ctx)
	var made [2]chan planned
	for k, s := range sides {
		made[k] = make(chan planned, 16)
		g.Go(func() error {
			defer close(made[k])
			return s.Fleet.EachPlanOn(gctx, 1, clusters, nil, func(_ int, p *fleet.Plan, err error) error {
				if p != nil {
					p.DropReasons() // the report does not show them
				}
				select {
				case made[k] <- planned{p, err}:
					return nil
				case <-gctx.Done():
					return context.Cause(gctx)
				}
			})
		})
	}
	g.Go(func() error {
		for _, c := range clusters {
			b, ok := <-made[0]
			h, ok2 := <-made[1]
			if !ok || !ok2 {
				return nil // a side stopped: its error is the group's
			}
			if err := use(c, b, h); err != nil {
				return err
			}
		}
		return nil
	})
	return g.Wait()
}

// planned is one cluster's plan, or why it has none, at one side.
type planned struct {
	p   *fleet.Plan
	err error
}

// comparison fills rep with every cluster and its bundles as both sides'
// plans come, and collects the bundles to render. Whether a kustomize
// bundle whose inputs did not change reads a changed file that belongs to
// no chart or manifests folder is known only once every bundle was seen:
// such bundles wait in pending until finish.
type comparison struct {
	rep       *Report
	known     map[string]report.Origin
	sides     []*side
	only      []string
	files     *sourceChanges
	keepPlans bool // the policies need the plans afterwards
	jobs      []*job
	pending   []*job
}

// add compares one cluster's plans.
func (cmp *comparison) add(c fleet.Cluster, base, head planned) error {
	if cmp.keepPlans {
		for k, pl := range []planned{base, head} {
			cmp.sides[k].plans[c.Name], cmp.sides[k].errs[c.Name] = pl.p, pl.err
		}
	}
	for _, p := range []*fleet.Plan{base.p, head.p} {
		if p != nil {
			for _, b := range p.Bundles {
				cmp.files.own(b)
			}
		}
	}
	rc := Cluster{Name: c.Name, Region: c.Region, Known: cmp.known[c.Name], Bundles: []Bundle{}}
	bp, bErr, hp, hErr := base.p, base.err, head.p, head.err
	for _, p := range []*fleet.Plan{bp, hp} {
		if p != nil && p.Rollout != nil {
			rc.InWave = p.Rollout.Wave
		}
	}
	if hp != nil && hp.Rollout != nil && cmp.rep.Waves == nil {
		cmp.rep.Waves = hp.Rollout.Waves
	}
	if hErr != nil {
		rc.Error, rc.NewError = hErr.Error(), bErr == nil
		cmp.rep.Clusters = append(cmp.rep.Clusters, rc)
		return nil
	}
	if bp != nil && bp.Rollout != nil && hp.Rollout != nil && bp.Rollout.Wave != hp.Rollout.Wave {
		rc.Wave = &WaveMove{From: bp.Rollout.Wave, To: hp.Rollout.Wave}
	}
	bundles := map[string][2]*fleet.Bundle{}
	if bp != nil {
		for _, b := range bp.Bundles {
			bundles[b.Name] = [2]*fleet.Bundle{b, nil}
		}
	}
	for _, b := range hp.Bundles {
		pair := bundles[b.Name]
		pair[1] = b
		bundles[b.Name] = pair
	}
	rc.Bundles = make([]Bundle, 0, len(bundles))
	for _, name := range slices.Sorted(maps.Keys(bundles)) {
		if len(cmp.only) > 0 && !slices.Contains(cmp.only, name) {
			continue
		}
		pair := bundles[name]
		rc.Bundles = append(rc.Bundles, Bundle{Name: name})
		cmp.bundle(c, &rc.Bundles[len(rc.Bundles)-1], pair[0], pair[1])
	}
	// Bundle pointers into rc.Bundles stay valid: each cluster's slice is
	// made once, at its final size, before its jobs point into it.
	cmp.rep.Clusters = append(cmp.rep.Clusters, rc)
	return nil
}

// bundle compares one bundle of a cluster at base (b) and head (h).
func (cmp *comparison) bundle(c fleet.Cluster, out *Bundle, b, h *fleet.Bundle) {
	if h != nil && h.Failed() {
		out.Change, out.Error, out.NewError = Failed, h.Errors.Error(), b != nil && !b.Failed()
		return
	}
	j := &job{cluster: c, out: out, base: b, head: h, sides: cmp.sides}
	if b != nil && h != nil && !b.Failed() && b.InputsDigest == h.InputsDigest {
		out.Change = Unchanged
		switch affects, known := cmp.files.affectsYet(h); {
		case !known:
			cmp.pending = append(cmp.pending, j)
			return
		case !affects:
			return
		}
	}
	if b != nil && b.Failed() {
		j.base = nil // nothing of it was applied: everything is new
	}
	cmp.jobs = append(cmp.jobs, j)
}

// finish settles which files are loose, and returns the changes and the
// bundles to render (those pending that read a changed file among them).
func (cmp *comparison) finish() (*sourceChanges, []*job) {
	cmp.files.settle()
	for _, j := range cmp.pending {
		if cmp.files.affects(j.head) {
			cmp.jobs = append(cmp.jobs, j)
		}
	}
	return cmp.files, cmp.jobs
}

// renderJobs renders each job's sides on all CPUs.
func renderJobs(ctx context.Context, jobs []*job) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for _, j := range jobs {
		for i, b := range []*fleet.Bundle{j.base, j.head} {
			if b == nil {
				continue
			}
			g.Go(func() error {
				j.res[i], j.errs[i] = j.sides[i].r.RenderBundle(ctx, j.cluster, b)
				if ctx.Err() != nil {
					return context.Cause(ctx)
				}
				return nil
			})
		}
	}
	return g.Wait()
}

// finish classifies a rendered job.
func (j *job) finish() {
	out := j.out
	switch {
	case j.head != nil && j.errs[1] != nil:
		out.Change, out.Error = Failed, j.errs[1].Error()
		out.NewError = j.base != nil && j.errs[0] == nil
		return
	case j.head == nil:
		out.Change = Removed
		if j.errs[0] == nil && j.res[0] != nil {
			out.Objects = objectsAs(j.res[0].Objects, Removed)
		}
		return
	case j.base == nil || j.errs[0] != nil:
		out.Change = Added
		if j.base != nil {
			out.Change = Changed // it failed at base: all of it is new
		}
		out.Objects = objectsAs(j.res[1].Objects, Added)
		return
	}
	out.Objects = diffObjects(j.res[0].Objects, j.res[1].Objects)
	out.Change = Unchanged
	if len(out.Objects) > 0 {
		out.Change = Changed
	}
}

func objectsAs(objs []*unstructured.Unstructured, change Change) []Object {
	out := make([]Object, len(objs))
	for i, o := range objs {
		out[i] = Object{Object: render.ObjectKey(o), Change: change}
	}
	return out
}

// ErrNewFailure is wrapped by the command's error when something fails at
// head that did not at base.
var ErrNewFailure = errors.New("the change makes the fleet fail")
