package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	ssaerrors "github.com/fluxcd/pkg/ssa/errors"
	"github.com/fluxcd/pkg/ssa/jsondiff"
	ssautils "github.com/fluxcd/pkg/ssa/utils"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// definitionsWait bounds the wait for CRDs and Namespaces to be established
// before the objects that need them are applied.
const definitionsWait = time.Minute

// applyBundle applies a bundle's objects and returns the inventory entries
// of what it applied (what the cluster now has of the bundle), and those to
// wait for.
//
// When the bundle's digest is the one recorded, nothing changed in Git:
// each object is dry-run applied first to find what was changed by hand
// (drift); drifted objects are applied again (driftPolicy correct) or left
// alone and reported (report). Otherwise everything is applied, staged:
// CRDs, Namespaces and ClusterRoles first, established, then the rest. An
// incremental sync (Bundle.Incremental) does the same for only part of
// the objects: see selectObjects.
func (m *Manager) applyBundle(ctx context.Context, b Bundle, inv *Inventory, res *BundleResult) (entries, wait []Entry, err error) {
	rm, err := m.managerFor(b.Namespace, b.ServiceAccountName)
	if err != nil {
		return nil, nil, err
	}
	objects := make([]*unstructured.Unstructured, len(b.Objects))
	for i, o := range b.Objects {
		objects[i] = o.DeepCopy()
	}
	if !b.Adopt {
		primed := newPrimedClient(rm.Client())
		if err := m.refuseForeign(ctx, primed, objects, inv); err != nil {
			return nil, nil, err
		}
		rm = m.ssaManager(primed) // its client answers the check's reads
	}
	applyOpts := ssa.DefaultApplyOptions()
	applyOpts.Force = b.Force
	applyOpts.ExclusionSelector = map[string]string{spec.ReconcileAnnotation: "disabled"}
	applyOpts.IfNotPresentSelector = map[string]string{spec.SSAAnnotation: "IfNotPresent"}
	applyOpts.DriftIgnoreRules = ignoreRules(objects)

	digests := objectDigests(objects)
	sel := m.selectObjects(b, inv, objects, digests)
	res.Counts.Unchanged += len(sel.kept)
	res.Incremental = sel.incremental
	if len(sel.check) > 0 {
		diffs, bad, err := m.dryRun(ctx, rm, sel.check)
		if err != nil {
			return nil, nil, err
		}
		for _, r := range bad {
			if m.opts.DryRun {
				return nil, nil, r.err
			}
			// Applying it says why it cannot be, or recreates it (force).
			sel.apply = append(sel.apply, r.object)
		}
		sel.apply = append(sel.apply, m.drifted(b, diffs, res)...)
		markChecked(sel.vouched, diffs)
		res.InSync = inSyncVersions(diffs)
		if m.opts.DryRun {
			for _, a := range res.Objects {
				countAction(&res.Counts, a.Action)
			}
			return entriesFor(objects, nil), nil, nil
		}
	}

	if !m.opts.DryRun {
		if sel.apply, res.SelfUpdate, err = m.holdSelf(ctx, b, rm, sel.apply, applyOpts); err != nil {
			return nil, nil, err
		}
	}
	cs, err := m.applyStaged(ctx, rm, sel.apply, applyOpts, b.Timeout.Duration)
	for _, e := range cs.Entries {
		if e.Action == ssa.UnchangedAction {
			res.Counts.Unchanged++
			continue
		}
		countAction(&res.Counts, Action(e.Action))
		if !hasAction(res.Objects, e.Subject) {
			res.Objects = append(res.Objects, ObjectAction{Object: e.Subject, Action: Action(e.Action)})
		}
	}
	// Every rendered object has an entry; a full sync waits for them all,
	// an incremental one for what it applied.
	entries, wait = entriesFor(objects, cs), nil
	if sel.incremental {
		wait = entriesFor(sel.apply, cs)
	}
	if err != nil {
		cs = nil // what failed keeps no digest: the next pass applies it
	}
	return withDigests(entries, cs, digests, sel.vouched), wait, err
}

// selection is what a bundle's sync does with each of its objects.
type selection struct {
	incremental bool
	// apply are applied; check are dry-run first, and applied when missing
	// or drifted (unless the bundle only reports drift); kept cost no
	// request, their entries stay as the inventory has them.
	apply, check []*unstructured.Unstructured
	kept         []Entry
	// vouched are the objects known to be as rendered without being
	// applied: kept, or found so by the dry run.
	vouched map[object.ObjMetadata]bool
}

// selectObjects decides what the sync does with each object. A full sync
// dry-runs every object when the bundle's digest is the one recorded (Git
// did not change it: only drift can have), and applies every object
// otherwise. An incremental sync applies the objects whose rendered form
// changed since the inventory recorded them (changedSince), dry-runs the
// unchanged ones whose live copy the caller cannot vouch for
// (Bundle.Unmoved), exactly as a full sync would, and keeps the rest.
func (m *Manager) selectObjects(b Bundle, inv *Inventory, objects []*unstructured.Unstructured, digests map[object.ObjMetadata]string) selection {
	sel := selection{vouched: map[object.ObjMetadata]bool{}}
	sel.incremental = b.Incremental && !m.opts.DryRun && inv != nil && sameIdentity(b, inv)
	switch {
	case sel.incremental:
		var same []*unstructured.Unstructured
		held := inv.index()
		sel.apply, same = changedSince(held, objects, digests, inv.Digest != "" && inv.Digest == b.Digest)
		for _, o := range same {
			id := object.UnstructuredToObjMetadata(o)
			if b.Unmoved != nil && !b.Unmoved(held[id]) {
				sel.check = append(sel.check, o)
				continue
			}
			sel.kept = append(sel.kept, held[id])
			sel.vouched[id] = true
		}
	case m.opts.DryRun || (inv != nil && inv.Digest == b.Digest):
		sel.check = objects
	default:
		sel.apply = objects
	}
	return sel
}

// sameIdentity reports whether the bundle applies as the identity its
// inventory recorded: an incremental sync may skip objects only then (a
// new ServiceAccount must be shown able to apply them all).
func sameIdentity(b Bundle, inv *Inventory) bool {
	return b.ServiceAccountName == inv.ServiceAccountName && (b.ServiceAccountName == "" || b.Namespace == inv.Namespace)
}

// drifted records what the dry run found of each object and returns those
// to apply: the missing ones, and the ones changed by hand unless the
// bundle only reports drift (a dry run applies nothing).
func (m *Manager) drifted(b Bundle, diffs []*jsondiff.Diff, res *BundleResult) []*unstructured.Unstructured {
	var toApply []*unstructured.Unstructured
	for _, d := range diffs {
		obj := d.DesiredObject.(*unstructured.Unstructured)
		action := ObjectAction{Object: ssautils.FmtUnstructured(obj)}
		switch d.Type {
		case jsondiff.DiffTypeCreate:
			action.Action = ActionCreated
			toApply = append(toApply, obj)
		case jsondiff.DiffTypeUpdate:
			action.Fields = patchPaths(d)
			switch {
			case m.opts.DryRun:
				action.Action = ActionConfigured
			case b.DriftPolicy == spec.DriftReport:
				action.Action = ActionDrifted
				res.Counts.Drifted++
			default:
				action.Action = ActionCorrected
				res.Counts.Drifted++
				toApply = append(toApply, obj)
			}
		case jsondiff.DiffTypeExclude:
			action.Action = ActionSkipped
		default:
			action.Action = ActionUnchanged
			res.Counts.Unchanged++
		}
		if m.opts.DryRun || action.Action != ActionUnchanged {
			res.Objects = append(res.Objects, action)
		}
	}
	return toApply
}

// dryRun dry-run applies objects and compares each with the cluster's copy;
// Secret values are masked in the result. An object in a namespace that
// does not exist yet cannot be dry-run: it is one to create. Objects whose
// dry run the API server refuses (an immutable field changed) are returned
// apart, with the reason, for the caller to apply (and fail, or recreate
// with force) or to report.
func (m *Manager) dryRun(ctx context.Context, rm *ssa.ResourceManager, objects []*unstructured.Unstructured) (jsondiff.DiffSet, []refused, error) {
	missing := map[string]bool{}
	var known []*unstructured.Unstructured
	var out jsondiff.DiffSet
	for _, o := range objects {
		ns := o.GetNamespace()
		if ns != "" {
			if _, seen := missing[ns]; !seen {
				err := rm.Client().Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{})
				if err != nil && !apierrors.IsNotFound(err) {
					return nil, nil, fmt.Errorf("dry-run: %w", err)
				}
				missing[ns] = apierrors.IsNotFound(err)
			}
			if missing[ns] {
				out = append(out, jsondiff.NewDiffForUnstructured(o, nil, jsondiff.DiffTypeCreate, nil))
				continue
			}
		}
		known = append(known, o)
	}
	// One object at a time per request, ObjectConcurrency at once, as the
	// apply itself runs (jsondiff.UnstructuredList is sequential).
	diffs := make(jsondiff.DiffSet, len(known))
	errs := make([]error, len(known))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, m.opts.ObjectConcurrency))
	for i, o := range known {
		g.Go(func() error {
			diffs[i], errs[i] = jsondiff.Unstructured(gctx, rm.Client(), o,
				jsondiff.FieldOwner(m.opts.FieldManager),
				jsondiff.ExclusionSelector{spec.ReconcileAnnotation: "disabled"},
				jsondiff.IgnorePaths(ignoredFields(o)),
				jsondiff.MaskSecrets(true),
				jsondiff.Rationalize(true))
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, fmt.Errorf("dry-run: %w", err)
	}
	var bad []refused
	for i, err := range errs {
		switch {
		case err == nil:
			out = append(out, diffs[i])
		case errors.As(err, new(*ssaerrors.DryRunErr)):
			bad = append(bad, refused{object: known[i], err: err})
		default:
			return nil, nil, fmt.Errorf("dry-run: %w", err)
		}
	}
	return out, bad, nil
}

// refused is an object whose dry run the API server refused.
type refused struct {
	object *unstructured.Unstructured
	err    error
}

// applyStaged applies cluster definitions (CRDs, Namespaces, ClusterRoles)
// first and waits — honouring ctx, which ssa's ApplyAllStaged does not —
// for them to be established, then everything else.
func (m *Manager) applyStaged(ctx context.Context, rm *ssa.ResourceManager, objects []*unstructured.Unstructured, opts ssa.ApplyOptions, timeout time.Duration) (*ssa.ChangeSet, error) {
	cs := ssa.NewChangeSet()
	var defs, rest []*unstructured.Unstructured
	for _, o := range objects {
		if ssautils.IsClusterDefinition(o) {
			defs = append(defs, o)
		} else {
			rest = append(rest, o)
		}
	}
	if len(defs) > 0 {
		defCS, err := rm.ApplyAll(ctx, defs, opts)
		if defCS != nil {
			cs.Append(defCS.Entries)
		}
		if err != nil {
			return cs, err
		}
		wait := ssa.WaitOptions{Interval: m.opts.WaitInterval, Timeout: min(timeout, definitionsWait)}
		if err := rm.WaitForSetWithContext(ctx, defCS.ToObjMetadataSet(), wait); err != nil {
			return cs, fmt.Errorf("waiting for CRDs and namespaces: %w", err)
		}
	}
	if len(rest) > 0 {
		restCS, err := rm.ApplyAll(ctx, rest, opts)
		if restCS != nil {
			cs.Append(restCS.Entries)
		}
		if err != nil {
			return cs, err
		}
	}
	return cs, nil
}

// wait waits for the applied objects to be ready, for the bundle's timeout
// or until ctx ends (a newer revision, shutdown). It returns "" when ready,
// else what is not.
func (m *Manager) wait(ctx context.Context, b Bundle, applied []Entry) string {
	applied = m.withoutSelf(applied)
	set := make(object.ObjMetadataSet, 0, len(applied))
	for _, e := range applied {
		set = append(set, e.ID)
	}
	rm, err := m.managerFor(b.Namespace, b.ServiceAccountName)
	if err != nil {
		return err.Error()
	}
	err = rm.WaitForSetWithContext(ctx, set, ssa.WaitOptions{Interval: m.opts.WaitInterval, Timeout: b.Timeout.Duration})
	if err == nil {
		return ""
	}
	if ctx.Err() != nil {
		return "readiness wait cancelled: " + ctx.Err().Error()
	}
	return fmt.Sprintf("not ready after %s: %s", b.Timeout.Duration, strings.TrimSpace(err.Error()))
}

// ignoredFields reads an object's spec.IgnoreFieldsAnnotation.
func ignoredFields(o *unstructured.Unstructured) []string {
	var out []string
	for _, p := range strings.Split(o.GetAnnotations()[spec.IgnoreFieldsAnnotation], ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ignoreRules turns the objects' spec.IgnoreFieldsAnnotation into ssa's drift
// ignore rules, one per object.
func ignoreRules(objects []*unstructured.Unstructured) []jsondiff.IgnoreRule {
	var rules []jsondiff.IgnoreRule
	for _, o := range objects {
		paths := ignoredFields(o)
		if len(paths) == 0 {
			continue
		}
		gvk := o.GroupVersionKind()
		rules = append(rules, jsondiff.IgnoreRule{Paths: paths, Selector: &jsondiff.Selector{
			Group: gvk.Group, Kind: gvk.Kind, Name: o.GetName(), Namespace: o.GetNamespace(),
		}})
	}
	return rules
}

// entriesFor returns the inventory entries of the rendered objects, marking
// those the change set says were created.
func entriesFor(objects []*unstructured.Unstructured, cs *ssa.ChangeSet) []Entry {
	created := map[object.ObjMetadata]bool{}
	skipped := map[object.ObjMetadata]bool{}
	if cs != nil {
		for _, e := range cs.Entries {
			switch e.Action {
			case ssa.CreatedAction:
				created[e.ObjMetadata] = true
			case ssa.SkippedAction:
				skipped[e.ObjMetadata] = true
			}
		}
	}
	out := make([]Entry, 0, len(objects))
	for _, o := range objects {
		id := object.UnstructuredToObjMetadata(o)
		if skipped[id] || o.GetAnnotations()[spec.ReconcileAnnotation] == "disabled" {
			continue
		}
		out = append(out, Entry{ID: id, Version: o.GroupVersionKind().Version, Created: created[id]})
	}
	return out
}

// patchPaths lists the JSON pointers a dry-run diff changes.
func patchPaths(d *jsondiff.Diff) []string {
	var out []string
	for _, op := range d.Patch {
		out = append(out, op.Path)
	}
	return out
}

func countAction(c *Counts, action Action) {
	switch action {
	case ActionCreated:
		c.Created++
	case ActionConfigured, ActionCorrected:
		c.Configured++
	case ActionDeleted:
		c.Deleted++
	case ActionUnchanged:
		c.Unchanged++
	}
}

func hasAction(actions []ObjectAction, subject string) bool {
	for _, a := range actions {
		if a.Object == subject {
			return true
		}
	}
	return false
}
