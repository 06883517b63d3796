package render_test

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flotilla-gitops/flotilla/render"
)

// TestCheckTypes: objects of the API's own kinds that do not fit their
// types are refused as the API server would refuse them, each named with
// the field; custom resources and objects that fit pass; values are not
// repeated (a Secret's data stays out of the message).
func TestCheckTypes(t *testing.T) {
	obj := func(m map[string]any) *unstructured.Unstructured { return &unstructured.Unstructured{Object: m} }
	meta := func(name string) map[string]any { return map[string]any{"name": name, "namespace": "x"} }
	good := []*unstructured.Unstructured{
		obj(map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("fine"), "spec": map[string]any{"replicas": int64(3),
			"template": map[string]any{"spec": map[string]any{"containers": []any{map[string]any{"name": "c", "image": "i",
				"resources": map[string]any{"requests": map[string]any{"cpu": "250m"}}}}}}}}),
		obj(map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("ok"), "data": map[string]any{"days": "365"}}),
		obj(map[string]any{"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": meta("m"), "spec": map[string]any{"anything": int64(1)}}),
	}
	if err := render.CheckTypes(good); err != nil {
		t.Errorf("objects that fit: %v", err)
	}
	bad := []*unstructured.Unstructured{
		obj(map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("a"), "spec": map[string]any{"replicas": "3"}}),
		obj(map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": meta("s"), "data": map[string]any{"password": "hunter2!"}}),
		obj(map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("c"), "data": map[string]any{"days": int64(365)}}),
		obj(map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("u"), "dta": map[string]any{}}),
		obj(map[string]any{"apiVersion": "v1", "kind": "configmap", "metadata": meta("lower")}),
		obj(map[string]any{"apiVersion": "V1", "kind": "Service", "metadata": meta("upper")}),
	}
	err := render.CheckTypes(bad)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"Deployment.apps x/a: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32",
		"Secret x/s: illegal base64 data",
		"ConfigMap x/c: cannot unmarshal number into Go struct field ConfigMap.data of type string",
		`ConfigMap x/u: unknown field "dta"`,
		`configmap x/lower: apiVersion "v1", kind "configmap": no such kind (apiVersion: v1, kind: ConfigMap?)`,
		`Service x/upper: apiVersion "V1", kind "Service": no such kind (apiVersion: v1, kind: Service?)`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v\nlacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("a Secret value in the message: %v", err)
	}
}
