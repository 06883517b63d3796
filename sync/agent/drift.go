package agent

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/apply"
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
// watched; their drift is found by the full passes.
//
// The watch's cache also tells an incremental pass which objects it may
// skip (unmoved): those it holds, unchanged by others since Flotilla's
// last apply. A watch that broke (a watch error: the cache may have missed
// events until its relist) asks for a full pass instead (takeBroken).
type driftWatch struct {
	client       metadata.Interface
	mapper       meta.RESTMapper
	fieldManager string
	notify       func()

	mu        sync.Mutex
	factory   metadatainformer.SharedInformerFactory
	watched   map[schema.GroupVersionResource]bool
	informers map[schema.GroupKind]cache.SharedIndexInformer
	broken    atomic.Bool
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
		watched: map[schema.GroupVersionResource]bool{}, informers: map[schema.GroupKind]cache.SharedIndexInformer{}}, nil
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
		_ = informer.SetWatchErrorHandlerWithContext(w.watchError)
		w.informers[gvk.GroupKind()] = informer
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

// unmoved reports whether the watch vouches that the entry's object is as
// Flotilla last applied it: its kind is watched and listed, the object is
// in the watch's cache, and nobody else changed it since. An object the
// watch saw deleted, changed by hand, or cannot see, is not.
func (w *driftWatch) unmoved(e apply.Entry) bool {
	w.mu.Lock()
	informer := w.informers[e.ID.GroupKind]
	w.mu.Unlock()
	if informer == nil || !informer.HasSynced() {
		return false
	}
	key := e.ID.Name
	if e.ID.Namespace != "" {
		key = e.ID.Namespace + "/" + e.ID.Name
	}
	obj, ok, err := informer.GetStore().GetByKey(key)
	if err != nil || !ok {
		return false
	}
	o, isMeta := obj.(*metav1.PartialObjectMetadata)
	return isMeta && !changedByOthers(o, w.fieldManager)
}

// watchError is the watches' error handler: the cache may miss events
// until the reflector lists again, so the next pass is full.
func (w *driftWatch) watchError(ctx context.Context, r *cache.Reflector, err error) {
	if !errors.Is(err, io.EOF) { // EOF: closed normally, resumed where it was
		w.broken.Store(true)
	}
	cache.DefaultWatchErrorHandler(ctx, r, err)
}

// takeBroken reports whether a watch broke since it was last asked.
func (w *driftWatch) takeBroken() bool {
	return w.broken.Swap(false)
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
