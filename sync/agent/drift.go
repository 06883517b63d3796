package agent

import (
	"context"
	"sync"
	"time"

	"github.com/flotilla-gitops/flotilla/schemas/spec"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// driftWatch notices, without polling, when an object Flotilla manages is
// changed by someone else or deleted: it watches the metadata of the kinds
// Flotilla applied (only objects labelled managed-by=flotilla) and calls
// notify for an update whose newest managedFields entry is not Flotilla's
// (status and other subresources are not drift) or for a deletion. The
// next pass then checks those bundles with dry runs and corrects or
// reports. Kinds the agent may not list (least-privilege RBAC) are not
// watched; their drift is found when the revision changes.
type driftWatch struct {
	client       metadata.Interface
	mapper       meta.RESTMapper
	fieldManager string
	notify       func()

	mu      sync.Mutex
	factory metadatainformer.SharedInformerFactory
	watched map[schema.GroupVersionResource]bool
}

func newDriftWatch(cfg *rest.Config, mapper meta.RESTMapper, fieldManager string, notify func()) (*driftWatch, error) {
	c, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	factory := metadatainformer.NewFilteredSharedInformerFactory(c, 0, metav1.NamespaceAll, func(o *metav1.ListOptions) {
		o.LabelSelector = spec.ManagedByLabel + "=" + spec.ManagedBy
	})
	return &driftWatch{client: c, mapper: mapper, fieldManager: fieldManager, notify: notify, factory: factory,
		watched: map[schema.GroupVersionResource]bool{}}, nil
}

// watch makes sure the kinds are watched; ctx ends the watches.
func (w *driftWatch) watch(ctx context.Context, kinds []schema.GroupVersionKind) {
	w.mu.Lock()
	defer w.mu.Unlock()
	started := false
	for _, gvk := range kinds {
		m, err := w.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil || w.watched[m.Resource] {
			continue
		}
		w.watched[m.Resource] = true
		// Only kinds the agent may list cluster-wide.
		if _, err := w.client.Resource(m.Resource).List(ctx, metav1.ListOptions{Limit: 1}); apierrors.IsForbidden(err) {
			continue
		}
		informer := w.factory.ForResource(m.Resource).Informer()
		_, _ = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			// The first list may already show a change made between the
			// apply and the start of the watch.
			AddFunc: func(obj any) {
				if n, ok := obj.(*metav1.PartialObjectMetadata); ok && changedByOthers(n, w.fieldManager) {
					w.notify()
				}
			},
			UpdateFunc: func(oldObj, newObj any) {
				o, ok1 := oldObj.(*metav1.PartialObjectMetadata)
				n, ok2 := newObj.(*metav1.PartialObjectMetadata)
				if ok1 && ok2 && o.ResourceVersion != n.ResourceVersion && changedByOthers(n, w.fieldManager) {
					w.notify()
				}
			},
			DeleteFunc: func(any) { w.notify() },
		})
		started = true
	}
	if started {
		w.factory.Start(ctx.Done())
	}
}

// changedByOthers reports whether another field manager changed the
// object's main resource at or after Flotilla's last apply. managedFields
// times have one-second resolution: a change in the same second counts as
// drift (the pass that follows finds nothing to do if it was not).
func changedByOthers(o *metav1.PartialObjectMetadata, fieldManager string) bool {
	var ours, theirs *time.Time
	for _, e := range o.ManagedFields {
		if e.Subresource != "" || e.Time == nil {
			continue
		}
		at := e.Time.Time
		latest := &theirs
		if e.Manager == fieldManager {
			latest = &ours
		}
		if *latest == nil || at.After(**latest) {
			*latest = &at
		}
	}
	return theirs != nil && (ours == nil || !theirs.Before(*ours))
}
