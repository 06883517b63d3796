package schemas_test

import (
	"os"
	"regexp"
	"testing"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/load"
)

// TestDocsNameEveryField keeps the references in docs/ in step with the
// schemas, the one place a field is declared: every field of every
// definition users write or read is named on its page.
func TestDocsNameEveryField(t *testing.T) {
	schema := compile(t)
	for _, tc := range []struct {
		doc  string
		defs []string
	}{
		{"../docs/fleet-format.md", []string{
			"#Cluster", "#Facts", "#Selector", "#LabelSelector", "#LabelSelectorRequirement",
			"#Spec", "#Bundle", "#Overlay", "#Helm", "#Kustomize", "#Manifests",
		}},
		{"../docs/status-format.md", []string{"#Status", "#BundleStatus"}},
	} {
		doc, err := os.ReadFile(tc.doc)
		if err != nil {
			t.Fatal(err)
		}
		missing := map[string]bool{}
		for _, def := range tc.defs {
			for _, field := range fields(t, schema.LookupPath(cue.ParsePath(def))) {
				if !missing[field] && !regexp.MustCompile(`\b`+regexp.QuoteMeta(field)+`\b`).Match(doc) {
					missing[field] = true
					t.Errorf("%s does not name %s's field %s", tc.doc, def, field)
				}
			}
		}
	}
}

// compile builds the schema files together, as the package they form.
func compile(t *testing.T) cue.Value {
	t.Helper()
	insts := load.Instances([]string{"."}, &load.Config{Dir: "."})
	if len(insts) != 1 || insts[0].Err != nil {
		t.Fatalf("loading the schemas: %v", insts[0].Err)
	}
	v := cuecontext.New().BuildInstance(insts[0])
	if err := v.Err(); err != nil {
		t.Fatal(err)
	}
	return v
}

// fields lists a struct's regular and optional fields, nested structs'
// included (#Kustomize's patch target, #Facts inside #Cluster).
func fields(t *testing.T, v cue.Value) []string {
	t.Helper()
	iter, err := v.Fields(cue.Optional(true))
	if err != nil {
		t.Fatalf("%v: %v", v.Path(), err)
	}
	var out []string
	for iter.Next() {
		out = append(out, iter.Selector().Unquoted())
		fv := iter.Value()
		for _, elem := range []cue.Value{fv, fv.LookupPath(cue.MakePath(cue.AnyIndex)), fv.LookupPath(cue.MakePath(cue.AnyString))} {
			if elem.Exists() && elem.IncompleteKind() == cue.StructKind {
				if nested, err := elem.Fields(cue.Optional(true)); err == nil && nested.Next() {
					out = append(out, fields(t, elem)...)
				}
			}
		}
	}
	return out
}
