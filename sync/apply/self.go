package apply

import (
	"context"
	"fmt"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// SelfUpdate is the agent's own Deployment, rendered with a pod template
// that differs from the one running: applying it replaces this agent. Sync
// does not apply it. It records it in its bundle's inventory (so nothing
// prunes it) and hands it back, for the agent to apply last, once its
// status says what is happening (ApplySelf).
type SelfUpdate struct {
	Bundle string
	// Image is the new pod template's first container image.
	Image  string
	object *unstructured.Unstructured
	opts   ssa.ApplyOptions
	rm     *ssa.ResourceManager
}

// isSelf reports whether o is the Deployment running this agent.
func (m *Manager) isSelf(o *unstructured.Unstructured) bool {
	s := m.opts.Self
	return s.Name != "" && o.GetName() == s.Name && o.GetNamespace() == s.Namespace &&
		o.GroupVersionKind().GroupKind() == s.GroupKind
}

// holdSelf takes the agent's own Deployment out of toApply when applying
// it would change its pod template (a new image, new flags: the pod is
// replaced). Applied unchanged, or to metadata only, it stays.
func (m *Manager) holdSelf(ctx context.Context, b Bundle, rm *ssa.ResourceManager, toApply []*unstructured.Unstructured, opts ssa.ApplyOptions) ([]*unstructured.Unstructured, *SelfUpdate, error) {
	for i, o := range toApply {
		if !m.isSelf(o) {
			continue
		}
		_, live, merged, err := rm.Diff(ctx, o, ssa.DiffOptions{Exclusions: opts.ExclusionSelector, IfNotPresentSelector: opts.IfNotPresentSelector})
		if err != nil {
			return nil, nil, fmt.Errorf("dry-run of the agent's own %s: %w", object.UnstructuredToObjMetadata(o), err)
		}
		if live == nil || merged == nil {
			return toApply, nil, nil // not running from it: apply as any object
		}
		before, _, _ := unstructured.NestedMap(live.Object, "spec", "template")
		after, _, _ := unstructured.NestedMap(merged.Object, "spec", "template")
		if equality.Semantic.DeepEqual(before, after) {
			return toApply, nil, nil
		}
		image := ""
		if cs, _, _ := unstructured.NestedSlice(after, "spec", "containers"); len(cs) > 0 {
			if c, ok := cs[0].(map[string]any); ok {
				image, _ = c["image"].(string)
			}
		}
		rest := append(append([]*unstructured.Unstructured{}, toApply[:i]...), toApply[i+1:]...)
		return rest, &SelfUpdate{Bundle: b.Name, Image: image, object: o, opts: opts, rm: rm}, nil
	}
	return toApply, nil, nil
}

// ApplySelf applies the agent's own new Deployment: the Deployment
// controller then replaces this agent's pod.
func (m *Manager) ApplySelf(ctx context.Context, su *SelfUpdate) error {
	if _, err := su.rm.Apply(ctx, su.object, su.opts); err != nil {
		return fmt.Errorf("applying the agent's own Deployment: %w", err)
	}
	return nil
}

// withoutSelf leaves the agent's own Deployment out of a readiness wait:
// the agent is its pod, and its pod is Ready once a pass of its own
// succeeds, which would wait on this very wait.
func (m *Manager) withoutSelf(applied []Entry) []Entry {
	s := m.opts.Self
	if s.Name == "" {
		return applied
	}
	out := applied[:0:0]
	for _, e := range applied {
		if e.ID != s {
			out = append(out, e)
		}
	}
	return out
}
