package apply

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/jsondiff"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Applying in proportion to the change (issue 39). The inventory records,
// for each object applied in full, a digest of its rendered form. A
// bundle synced with Incremental applies only the objects whose rendered
// form changed since, the new ones, those without a digest, and every
// Secret (whose digest is not kept: a hash of a weak secret value in a
// readable ConfigMap could be guessed); the others cost no request at
// all. The caller sets Incremental only when nothing else may have moved
// the live objects since its last full pass (no drift seen, no restart,
// a full pass recent enough): drift correction stays the full pass's.

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

// changedSince splits the objects into those to apply and the entries of
// those the inventory holds at the same version and digest.
func changedSince(inv *Inventory, objects []*unstructured.Unstructured, digests map[object.ObjMetadata]string) ([]*unstructured.Unstructured, []Entry) {
	held := inv.index()
	var apply []*unstructured.Unstructured
	var same []Entry
	for _, o := range objects {
		id := object.UnstructuredToObjMetadata(o)
		e, ok := held[id]
		if d := digests[id]; ok && d != "" && e.Digest == d && e.Version == o.GroupVersionKind().Version {
			same = append(same, e)
			continue
		}
		apply = append(apply, o)
	}
	return apply, same
}

// withDigests gives their digests to the entries of the objects the
// change set applied (or found unchanged) and of those the drift check
// found as rendered (inSync); others keep what they have (an incremental
// pass's skipped ones) or none, so that the next incremental pass applies
// them.
func withDigests(entries []Entry, cs *ssa.ChangeSet, digests map[object.ObjMetadata]string, inSync map[object.ObjMetadata]bool) []Entry {
	done := map[object.ObjMetadata]bool{}
	if cs != nil {
		for _, e := range cs.Entries {
			if e.Action != ssa.SkippedAction {
				done[e.ObjMetadata] = true
			}
		}
	}
	for i := range entries {
		if id := entries[i].ID; done[id] || inSync[id] {
			entries[i].Digest = digests[id]
		}
	}
	return entries
}

// markInSync records the objects the drift check found as rendered (a
// drift merely reported is not).
func markInSync(inSync map[object.ObjMetadata]bool, diffs []*jsondiff.Diff) {
	for _, d := range diffs {
		if d.Type == jsondiff.DiffTypeNone {
			inSync[object.UnstructuredToObjMetadata(d.DesiredObject.(*unstructured.Unstructured))] = true
		}
	}
}
