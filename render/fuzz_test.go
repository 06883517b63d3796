package render_test

import (
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/render"
)

// FuzzDecodeObjects decodes arbitrary manifest files: never a panic; every
// object decoded has an apiVersion and a kind; an error never repeats a
// value of the input (a Secret's data, say). Seeds:
// testdata/fuzz/FuzzDecodeObjects and the cases below.
func FuzzDecodeObjects(f *testing.F) {
	for _, seed := range []string{
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '1'}\n---\napiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Secret, metadata: {name: s}}]\n",
		`[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}]`,
		"kind: Secret\nmetadata: {name: s}\ndata: {token: c2VjcmV0LXZhbHVlLXh5eg==}\n",
		"a: &a [*a, *a]\n",
		"---\n---\nnull\n",
		"apiVersion: 1\nkind: [x]\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := render.DecodeObjects(data, "f.yaml")
		if err != nil {
			if strings.Contains(err.Error(), "c2VjcmV0LXZhbHVlLXh5eg") {
				t.Fatalf("the error shows a value of the input: %v", err)
			}
			return
		}
		for _, o := range objs {
			if o.Object.GetAPIVersion() == "" || o.Object.GetKind() == "" {
				t.Fatalf("decoded an object without apiVersion or kind: %v", o.Object.Object)
			}
		}
	})
}
