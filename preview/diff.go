package preview

import (
	"maps"
	"slices"
	"strings"

	"github.com/fluxcd/pkg/ssa/utils"
	"github.com/wI2L/jsondiff"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flotilla-gitops/flotilla/render"
)

// masked replaces a Secret's values in a preview.
const masked = "*** (masked)"

// diffObjects compares a bundle's objects at base and at head, by
// identity: objects added, removed, and changed with their changed fields
// (JSON patch operations; a Secret's data and stringData values masked).
func diffObjects(base, head []*unstructured.Unstructured) []Object {
	before := map[string]*unstructured.Unstructured{}
	for _, o := range base {
		before[render.ObjectKey(o)] = o
	}
	after := map[string]*unstructured.Unstructured{}
	for _, o := range head {
		after[render.ObjectKey(o)] = o
	}
	var out []Object
	for _, key := range slices.Sorted(maps.Keys(after)) {
		old, ok := before[key]
		if !ok {
			out = append(out, Object{Object: key, Change: Added})
			continue
		}
		if fields := diffFields(old, after[key]); len(fields) > 0 {
			out = append(out, Object{Object: key, Change: Changed, Fields: fields})
		}
	}
	for _, key := range slices.Sorted(maps.Keys(before)) {
		if _, ok := after[key]; !ok {
			out = append(out, Object{Object: key, Change: Removed})
		}
	}
	return out
}

// diffFields is what changed in an object; a Secret's data and stringData
// values are masked (its metadata is not).
func diffFields(old, new *unstructured.Unstructured) []Field {
	patch, err := jsondiff.Compare(old.Object, new.Object)
	if err != nil {
		return []Field{{Op: "replace", Path: "", Old: "(not comparable)", New: err.Error()}}
	}
	secret := utils.IsSecret(new) || utils.IsSecret(old)
	fields := make([]Field, 0, len(patch))
	for _, op := range patch {
		f := Field{Op: op.Type, Path: op.Path, Old: op.OldValue, New: op.Value}
		if secret && (strings.HasPrefix(f.Path, "/data") || strings.HasPrefix(f.Path, "/stringData") || f.Path == "") {
			if f.Old != nil {
				f.Old = masked
			}
			if f.New != nil {
				f.New = masked
			}
		}
		fields = append(fields, f)
	}
	return fields
}
