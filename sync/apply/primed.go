package apply

import (
	"context"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// A first sync read each object twice: the foreign-owner check's GET
// (refuseForeign) and then ssa's ApplyAll's own GET of the same object,
// before its dry-run and its apply (issue 39: four requests per object,
// where Flux's first sync makes three). The check now reads the whole
// object into a primedClient, which answers ApplyAll's GET of it once
// from what was read: three requests per object. The copy is as old as
// the check (at most the CRD and Namespace stage's wait): an object
// changed in between is at worst applied once more, or corrected as drift
// at the next pass.

// primedKey identifies a read object: its kind and key.
type primedKey struct {
	gvk       schema.GroupVersionKind
	namespace string
	name      string
}

// primedClient answers each primed Get once, and passes everything else
// to the client.
type primedClient struct {
	client.Client
	mu     sync.Mutex
	primed map[primedKey]*unstructured.Unstructured // nil: not found
}

func newPrimedClient(c client.Client) *primedClient {
	return &primedClient{Client: c, primed: map[primedKey]*unstructured.Unstructured{}}
}

// prime keeps what a Get found (nil: not found) for the next Get of it.
func (p *primedClient) prime(o *unstructured.Unstructured, live *unstructured.Unstructured) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.primed[primedKey{o.GroupVersionKind(), o.GetNamespace(), o.GetName()}] = live
}

// Get answers from a primed read once, or asks the cluster.
func (p *primedClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		k := primedKey{u.GroupVersionKind(), key.Namespace, key.Name}
		p.mu.Lock()
		live, found := p.primed[k]
		delete(p.primed, k)
		p.mu.Unlock()
		if found {
			if live == nil {
				gvk := u.GroupVersionKind()
				return apierrors.NewNotFound(schema.GroupResource{Group: gvk.Group, Resource: strings.ToLower(gvk.Kind)}, key.Name)
			}
			u.Object = live.DeepCopy().Object
			return nil
		}
	}
	return p.Client.Get(ctx, key, obj, opts...)
}
