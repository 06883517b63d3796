package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/fluxcd/cli-utils/pkg/object"
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
// notify for an update of an object that moved (another manager wrote its
// main resource after Flotilla's last apply or check: status and other
// subresources are not drift) or for a deletion. The next pass then
// dry-runs those objects and corrects or reports; an object a dry run
// found as rendered is unmoved again while it stays as the dry run saw it
// (vouch). Kinds the agent may not list (least-privilege RBAC) are not
// watched; their drift is found by the full passes.
//
// The watch's cache also tells an incremental pass which objects it may
// skip (unmoved): those it holds that have not moved. A watch that broke
// (a watch error: the cache may have missed events until its relist)
// asks for a full pass instead (takeBroken).
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
	// checked are objects a dry run found as rendered, with the live
	// copy's metadata it compared (apply.BundleResult.InSync); lost are
	// objects whose fields Flotilla set someone removed or took (see
	// lostFields), until a dry run or an apply of Flotilla's.
	checked map[object.ObjMetadata]metav1.ObjectMeta
	lost    map[object.ObjMetadata]bool
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
		watched: map[schema.GroupVersionResource]bool{}, informers: map[schema.GroupKind]cache.SharedIndexInformer{},
		checked: map[object.ObjMetadata]metav1.ObjectMeta{}, lost: map[object.ObjMetadata]bool{}}, nil
}

// watch makes sure the kinds are watched; ctx ends the watches. Once the
// kinds it starts watching are listed, it asks for a pass if any of the
// applied objects of those kinds is missing: deleted before the watch
// began, which no event will tell.
func (w *driftWatch) watch(ctx context.Context, kinds []schema.GroupVersionKind, applied []object.ObjMetadata) {
	w.mu.Lock()
	defer w.mu.Unlock()
	started := map[schema.GroupKind]cache.SharedIndexInformer{}
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
		gk := gvk.GroupKind()
		w.informers[gk] = informer
		_, _ = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			// The first list may already show a change made between the
			// apply and the start of the watch.
			AddFunc: func(obj any) {
				if n, ok := obj.(*metav1.PartialObjectMetadata); ok && w.moved(gk, n) {
					w.notify()
				}
			},
			UpdateFunc: func(oldObj, newObj any) {
				o, ok1 := oldObj.(*metav1.PartialObjectMetadata)
				n, ok2 := newObj.(*metav1.PartialObjectMetadata)
				if !ok1 || !ok2 || o.ResourceVersion == n.ResourceVersion {
					return
				}
				w.noteOurs(gk, o, n)
				if w.moved(gk, n) {
					w.notify()
				}
			},
			DeleteFunc: func(obj any) {
				w.forget(gk, obj)
				w.notify()
			},
		})
		started[gk] = informer
	}
	if len(started) > 0 {
		w.factory.Start(ctx.Done())
		go w.checkPresent(ctx, started, applied)
	}
}

// forget drops what the watch noted of a deleted object, so that its
// notes last no longer than the object.
func (w *driftWatch) forget(gk schema.GroupKind, obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	o, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return
	}
	id := object.ObjMetadata{Namespace: o.Namespace, Name: o.Name, GroupKind: gk}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.checked, id)
	delete(w.lost, id)
}

// checkPresent waits for the informers' first lists and asks for a pass
// if an applied object of their kinds is not there.
func (w *driftWatch) checkPresent(ctx context.Context, informers map[schema.GroupKind]cache.SharedIndexInformer, applied []object.ObjMetadata) {
	for _, informer := range informers {
		if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
			return
		}
	}
	for _, id := range applied {
		if informer := informers[id.GroupKind]; informer != nil {
			if _, ok, err := informer.GetStore().GetByKey(storeKey(id)); err == nil && !ok {
				w.notify()
				return
			}
		}
	}
}

// storeKey is an object's key in an informer's store.
func storeKey(id object.ObjMetadata) string {
	if id.Namespace == "" {
		return id.Name
	}
	return id.Namespace + "/" + id.Name
}

// noteOurs notes, from an update, whether someone removed or took fields
// Flotilla set (lostFields), or Flotilla applied again (which ends that).
func (w *driftWatch) noteOurs(gk schema.GroupKind, old, updated *metav1.PartialObjectMetadata) {
	id := object.ObjMetadata{Namespace: updated.Namespace, Name: updated.Name, GroupKind: gk}
	a, b := mainEntryOf(old, w.fieldManager), mainEntryOf(updated, w.fieldManager)
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case lostFields(a, b):
		w.lost[id] = true
	case a != nil && b != nil && !a.Time.Equal(b.Time):
		delete(w.lost, id) // Flotilla applied it again
	}
}

// lostFields reports whether an update changed Flotilla's entry of an
// object's main resource without an apply of Flotilla's (the same time,
// other fields, or no entry left): someone removed fields Flotilla set —
// an edit deleting a line, a patch to null — or took them through a
// subresource (kubectl scale). Such a change leaves no later entry of
// the editor's, so changedByOthers cannot see it.
func lostFields(before, after *metav1.ManagedFieldsEntry) bool {
	switch {
	case before == nil:
		return false
	case after == nil:
		return true
	case !before.Time.Equal(after.Time):
		return false
	default:
		return !bytes.Equal(fieldsOf(before), fieldsOf(after))
	}
}

// mainEntryOf is the field manager's entry of an object's main resource.
func mainEntryOf(o *metav1.PartialObjectMetadata, manager string) *metav1.ManagedFieldsEntry {
	for i, e := range o.ManagedFields {
		if e.Manager == manager && e.Subresource == "" {
			return &o.ManagedFields[i]
		}
	}
	return nil
}

func fieldsOf(e *metav1.ManagedFieldsEntry) []byte {
	if e.FieldsV1 == nil {
		return nil
	}
	return e.FieldsV1.GetRawBytes()
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
	obj, ok, err := informer.GetStore().GetByKey(storeKey(e.ID))
	if err != nil || !ok {
		return false
	}
	o, isMeta := obj.(*metav1.PartialObjectMetadata)
	return isMeta && !w.moved(e.ID.GroupKind, o)
}

// moved reports whether another manager may have changed a live object
// since Flotilla applied it, or since a dry run last found it as
// rendered: it wrote the object's main resource after Flotilla's last
// apply, and the object is not as that dry run saw it. "As it saw it" is
// the same resourceVersion, or — for a kind that counts generations — the
// same generation and the same main-resource managedFields (a Deployment
// whose controller annotated it, then updated only its status). A second
// change by the same manager within the second of the check, to fields
// it already owned, is the one thing this cannot tell: the full pass
// finds it. An object whose fields Flotilla set someone removed or took
// (lostFields) has moved too, until a dry run or an apply.
func (w *driftWatch) moved(gk schema.GroupKind, o *metav1.PartialObjectMetadata) bool {
	id := object.ObjMetadata{Namespace: o.Namespace, Name: o.Name, GroupKind: gk}
	w.mu.Lock()
	seen, ok := w.checked[id]
	lost := w.lost[id]
	w.mu.Unlock()
	if lost {
		return true
	}
	if !changedByOthers(o, w.fieldManager) {
		return false
	}
	switch {
	case !ok:
		return true
	case seen.ResourceVersion == o.ResourceVersion:
		return false
	default:
		return o.Generation == 0 || o.Generation != seen.Generation || !sameMainFields(seen.ManagedFields, o.ManagedFields)
	}
}

// sameMainFields reports whether two objects' managedFields of their main
// resource (not status or other subresources) are the same.
func sameMainFields(a, b []metav1.ManagedFieldsEntry) bool {
	main := func(entries []metav1.ManagedFieldsEntry) []metav1.ManagedFieldsEntry {
		return slices.DeleteFunc(slices.Clone(entries), func(e metav1.ManagedFieldsEntry) bool { return e.Subresource != "" })
	}
	return slices.EqualFunc(main(a), main(b), func(x, y metav1.ManagedFieldsEntry) bool {
		return x.Manager == y.Manager && x.Operation == y.Operation && x.APIVersion == y.APIVersion &&
			x.Time.Equal(y.Time) && bytes.Equal(fieldsOf(&x), fieldsOf(&y))
	})
}

// vouch notes the objects a pass's dry run found as rendered, with the
// live copies' metadata it compared (see moved).
func (w *driftWatch) vouch(r *apply.Result) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range r.Bundles {
		maps.Copy(w.checked, b.InSync)
		for id := range b.InSync {
			delete(w.lost, id)
		}
	}
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
