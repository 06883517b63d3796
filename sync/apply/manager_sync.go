package apply

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/fluxcd/cli-utils/pkg/object"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Bundle is one bundle to sync: its rendered objects, or why there are
// none (then nothing of it is applied or pruned), and how to apply it.
type Bundle struct {
	Name      string
	Namespace string
	// Objects are the rendered objects; they are not modified.
	Objects []*unstructured.Unstructured
	// Digest identifies Objects (the render digest).
	Digest string
	// Revision is the fleet revision the objects come from.
	Revision string
	// RolledBack is the revision the bundle went back from (the rollout's
	// onFailure: rollback), recorded in its inventory.
	RolledBack string
	DependsOn  []string
	// ApplyOptions are the bundle's, as the fleet plans them: prune, wait
	// and its timeout (DefaultTimeout when zero), the ServiceAccount to
	// impersonate, the drift policy (DriftCorrect when empty), force, and
	// adopt (take over objects another GitOps controller manages, see
	// ForeignOwner; without it the bundle fails naming them).
	spec.ApplyOptions
	// Incremental applies only the objects whose rendered form changed
	// since the inventory recorded them (see changedSince), dry-runs those
	// Unmoved cannot vouch for, and waits only for what it applied. Set it
	// only after a full pass of the bundle that ended Ready, while nothing
	// can have moved the live objects unseen since. A sync that applies a
	// CustomResourceDefinition is full for every bundle.
	Incremental bool
	// Unmoved reports whether an object's live copy is as Flotilla last
	// applied it (the agent's drift watch still has it, and nobody else
	// changed it since). Nil: every object is taken as unmoved.
	Unmoved func(Entry) bool
	// Err is set when the bundle could not be evaluated or rendered.
	Err error
	// Sensitive are values decrypted from SOPS files that Objects carry:
	// the bundle's messages (an API server's error quoting a field) are
	// redacted of them before they reach a log or the status branch.
	Sensitive []string
}

// DefaultTimeout bounds a bundle's readiness wait when it gives none (the
// fleet schema's default).
const DefaultTimeout = 5 * time.Minute

// Sync makes the cluster match bundles, the cluster's whole plan:
//
//  1. read every inventory;
//  2. decide the deletions (objects that left a bundle, bundles that left
//     the plan) and stop all of them when the mass-deletion guard trips;
//  3. sync bundles in dependsOn order, independent ones concurrently: a
//     bundle whose dependency is not Ready is skipped;
//  4. delete the bundles that left the plan, unless they asked not to be
//     pruned.
//
// Bundles carrying Err keep their last applied state: nothing is applied
// or pruned for them, and their inventory stays. The caller must not call
// Sync at all when the fleet failed to evaluate: an empty plan would delete
// everything (the guard would stop most of it, but not small fleets).
func (m *Manager) Sync(ctx context.Context, bundles []Bundle) (*Result, error) {
	start := time.Now()
	before := m.requests.Load()

	// Step 1: what the cluster has. A bundle whose inventory cannot be
	// read fails alone: nothing of it is applied, pruned or deleted.
	current, broken, err := m.inv.list(ctx)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	if len(broken) > 0 {
		bundles = slices.Clone(bundles)
		for i, b := range bundles {
			if err := broken[b.Name]; err != nil && b.Err == nil {
				bundles[i].Err = err
			}
		}
		for _, name := range slices.Sorted(maps.Keys(broken)) {
			if !slices.ContainsFunc(bundles, func(b Bundle) bool { return b.Name == name }) {
				res.Bundles = append(res.Bundles, BundleResult{Name: name, Phase: PhaseFailed,
					Message: "left the plan, but is not deleted: its inventory cannot be read", Errors: []string{broken[name].Error()}})
			}
		}
	}

	if definitionsChanged(bundles, current) {
		bundles = slices.Clone(bundles)
		for i := range bundles {
			bundles[i].Incremental = false
		}
	}

	// Step 2: the deletions this sync would make, and the guard.
	plan := planDeletions(bundles, current, !m.opts.KeepUnlisted)
	if reason := m.guard(plan, current); reason != "" {
		res.Guard = reason
		plan = deletions{}
	}

	// Step 3: the bundles, in dependency order.
	res.Bundles = append(m.syncBundles(ctx, bundles, current, plan), res.Bundles...)

	// Step 4: bundles that left the plan.
	for _, name := range slices.Sorted(maps.Keys(plan.bundles)) {
		res.Bundles = append(res.Bundles, m.deleteBundle(ctx, current[name], plan.inUse))
	}

	redact(res, bundles)
	res.Duration = time.Since(start)
	res.Requests = m.requests.Load() - before
	return res, nil
}

// syncBundles runs every bundle once its dependencies are done, at most
// Concurrency at a time.
func (m *Manager) syncBundles(ctx context.Context, bundles []Bundle, current map[string]*Inventory, plan deletions) []BundleResult {
	results := make([]BundleResult, len(bundles))
	done := make(map[string]chan struct{}, len(bundles))
	index := make(map[string]int, len(bundles))
	for i, b := range bundles {
		done[b.Name] = make(chan struct{})
		index[b.Name] = i
	}
	sem := make(chan struct{}, max(1, m.opts.Concurrency))
	var wg sync.WaitGroup
	for i, b := range bundles {
		wg.Go(func() {
			defer close(done[b.Name])
			if reason := waitForDependencies(ctx, b, done, index, results); reason != "" {
				results[i] = BundleResult{Name: b.Name, Phase: PhaseSkipped, Message: reason}
				return
			}
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] = m.syncBundle(ctx, b, current[b.Name], plan.stale[b.Name], plan.inUse)
		})
	}
	wg.Wait()
	return results
}

// waitForDependencies waits for the bundle's dependencies to finish and
// says why the bundle must be skipped, if it must.
func waitForDependencies(ctx context.Context, b Bundle, done map[string]chan struct{}, index map[string]int, results []BundleResult) string {
	var notReady []string
	for _, dep := range b.DependsOn {
		ch, ok := done[dep]
		if !ok {
			notReady = append(notReady, dep+" (not in this sync)")
			continue
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return "cancelled: " + ctx.Err().Error()
		}
		if r := results[index[dep]]; r.Phase != PhaseReady {
			notReady = append(notReady, fmt.Sprintf("%s (%s)", dep, r.Phase))
		}
	}
	if len(notReady) > 0 {
		return "dependencies not ready: " + strings.Join(notReady, ", ")
	}
	return ""
}

// syncBundle applies one bundle, waits for it, prunes what left it and
// records its inventory.
func (m *Manager) syncBundle(ctx context.Context, b Bundle, inv *Inventory, stale []Entry, inUse map[string]bool) BundleResult {
	start := time.Now()
	var requests atomic.Int64
	ctx = withCounter(ctx, &requests)
	res := BundleResult{Name: b.Name}
	defer func() {
		res.Duration = time.Since(start)
		res.Requests = requests.Load()
	}()

	if b.Timeout.Duration <= 0 {
		b.Timeout.Duration = DefaultTimeout
	}
	if b.Err != nil {
		res.Phase, res.Message = PhaseFailed, "not applied, last applied state kept: "+b.Err.Error()
		res.Errors = []string{b.Err.Error()}
		return res
	}
	applied, waitOn, err := m.applyBundle(ctx, b, inv, &res)
	if err != nil {
		res.Phase = PhaseFailed
		res.Errors = append(res.Errors, err.Error())
		res.Message = "apply failed: " + err.Error()
		// What was applied before the failure is recorded, so that it can
		// be pruned later; nothing is pruned now. The digest is not: it says
		// what was applied in full, and the next sync must apply again.
		if len(applied) > 0 && !m.opts.DryRun {
			failed := mergeInventory(b, inv, applied, stale)
			failed.Digest = ""
			if err := m.record(ctx, failed); err != nil {
				res.Errors = append(res.Errors, fmt.Sprintf("recording what was applied: %v", err))
			}
		}
		return res
	}

	res.Phase = PhaseReady
	if res.Counts.Drifted > 0 && b.DriftPolicy == spec.DriftReport {
		res.Phase, res.Message = PhaseDrifted, fmt.Sprintf("%s changed outside Git (driftPolicy: report)", english.Count(res.Counts.Drifted, "object"))
	}
	if b.Wait && !m.opts.DryRun {
		if waitOn == nil {
			waitOn = applied // a full sync waits for every object
		}
		if msg := m.wait(ctx, b, waitOn); msg != "" {
			res.Phase, res.Message = PhaseProgressing, msg
			res.NotReady = ctx.Err() == nil
		}
	}
	if su := res.SelfUpdate; su != nil && res.Phase == PhaseReady {
		res.Phase, res.Message = PhaseProgressing, "the agent updates itself to "+su.Image+": the new agent reports next"
	}

	kept, err := m.prune(ctx, b, stale, inUse, &res)
	if err != nil {
		res.Errors = append(res.Errors, err.Error())
	}
	if !m.opts.DryRun { // shards that would not change are not written
		if err := m.record(ctx, mergeInventory(b, inv, applied, kept)); err != nil {
			res.Phase = PhaseFailed
			res.Errors = append(res.Errors, err.Error())
			res.Message = err.Error()
		}
	}
	return res
}

// recordTimeout bounds writing an inventory after the sync's context ended.
const recordTimeout = 30 * time.Second

// record writes a bundle's inventory even when ctx has ended (a newer
// revision or shutdown cancelled the wait): what was applied must be
// recorded, or it could never be pruned.
func (m *Manager) record(ctx context.Context, inv *Inventory) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	return m.inv.write(ctx, inv, m.opts.FieldManager)
}

// mergeInventory is the bundle's new inventory: what was applied now, plus
// stale entries that were not deleted (kept for a later sync to prune).
// Whether Flotilla created an object is remembered from the old inventory.
func mergeInventory(b Bundle, old *Inventory, applied, kept []Entry) *Inventory {
	inv := &Inventory{Bundle: b.Name, Digest: b.Digest, Revision: b.Revision, RolledBack: b.RolledBack, Prune: b.Prune,
		Namespace: b.Namespace, ServiceAccountName: b.ServiceAccountName}
	var was map[object.ObjMetadata]Entry
	if old != nil {
		was = old.index()
		inv.stored = old.stored
		inv.Previous = old.Previous
		if old.Revision != b.Revision {
			inv.Previous = old.Revision
		}
	}
	for _, e := range applied {
		if prev, ok := was[e.ID]; ok && prev.Created {
			e.Created = true
		}
		inv.Entries = append(inv.Entries, e)
	}
	inv.Entries = append(inv.Entries, kept...)
	return inv
}

// redact removes from every bundle's messages the values decrypted for it
// (Bundle.Sensitive).
func redact(res *Result, bundles []Bundle) {
	for _, b := range bundles {
		if len(b.Sensitive) == 0 {
			continue
		}
		for i := range res.Bundles {
			r := &res.Bundles[i]
			if r.Name != b.Name {
				continue
			}
			r.Message = errtext.Redact(r.Message, b.Sensitive)
			for j, e := range r.Errors {
				r.Errors[j] = errtext.Redact(e, b.Sensitive)
			}
		}
	}
}
