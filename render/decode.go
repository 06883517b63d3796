package render

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/flotilla-gitops/flotilla/internal/errtext"
)

// DecodeObjects reads every Kubernetes object of a YAML (multi-document)
// or JSON stream, or of a JSON array (CUE `resources`). Empty documents are
// skipped, `List` kinds are expanded into their items, and each object is
// tagged with source and its document number for error messages. Numbers
// are decoded as Kubernetes does (integers as int64).
func DecodeObjects(data []byte, source string) ([]Object, error) {
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(trimmed, &items); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		var out []Object
		for i, item := range items {
			objs, err := decodeOne(item, fmt.Sprintf("%s[%d]", source, i))
			if err != nil {
				return nil, err
			}
			out = append(out, objs...)
		}
		return out, nil
	}

	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []Object
	for doc := 1; ; doc++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("%s (document %d): %w", source, doc, err)
		}
		if t := bytes.TrimSpace(raw); len(t) == 0 || bytes.Equal(t, []byte("null")) || bytes.Equal(t, []byte("{}")) {
			continue
		}
		objs, err := decodeOne(raw, fmt.Sprintf("%s (document %d)", source, doc))
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
}

// decodeOne decodes one JSON object, expanding a List. Its type is checked
// first, with errors of our own: apimachinery's would print the whole
// object, Secret values included.
func decodeOne(raw []byte, source string) ([]Object, error) {
	var head struct {
		APIVersion any `json:"apiVersion"`
		Kind       any `json:"kind"`
		Metadata   struct {
			Name any `json:"name"`
		} `json:"metadata"`
	}
	// Case-sensitive, as the object decoder is: "ApiVersion" is not
	// apiVersion.
	if err := utiljson.Unmarshal(raw, &head); err != nil {
		return nil, fmt.Errorf("%s: not a Kubernetes object: a document must be a mapping with apiVersion, kind and metadata", source)
	}
	apiVersion, ok1 := orEmpty(head.APIVersion)
	kind, ok2 := orEmpty(head.Kind)
	name, ok3 := orEmpty(head.Metadata.Name)
	if !ok1 || !ok2 || !ok3 {
		return nil, fmt.Errorf("%s: not a Kubernetes object: apiVersion, kind and metadata.name must be strings", source)
	}
	if err := checkType(apiVersion, kind, name); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	obj, err := runtime.Decode(unstructured.UnstructuredJSONScheme, raw)
	if err != nil {
		return nil, fmt.Errorf("%s: not a Kubernetes object: %s", source, errtext.Error(err))
	}
	switch o := obj.(type) {
	case *unstructured.Unstructured:
		return []Object{{Object: o, Source: source}}, nil
	case *unstructured.UnstructuredList:
		var out []Object
		for i := range o.Items {
			item := &o.Items[i]
			if err := checkType(item.GetAPIVersion(), item.GetKind(), item.GetName()); err != nil {
				return nil, fmt.Errorf("%s: item %d of the %s: %w", source, i, o.GetKind(), err)
			}
			out = append(out, Object{Object: item, Source: source})
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%s: unexpected %T", source, obj)
	}
}

// orEmpty returns v as a string: "" when absent, false when not a string.
func orEmpty(v any) (string, bool) {
	if v == nil {
		return "", true
	}
	s, ok := v.(string)
	return s, ok
}
