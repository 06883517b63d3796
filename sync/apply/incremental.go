package apply

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/jsondiff"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Applying in proportion to the change (issue 39). The inventory records,
// for each object applied in full, a digest of its rendered form. A
// bundle synced with Incremental applies only the objects whose rendered
// form changed since, the new ones, and — when the bundle's render
// changed — those without a digest, Secrets among them (their digest is
// not kept: a hash of a weak secret value in a readable ConfigMap could be
// guessed); the others cost no request at all, unless the caller cannot vouch that their live copies are as last
// applied (Bundle.Unmoved: the agent's watch saw them change or go, or
// does not watch their kind), and then they are dry-run and corrected or
// reported as a full sync does. The caller sets Incremental only after a
// full pass it trusts (not after a restart, a watch that broke, a change
// of the cluster's API, or past the full-sync interval).

// objectDigest identifies a rendered object: 128 bits of the SHA-256 of
// its JSON (map keys sorted), base64url; "" for a Secret, or an object
// that does not encode.
func objectDigest(o *unstructured.Unstructured) string {
	if o.GetKind() == "Secret" && o.GroupVersionKind().Group == "" {
		return ""
	}
	data, err := json.Marshal(o.Object)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(data)
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// objectDigests are the digests of the objects, by object.
func objectDigests(objects []*unstructured.Unstructured) map[object.ObjMetadata]string {
	out := make(map[object.ObjMetadata]string, len(objects))
	for _, o := range objects {
		out[object.UnstructuredToObjMetadata(o)] = objectDigest(o)
	}
	return out
}

// changedSince splits the objects into those whose rendered form changed
// since the inventory (held, by object) recorded them (new, another version or digest, or
// no digest: a Secret, an entry from before digests, one that failed) and
// the others. When the bundle renders as the inventory last recorded it
// (sameRender: its digest, written by a sync that succeeded), no object
// it holds changed, digest or not.
func changedSince(held map[object.ObjMetadata]Entry, objects []*unstructured.Unstructured, digests map[object.ObjMetadata]string, sameRender bool) (changed, same []*unstructured.Unstructured) {
	for _, o := range objects {
		id := object.UnstructuredToObjMetadata(o)
		e, ok := held[id]
		if d := digests[id]; ok && e.Version == o.GroupVersionKind().Version && (sameRender || (d != "" && e.Digest == d)) {
			same = append(same, o)
			continue
		}
		changed = append(changed, o)
	}
	return changed, same
}

// withDigests gives their digests to the entries of the objects the
// change set applied (or found unchanged) and of those vouched for (kept
// by an incremental sync, or compared by the dry run); the others get
// none, so that the next incremental sync applies them.
//
// An object whose drift was only reported (driftPolicy report) keeps its
// digest: the digest says what Git rendered and was last applied, not
// that the live copy still matches; the agent's watch sees the live copy
// moved (Bundle.Unmoved) and every pass dry-runs it again, reporting it.
func withDigests(entries []Entry, cs *ssa.ChangeSet, digests map[object.ObjMetadata]string, vouched map[object.ObjMetadata]bool) []Entry {
	done := map[object.ObjMetadata]bool{}
	if cs != nil {
		for _, e := range cs.Entries {
			if e.Action != ssa.SkippedAction {
				done[e.ObjMetadata] = true
			}
		}
	}
	for i := range entries {
		if id := entries[i].ID; done[id] || vouched[id] {
			entries[i].Digest = digests[id]
		}
	}
	return entries
}

// markChecked records the objects the dry run compared with their live
// copy (missing ones are applied, and get their digest from that).
func markChecked(vouched map[object.ObjMetadata]bool, diffs []*jsondiff.Diff) {
	for _, d := range diffs {
		if d.Type == jsondiff.DiffTypeNone || d.Type == jsondiff.DiffTypeUpdate {
			vouched[object.UnstructuredToObjMetadata(d.DesiredObject.(*unstructured.Unstructured))] = true
		}
	}
}

// inSyncVersions are the live copies' versions (resourceVersion,
// generation, managedFields) of the objects the dry run found as rendered.
func inSyncVersions(diffs []*jsondiff.Diff) map[object.ObjMetadata]metav1.ObjectMeta {
	out := map[object.ObjMetadata]metav1.ObjectMeta{}
	for _, d := range diffs {
		if d.Type != jsondiff.DiffTypeNone || d.ClusterObject == nil {
			continue
		}
		if live, ok := d.ClusterObject.(*unstructured.Unstructured); ok && live.GetResourceVersion() != "" {
			out[object.UnstructuredToObjMetadata(d.DesiredObject.(*unstructured.Unstructured))] = metav1.ObjectMeta{
				ResourceVersion: live.GetResourceVersion(), Generation: live.GetGeneration(), ManagedFields: live.GetManagedFields()}
		}
	}
	return out
}

// definitionsChanged reports whether an incremental bundle of the sync
// applies a CustomResourceDefinition that is new or changed: the objects
// of its kinds may then need to be applied again (a new stored version, a
// changed schema or default), so the whole sync is full.
func definitionsChanged(bundles []Bundle, current map[string]*Inventory) bool {
	for _, b := range bundles {
		if !b.Incremental || b.Err != nil {
			continue
		}
		var held map[object.ObjMetadata]Entry
		if inv := current[b.Name]; inv != nil {
			held = inv.index()
		}
		for _, o := range b.Objects {
			gvk := o.GroupVersionKind()
			if gvk.Group != "apiextensions.k8s.io" || gvk.Kind != "CustomResourceDefinition" {
				continue
			}
			if e, ok := held[object.UnstructuredToObjMetadata(o)]; !ok || e.Digest == "" || e.Digest != objectDigest(o) {
				return true
			}
		}
	}
	return false
}
