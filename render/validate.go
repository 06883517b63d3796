package render

import (
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/scheme"
	kjson "sigs.k8s.io/json"
)

// checkIdentity refuses, at render time, an object the API server would
// refuse for its identity: no apiVersion or kind, no name (generateName
// alone cannot be applied server-side: the object would be created anew
// on every sync), a name or namespace the API's rules reject. The error
// names the object as far as it can; the caller adds its source.
func checkIdentity(obj *unstructured.Unstructured) error {
	if err := checkType(obj.GetAPIVersion(), obj.GetKind(), obj.GetName()); err != nil {
		return err
	}
	gv, _ := schema.ParseGroupVersion(obj.GetAPIVersion())
	kind, name := obj.GetKind(), obj.GetName()
	what := fmt.Sprintf("%s %q", kind, name)
	if name == "" {
		if g := obj.GetGenerateName(); g != "" {
			return fmt.Errorf("%s has generateName %q but no name: server-side apply needs a name (the object would be created again on every sync)", kind, g)
		}
		return fmt.Errorf("%s has no metadata.name", kind)
	}
	if errs := nameRule(gv.WithKind(kind).GroupKind())(name); len(errs) > 0 {
		return fmt.Errorf("%s: invalid name: %s", what, strings.Join(errs, "; "))
	}
	if ns := obj.GetNamespace(); ns != "" {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return fmt.Errorf("%s: invalid namespace %q: %s", what, ns, strings.Join(errs, "; "))
		}
	}
	if err := checkMeta(obj); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return checkCRDName(obj)
}

// checkMeta refuses what every API server refuses whatever its version,
// so that a render fails (naming it) instead of the apply: a built-in kind
// or apiVersion in the wrong case, label keys and values and annotation
// keys that are not valid, and a Secret's data that is not base64. (vet
// checks more, CheckTypes: every field of a built-in kind.)
func checkMeta(obj *unstructured.Unstructured) error {
	gvk := obj.GroupVersionKind()
	if !scheme.Scheme.Recognizes(gvk) {
		if near := nearKind(gvk); near != "" {
			return fmt.Errorf("apiVersion %q, kind %q: no such kind (%s?)", obj.GetAPIVersion(), obj.GetKind(), near)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(obj.GetLabels())) {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("label key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(obj.GetLabels()[k]); len(errs) > 0 {
			return fmt.Errorf("label %s: invalid value: %s", k, strings.Join(errs, "; "))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(obj.GetAnnotations())) {
		if errs := validation.IsQualifiedName(strings.ToLower(k)); len(errs) > 0 {
			return fmt.Errorf("annotation key %q: %s", k, strings.Join(errs, "; "))
		}
	}
	if gvk.GroupKind() == (schema.GroupKind{Kind: "Secret"}) {
		data, _, _ := unstructured.NestedMap(obj.Object, "data")
		for _, k := range slices.Sorted(maps.Keys(data)) {
			v, ok := data[k].(string)
			if !ok {
				return fmt.Errorf("data.%s: not a base64 string", k)
			}
			if strings.HasPrefix(v, MaskedPrefix) {
				continue
			}
			if _, err := base64.StdEncoding.DecodeString(v); err != nil {
				return fmt.Errorf("data.%s: not base64 (%w); put plain text in stringData", k, err)
			}
		}
	}
	return nil
}

// checkCRDName refuses a CustomResourceDefinition whose name is not
// <spec.names.plural>.<spec.group>, as the API server refuses it.
func checkCRDName(obj *unstructured.Unstructured) error {
	if obj.GroupVersionKind().GroupKind() != (schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}) {
		return nil
	}
	plural, _, _ := unstructured.NestedString(obj.Object, "spec", "names", "plural")
	group, _, _ := unstructured.NestedString(obj.Object, "spec", "group")
	if want := plural + "." + group; plural != "" && group != "" && obj.GetName() != want {
		return fmt.Errorf("CustomResourceDefinition %q: the name must be <spec.names.plural>.<spec.group>, %q", obj.GetName(), want)
	}
	return nil
}

// nameRule is the API server's rule for names of the kind: DNS labels for
// Namespaces and Services, path segments for RBAC's kinds (which allow
// "system:controller:x"), DNS subdomains otherwise (every other built-in
// kind this cares about, and every custom resource).
func nameRule(gk schema.GroupKind) func(string) []string {
	switch gk {
	case schema.GroupKind{Kind: "Namespace"}, schema.GroupKind{Kind: "Service"}:
		return validation.IsDNS1123Label
	}
	if gk.Group == "rbac.authorization.k8s.io" {
		return content.IsPathSegmentName
	}
	return validation.IsDNS1123Subdomain
}

// checkType refuses an object without a usable apiVersion or kind.
func checkType(apiVersion, kind, name string) error {
	what := kind
	if what == "" {
		what = "an object"
	}
	if name != "" {
		what += fmt.Sprintf(" %q", name)
	}
	if apiVersion == "" {
		return fmt.Errorf("%s has no apiVersion", what)
	}
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil || gv.Version == "" {
		return fmt.Errorf("%s: apiVersion %q is not group/version or version", what, apiVersion)
	}
	if kind == "" {
		return fmt.Errorf("%s has no kind", what)
	}
	return nil
}

// CheckTypes refuses the objects of the Kubernetes API's own kinds that do
// not fit their Go types, as the API server would refuse them: a field the
// kind does not have, a value of the wrong type (replicas: "3", a port as
// a string, a ConfigMap's data holding a number), Secret data that is not
// base64. Kinds the client does not know (custom resources) are the
// cluster's schema's to check. Every misfit is named (kind, namespace and
// name), with what the decoder said; values are not repeated.
func CheckTypes(objs []*unstructured.Unstructured) error {
	var problems []string
	for _, obj := range objs {
		typed, err := scheme.Scheme.New(obj.GroupVersionKind())
		if err != nil {
			if near := nearKind(obj.GroupVersionKind()); near != "" {
				problems = append(problems, fmt.Sprintf("%s: apiVersion %q, kind %q: no such kind (%s?)", ObjectKey(obj), obj.GetAPIVersion(), obj.GetKind(), near))
			}
			continue
		}
		data, err := obj.MarshalJSON()
		if err != nil {
			continue
		}
		// As the API server decodes: case-sensitive, unknown and duplicate
		// fields reported, type errors with the field's path.
		strict, err := kjson.UnmarshalStrict(data, typed, kjson.DisallowUnknownFields)
		if err == nil && len(strict) > 0 {
			err = errors.Join(strict...)
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %s", ObjectKey(obj), strings.ReplaceAll(strings.TrimPrefix(err.Error(), "json: "), "\n", "; ")))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %s", "objects the API server would refuse", strings.Join(problems, "; "))
}

// nearKind is the API's own kind a mistyped one means, by case alone
// ("configmap" for ConfigMap, "V1" for v1), as "apiVersion: v1, kind:
// ConfigMap"; "" when there is none (a custom resource).
func nearKind(gvk schema.GroupVersionKind) string {
	for known := range scheme.Scheme.AllKnownTypes() {
		if known != gvk && strings.EqualFold(known.Kind, gvk.Kind) && strings.EqualFold(known.Group, gvk.Group) && strings.EqualFold(known.Version, gvk.Version) {
			return fmt.Sprintf("apiVersion: %s, kind: %s", known.GroupVersion(), known.Kind)
		}
	}
	return ""
}
