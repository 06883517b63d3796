package apply

import (
	"context"
	"fmt"
	"time"

	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	ssautils "github.com/fluxcd/pkg/ssa/utils"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// deletions are what a sync would delete: objects that left a bundle that
// still exists, and whole bundles that left the plan.
type deletions struct {
	stale   map[string][]Entry
	bundles map[string]bool
	// inUse are the namespaces that hold objects which stay: a namespace a
	// deleted bundle created is not deleted while another bundle uses it.
	inUse map[string]bool
}

func (d deletions) count(current map[string]*Inventory) int {
	n := 0
	for _, s := range d.stale {
		n += len(s)
	}
	for name := range d.bundles {
		if inv := current[name]; inv != nil && inv.Prune {
			n += len(inv.Entries)
		}
	}
	return n
}

// planDeletions compares the bundles with the inventories. A bundle that
// failed to evaluate or render deletes nothing; a bundle with prune off
// deletes nothing; bundles of the cluster that are not listed are deleted
// when unlisted is set (they left the plan).
func planDeletions(bundles []Bundle, current map[string]*Inventory, unlisted bool) deletions {
	d := deletions{stale: map[string][]Entry{}, bundles: map[string]bool{}, inUse: map[string]bool{}}
	planned := map[string]bool{}
	for _, b := range bundles {
		planned[b.Name] = true
		inv := current[b.Name]
		for _, o := range b.Objects {
			d.inUse[o.GetNamespace()] = true
		}
		if b.Err != nil || !b.Prune {
			if inv != nil {
				for _, e := range inv.Entries {
					d.inUse[e.ID.Namespace] = true
				}
			}
			continue
		}
		if inv == nil {
			continue
		}
		rendered := map[object.ObjMetadata]bool{}
		for _, o := range b.Objects {
			rendered[object.UnstructuredToObjMetadata(o)] = true
		}
		for _, e := range inv.Entries {
			if !rendered[e.ID] {
				d.stale[b.Name] = append(d.stale[b.Name], e)
			}
		}
	}
	for name, inv := range current {
		switch {
		case planned[name]:
		case unlisted:
			d.bundles[name] = true
		default:
			for _, e := range inv.Entries {
				d.inUse[e.ID.Namespace] = true
			}
		}
	}
	return d
}

// guard returns why the deletions must not happen, or "".
func (m *Manager) guard(d deletions, current map[string]*Inventory) string {
	if m.opts.AllowMassDeletion || m.opts.DryRun {
		return ""
	}
	managed := 0
	for _, inv := range current {
		managed += len(inv.Entries)
	}
	n := d.count(current)
	if n > m.opts.MinGuardedDeletes && float64(n) > m.opts.MaxDeleteShare*float64(managed) {
		return fmt.Sprintf("mass-deletion guard: this sync would delete %d of the %d managed objects (more than %.0f%%); nothing was deleted — "+
			"if this is intended, sync once with deletions allowed (--allow-mass-deletion)", n, managed, 100*m.opts.MaxDeleteShare)
	}
	return ""
}

// prune deletes the bundle's stale objects and returns the ones it kept
// (not deleted: prune off, or the guard, or a failure), which stay in the
// inventory.
func (m *Manager) prune(ctx context.Context, b Bundle, stale []Entry, inUse map[string]bool, res *BundleResult) ([]Entry, error) {
	if len(stale) == 0 {
		return nil, nil
	}
	if m.opts.DryRun {
		for _, e := range stale {
			res.Objects = append(res.Objects, ObjectAction{Object: subject(e), Action: ActionDeleted})
			res.Counts.Deleted++
		}
		return nil, nil
	}
	rm, err := m.managerFor(b.Namespace, b.ServiceAccountName)
	if err != nil {
		return stale, err
	}
	return m.deleteEntries(ctx, rm, stale, inUse, res)
}

// deleteBundle deletes every object of a bundle that left the plan, then
// its inventory. With prune off, the objects stay and only the inventory
// goes.
func (m *Manager) deleteBundle(ctx context.Context, inv *Inventory, inUse map[string]bool) BundleResult {
	start := time.Now()
	res := BundleResult{Name: inv.Bundle, Phase: PhasePruned}
	defer func() { res.Duration = time.Since(start) }()
	if m.opts.DryRun {
		_, _ = m.prune(ctx, Bundle{Name: inv.Bundle}, inv.Entries, inUse, &res)
		res.Message = "would be deleted: the bundle no longer selects this cluster"
		return res
	}
	if inv.Prune {
		// As the bundle's ServiceAccount, as it was applied: a tenant's
		// bundle is deleted with the tenant's rights (with least-privilege
		// RBAC the agent's own identity could not delete it at all).
		rm, err := m.managerFor(inv.Namespace, inv.ServiceAccountName)
		if err != nil {
			res.Phase = PhaseFailed
			res.Errors = append(res.Errors, err.Error())
			return res
		}
		kept, err := m.deleteEntries(ctx, rm, inv.Entries, inUse, &res)
		if err != nil || len(kept) > 0 {
			res.Phase = PhaseFailed
			res.Message = fmt.Sprintf("%s could not be deleted", english.Count(len(kept), "object"))
			if err != nil {
				res.Errors = append(res.Errors, err.Error())
			}
			left := *inv
			left.Entries = kept
			if err := m.record(ctx, &left); err != nil {
				res.Errors = append(res.Errors, fmt.Sprintf("recording the objects left to delete: %v", err))
			}
			return res
		}
		res.Message = "deleted: the bundle no longer selects this cluster"
	} else {
		res.Message = "left in place (prune: false); the bundle no longer selects this cluster"
	}
	if err := m.inv.remove(ctx, inv.Bundle); err != nil {
		res.Phase = PhaseFailed
		res.Errors = append(res.Errors, err.Error())
	}
	return res
}

// deleteEntries deletes objects, Namespaces and CRDs last and only those
// Flotilla created (and a Namespace only when no staying object is in it);
// objects marked with the reconcile-disabled annotation are left alone. It
// returns the entries it could not delete.
func (m *Manager) deleteEntries(ctx context.Context, rm *ssa.ResourceManager, entries []Entry, inUse map[string]bool, res *BundleResult) ([]Entry, error) {
	var first, last []Entry
	for _, e := range entries {
		if isDefinition(e) {
			if !e.Created || (e.ID.GroupKind.Kind == "Namespace" && inUse[e.ID.Name]) {
				res.Objects = append(res.Objects, ObjectAction{Object: subject(e), Action: ActionOrphaned})
				continue
			}
			last = append(last, e)
		} else {
			first = append(first, e)
		}
	}
	var kept []Entry
	var errs []error
	for _, group := range [][]Entry{first, last} {
		for _, e := range group {
			obj := e.Object()
			cs, err := rm.Delete(ctx, obj, ssa.DeleteOptions{
				PropagationPolicy: metav1.DeletePropagationBackground,
				Exclusions:        map[string]string{spec.ReconcileAnnotation: "disabled"},
			})
			switch {
			case err != nil && apierrors.IsNotFound(err):
			case err != nil:
				kept = append(kept, e)
				errs = append(errs, err)
				continue
			case cs != nil && cs.Action == ssa.SkippedAction:
				res.Objects = append(res.Objects, ObjectAction{Object: subject(e), Action: ActionSkipped})
				continue
			}
			res.Objects = append(res.Objects, ObjectAction{Object: subject(e), Action: ActionDeleted})
			res.Counts.Deleted++
		}
	}
	if len(errs) > 0 {
		return kept, fmt.Errorf("deleting: %v", errs)
	}
	return kept, nil
}

// isDefinition reports whether the entry is a Namespace or a CRD, deleted
// last and only when Flotilla created it.
func isDefinition(e Entry) bool {
	obj := e.Object()
	return ssautils.IsNamespace(obj) || ssautils.IsCRD(obj)
}

func subject(e Entry) string {
	return ssautils.FmtObjMetadata(e.ID)
}
