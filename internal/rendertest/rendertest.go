// Package rendertest holds what the renderers' tests share: comparing
// rendered objects with a reference tool's, golden YAML, and writing test
// repositories (hostile ones included).
package rendertest

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/internal/golden"
	"github.com/flotilla-gitops/flotilla/render"
)

// ByKey indexes objects by render.ObjectKey.
func ByKey(objs []render.Object) map[string]*unstructured.Unstructured {
	m := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		m[render.ObjectKey(o.Object)] = o.Object
	}
	return m
}

// Keys lists the objects' keys in order.
func Keys(objs []render.Object) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = render.ObjectKey(o.Object)
	}
	return out
}

// CompareObjects checks that got holds exactly the objects of want (a
// reference tool's output), whatever the order.
func CompareObjects(t testing.TB, got, want []render.Object) {
	t.Helper()
	if len(want) == 0 {
		t.Fatal("the reference rendered nothing")
	}
	g, w := ByKey(got), ByKey(want)
	if len(g) != len(got) || len(w) != len(want) {
		t.Errorf("duplicate objects: %d/%d vs %d/%d", len(g), len(got), len(w), len(want))
	}
	for k, wo := range w {
		if gotObj, ok := g[k]; !ok {
			t.Errorf("missing %s", k)
		} else if !reflect.DeepEqual(gotObj.Object, wo.Object) {
			gy, _ := yaml.Marshal(gotObj.Object)
			wy, _ := yaml.Marshal(wo.Object)
			t.Errorf("%s differs:\n--- flotilla\n%s\n--- reference\n%s", k, gy, wy)
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			t.Errorf("extra %s", k)
		}
	}
}

// Section is a named list of objects in a golden file.
type Section struct {
	Name    string
	Objects []render.Object
}

// Golden compares the sections, as a YAML stream with each object's
// section and source in a comment, with the golden file at path.
func Golden(t testing.TB, path string, sections ...Section) {
	t.Helper()
	var b strings.Builder
	for _, s := range sections {
		for _, o := range s.Objects {
			data, err := yaml.Marshal(o.Object.Object)
			if err != nil {
				t.Fatal(err)
			}
			b.WriteString("---\n# " + s.Name + ": " + o.Source + "\n")
			b.Write(data)
		}
	}
	golden.Check(t, path, []byte(b.String()))
}

// Wrap turns objects into render.Objects with no source, for Golden.
func Wrap(objs []*unstructured.Unstructured) []render.Object {
	out := make([]render.Object, len(objs))
	for i, o := range objs {
		out[i] = render.Object{Object: o, Source: "rendered"}
	}
	return out
}

// WriteFile writes a file of a test repository (or of a folder outside
// it), creating folders.
func WriteFile(t testing.TB, dir, name, content string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Symlink makes dir/name a symlink to target, creating folders: the
// hostile repositories of the path tests.
func Symlink(t testing.TB, target, dir, name string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}
