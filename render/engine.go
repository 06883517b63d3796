package render

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Result is a bundle rendered for one cluster.
type Result struct {
	Bundle string
	// Objects are what is applied, sorted, namespaced and labelled.
	Objects []*unstructured.Unstructured
	// Hooks are Helm hooks that are not applied (the bundle did not opt
	// in), for `plan` and `render` to show.
	Hooks []*unstructured.Unstructured
	// Digest identifies Objects: equal digests, equal objects.
	Digest string
	// Warnings are things a user should know that did not stop rendering
	// (a kind whose scope could only be assumed, for example).
	Warnings []string
	// Sensitive are the values the render decrypted (Output.Sensitive):
	// whatever reports on the objects (an apply's errors) scrubs them.
	Sensitive []string `json:"-"`
	// Size is the size of Objects as JSON, in bytes.
	Size int64 `json:"-"`
}

// Engine renders bundles with one Renderer per source kind and finishes
// their output the same way whatever the kind.
type Engine struct {
	renderers map[spec.Kind]Renderer
	scope     Scope
	limits    Limits
}

// Limits bound each render of an engine, so that one bundle cannot hold up
// or exhaust the others.
type Limits struct {
	// Timeout bounds a render whose request names no RenderTimeout; zero
	// for none. A render that ends later fails: an in-process render is
	// abandoned (it cannot be stopped), a sandboxed one killed.
	Timeout time.Duration
	// MaxObjects bounds the objects (hooks included) one render may
	// produce; zero for none.
	MaxObjects int
	// MaxBytes bounds the size of one render's objects, as JSON; zero for
	// none. (A sandbox worker refuses to send more: Options.MaxOutput.)
	MaxBytes int64
	// MaxClusterBytes bounds the size of all of one cluster's bundles'
	// objects, which whoever applies them holds at once (planrender's
	// RenderPlan); zero for none.
	MaxClusterBytes int64
}

// Defaults for the limits the commands and the agent apply.
const (
	DefaultTimeout    = time.Minute
	DefaultMaxObjects = 10000
	// DefaultMaxBytes is a bundle's objects' size bound: far above a real
	// bundle (a large operator's CRDs take a few MiB), far below what
	// would exhaust the agent, which holds every bundle of a pass.
	DefaultMaxBytes = 128 << 20
	// DefaultMaxClusterBytes bounds a cluster's objects, as JSON (held as
	// Go values they take more): what the agent holds to apply, within its
	// deployment's 1.5 GiB memory limit.
	DefaultMaxClusterBytes = 384 << 20
)

// ErrTooLarge is wrapped when a bundle's objects are larger than a bound.
var ErrTooLarge = errors.New("renders more than a bundle may")

// WithLimits sets the engine's limits and returns it.
func (e *Engine) WithLimits(l Limits) *Engine {
	e.limits = l
	return e
}

// ErrTimeout is wrapped when a render takes longer than its bound.
var ErrTimeout = errors.New("took longer than its render timeout")

// NewEngine returns an engine with the given renderers by source kind.
// scope tells namespaced kinds from cluster-scoped ones; nil means the
// built-in kinds plus the CRDs being rendered.
func NewEngine(renderers map[spec.Kind]Renderer, scope Scope) *Engine {
	if scope == nil {
		scope = BuiltinScope()
	}
	return &Engine{renderers: renderers, scope: scope}
}

// Render renders one bundle. Any failure is an *Error naming the bundle and
// the cluster.
//
// Helm's template engine, kustomize and CUE cannot observe ctx, so the
// render runs on a goroutine of its own and Render stops waiting for it
// when ctx ends, returning ctx's cause: a command interrupted in a template
// that never finishes returns at once (the abandoned render ends with the
// process).
func (e *Engine) Render(ctx context.Context, req *Request) (*Result, error) {
	timeout := e.limits.Timeout
	if req.RenderTimeout != "" {
		d, err := time.ParseDuration(req.RenderTimeout)
		if err != nil || d <= 0 {
			return nil, &Error{Bundle: req.Bundle, Cluster: req.Cluster, Err: fmt.Errorf("renderTimeout %q is not a positive duration", req.RenderTimeout)}
		}
		timeout = d
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, timeout, fmt.Errorf("%w (%s): the bundle fails alone; raise renderTimeout in its fleet.cue or the --render-timeout flag if it is legitimately slow", ErrTimeout, timeout))
		defer cancel()
	}
	type outcome struct {
		res *Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := e.render(ctx, req)
		done <- outcome{res, err}
	}()
	var o outcome
	select {
	case o = <-done:
	case <-ctx.Done():
		o.err = fmt.Errorf("rendering stopped: %w", context.Cause(ctx))
	}
	if o.err != nil {
		return nil, &Error{Bundle: req.Bundle, Cluster: req.Cluster, Err: o.err}
	}
	return o.res, nil
}

func (e *Engine) render(ctx context.Context, req *Request) (*Result, error) {
	r, ok := e.renderers[req.Source.Kind]
	if !ok {
		return nil, fmt.Errorf("no renderer for source kind %q", req.Source.Kind)
	}
	out, err := r.Render(ctx, req)
	if err != nil {
		return nil, err
	}
	res, err := e.finishAll(req, out)
	return res, ScrubError(err, out.Sensitive)
}

// finishAll checks and finishes a renderer's output (finish) into a Result.
func (e *Engine) finishAll(req *Request, out *Output) (*Result, error) {
	if n := len(out.Objects) + len(out.Hooks); e.limits.MaxObjects > 0 && n > e.limits.MaxObjects {
		return nil, fmt.Errorf("renders %d objects, more than the %d a bundle may have (--max-objects)", n, e.limits.MaxObjects)
	}
	res := &Result{Bundle: req.Bundle, Sensitive: out.Sensitive}
	scope := withCRDs(e.scope, out.Objects)
	for i, set := range []*[]Object{&out.Objects, &out.Hooks} {
		warnings, err := finish(*set, req, scope, i == 1)
		if err != nil {
			return nil, err
		}
		res.Warnings = append(res.Warnings, warnings...)
	}
	res.Objects = objectsOf(out.Objects)
	res.Hooks = objectsOf(out.Hooks)
	var err error
	if res.Digest, res.Size, err = digest(res.Objects); err != nil {
		return nil, err
	}
	if e.limits.MaxBytes > 0 && res.Size > e.limits.MaxBytes {
		return nil, fmt.Errorf("%w: its objects take %s as JSON, more than %s (--max-bundle-size)", ErrTooLarge, MiB(res.Size), MiB(e.limits.MaxBytes))
	}
	slices.Sort(res.Warnings)
	res.Warnings = slices.Compact(res.Warnings)
	return res, nil
}

// finish checks, namespaces and labels objects, refuses duplicates (naming
// both sources) and sorts them.
func finish(objects []Object, req *Request, scope Scope, hooks bool) ([]string, error) {
	var warnings []string
	seen := map[string]string{}
	for _, o := range objects {
		obj := o.Object
		gvk := obj.GroupVersionKind()
		if hooks {
			// Hooks are not applied unless the bundle opts in (and a
			// hook's Job commonly has only a generateName).
			if obj.GetName() == "" && obj.GetGenerateName() == "" {
				return nil, fmt.Errorf("%s: %s has no metadata.name", o.Source, gvk.Kind)
			}
		} else if err := checkIdentity(obj); err != nil {
			return nil, fmt.Errorf("%s: %w", o.Source, err)
		}
		namespaced, known := scope.Namespaced(gvk)
		if !known {
			warnings = append(warnings, fmt.Sprintf(
				"%s is not a built-in kind and no CRD for it is rendered: assumed namespaced", gvk.GroupKind()))
			namespaced = true
		}
		switch ns := obj.GetNamespace(); {
		case namespaced && ns == "":
			obj.SetNamespace(req.Namespace)
		case !namespaced && ns != "" && req.Source.Kind == spec.KindHelm:
			// Charts often template the release namespace onto every
			// object, cluster-scoped ones included, and Helm and kubectl
			// ignore it there: so do we, saying so.
			unstructured.RemoveNestedField(obj.Object, "metadata", "namespace")
			warnings = append(warnings, fmt.Sprintf("%s: %s %s is cluster-scoped: its namespace %q is ignored", o.Source, gvk.Kind, obj.GetName(), ns))
		case !namespaced && ns != "":
			return nil, fmt.Errorf("%s: %s %s is cluster-scoped but names namespace %q: remove it", o.Source, gvk.Kind, obj.GetName(), ns)
		}
		labels := obj.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[spec.ManagedByLabel] = spec.ManagedBy
		labels[spec.BundleLabel] = req.Bundle
		obj.SetLabels(labels)

		key := StoredKey(obj)
		if prev, dup := seen[key]; dup {
			return nil, fmt.Errorf("%s is rendered twice: by %s and by %s", ObjectKey(obj), prev, o.Source)
		}
		seen[key] = o.Source
	}
	slices.SortStableFunc(objects, func(a, b Object) int { return compareObjects(a.Object, b.Object) })
	return warnings, nil
}

// ObjectKey identifies an object: group/kind namespace/name.
func ObjectKey(obj *unstructured.Unstructured) string {
	gk := obj.GroupVersionKind().GroupKind()
	name := obj.GetName()
	if ns := obj.GetNamespace(); ns != "" {
		name = ns + "/" + name
	}
	return gk.String() + " " + name
}

// servedTwice are the kinds the API serves in two groups over one stored
// object: an Event of v1 and of events.k8s.io/v1 with one name are one.
var servedTwice = map[schema.GroupKind]schema.GroupKind{
	{Group: "events.k8s.io", Kind: "Event"}: {Kind: "Event"},
}

// StoredKey identifies the object the API server stores: ObjectKey, with a
// kind served in two groups said in one. Two rendered objects with one
// StoredKey are one object (for duplicates); ObjectKey stays what the
// inventory records.
func StoredKey(obj *unstructured.Unstructured) string {
	gk := obj.GroupVersionKind().GroupKind()
	if same, ok := servedTwice[gk]; ok {
		c := obj.DeepCopy()
		c.SetGroupVersionKind(same.WithVersion("v1"))
		return ObjectKey(c)
	}
	return ObjectKey(obj)
}

// compareObjects orders by group, kind, namespace, name.
func compareObjects(a, b *unstructured.Unstructured) int {
	ga, gb := a.GroupVersionKind(), b.GroupVersionKind()
	return cmp.Or(
		strings.Compare(ga.Group, gb.Group),
		strings.Compare(ga.Kind, gb.Kind),
		strings.Compare(a.GetNamespace(), b.GetNamespace()),
		strings.Compare(a.GetName(), b.GetName()),
	)
}

// Digest hashes objects in their order: "sha256:<hex>".
func Digest(objects []*unstructured.Unstructured) (string, error) {
	d, _, err := digest(objects)
	return d, err
}

// digest is Digest and the objects' size as JSON.
func digest(objects []*unstructured.Unstructured) (string, int64, error) {
	h := sha256.New()
	n := &countingWriter{w: h}
	enc := json.NewEncoder(n)
	for _, o := range objects {
		if err := enc.Encode(o.Object); err != nil {
			return "", 0, err
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), n.n, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.w.Write(p)
}

// MiB shows a size in mebibytes, for messages.
func MiB(n int64) string {
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func objectsOf(os []Object) []*unstructured.Unstructured {
	out := make([]*unstructured.Unstructured, len(os))
	for i, o := range os {
		out[i] = o.Object
	}
	return out
}
