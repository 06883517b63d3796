package apply

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/fluxcd/pkg/ssa/jsondiff"
	ssautils "github.com/fluxcd/pkg/ssa/utils"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// ObjectDiff is how one object of the cluster differs from the fleet.
type ObjectDiff struct {
	Bundle string `json:"bundle"`
	// Object is "Kind/namespace/name".
	Object string `json:"object"`
	// Action is what a sync would do: created, configured or deleted.
	Action Action `json:"action"`
	// Changes are the field changes of a configured object.
	Changes []Change `json:"changes,omitempty"`
	// Desired is a created object. Secret values are masked.
	Desired *unstructured.Unstructured `json:"desired,omitempty"`
}

// Change is one changed field. Secret values are masked.
type Change struct {
	Op   string `json:"op"`
	Path string `json:"path"`
	Old  any    `json:"old,omitempty"`
	New  any    `json:"new,omitempty"`
}

// maskedValue replaces a Secret's values in diffs.
const maskedValue = "*** (masked)"

// Diff compares bundles with the cluster without changing it: server-side
// dry-run apply of every object (as the bundle's ServiceAccount when it
// has one), and the objects a sync would prune or delete. Bundles carrying
// Err are left out.
func (m *Manager) Diff(ctx context.Context, bundles []Bundle) ([]ObjectDiff, error) {
	current, broken, err := m.inv.list(ctx)
	if err != nil {
		return nil, err
	}
	// A bundle whose inventory cannot be read is neither applied nor
	// deleted by a sync: left out, like a bundle carrying Err.
	bundles = slices.DeleteFunc(slices.Clone(bundles), func(b Bundle) bool { return broken[b.Name] != nil })
	plan := planDeletions(bundles, current, !m.opts.KeepUnlisted)
	var out []ObjectDiff
	for _, b := range bundles {
		if b.Err != nil {
			continue
		}
		rm, err := m.managerFor(b.Namespace, b.ServiceAccountName)
		if err != nil {
			return nil, err
		}
		diffs, bad, err := m.dryRun(ctx, rm, b.Objects)
		if err == nil && len(bad) > 0 {
			err = bad[0].err
		}
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", b.Name, err)
		}
		for _, d := range diffs {
			obj := d.DesiredObject.(*unstructured.Unstructured)
			od := ObjectDiff{Bundle: b.Name, Object: ssautils.FmtUnstructured(obj)}
			switch d.Type {
			case jsondiff.DiffTypeCreate:
				od.Action, od.Desired = ActionCreated, maskSecret(obj)
			case jsondiff.DiffTypeUpdate:
				od.Action = ActionConfigured
				for _, op := range d.Patch {
					od.Changes = append(od.Changes, Change{Op: op.Type, Path: op.Path, Old: op.OldValue, New: op.Value})
				}
				if ssautils.IsSecret(obj) {
					for i := range od.Changes {
						od.Changes[i].Old, od.Changes[i].New = maskedValue, maskedValue
					}
				}
			default:
				continue
			}
			out = append(out, od)
		}
		for _, e := range plan.stale[b.Name] {
			out = append(out, ObjectDiff{Bundle: b.Name, Object: subject(e), Action: ActionDeleted})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(plan.bundles)) {
		if inv := current[name]; inv.Prune {
			for _, e := range inv.Entries {
				out = append(out, ObjectDiff{Bundle: name, Object: subject(e), Action: ActionDeleted})
			}
		}
	}
	return out, nil
}

// maskSecret returns a copy of obj with a Secret's values masked.
func maskSecret(obj *unstructured.Unstructured) *unstructured.Unstructured {
	out := obj.DeepCopy()
	if !ssautils.IsSecret(out) {
		return out
	}
	for _, field := range []string{"data", "stringData"} {
		if m, ok := out.Object[field].(map[string]any); ok {
			for k := range m {
				m[k] = maskedValue
			}
		}
	}
	return out
}
