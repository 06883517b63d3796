package fleet

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"cuelang.org/go/cue"
)

// The bundle spec is declared once, in schemas/fleet.cue; these tests keep
// the Go side from drifting from it. specFields is derived from the
// schema; the Go types that decode it are checked here, field by field
// and level by level.

// TestSpecInputsMatchTheSchema checks that decodeInputs reads every field
// of #Spec (values apart, read as JSON) and nothing else.
func TestSpecInputsMatchTheSchema(t *testing.T) {
	want := slices.DeleteFunc(slices.Concat(specFields(), []string{"dependsOn"}), func(f string) bool { return f == "values" })
	got := jsonFields(reflect.TypeFor[specInputs]())
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("specInputs reads %v; #Spec (+dependsOn, -values) has %v", got, want)
	}
	if len(specFields()) < 10 || !slices.Contains(specFields(), "driftPolicy") {
		t.Errorf("specFields %v: not read from #Spec", specFields())
	}
}

// TestSourceTypesMatchTheSchema checks the Go form of each source and of
// the apply options against their definitions, nested types included.
func TestSourceTypesMatchTheSchema(t *testing.T) {
	schema := schemaValue()
	for def, typ := range map[string]reflect.Type{
		"#Helm":      reflect.TypeFor[Helm](),
		"#Kustomize": reflect.TypeFor[Kustomize](),
		"#Manifests": reflect.TypeFor[Manifests](),
	} {
		compareWithSchema(t, def, schema.LookupPath(cue.ParsePath(def)), typ)
	}
	// ApplyOptions are the apply fields of #Spec (renderTimeout is the
	// render's, a field of Inputs).
	var apply []string
	for _, f := range specFields() {
		if !slices.Contains([]string{"namespace", "values", "renderTimeout", SourceHelm, SourceKustomize, SourceManifests, SourceResources}, f) {
			apply = append(apply, f)
		}
	}
	got := jsonFields(reflect.TypeFor[ApplyOptions]())
	slices.Sort(apply)
	slices.Sort(got)
	if !slices.Equal(got, apply) {
		t.Errorf("ApplyOptions has %v; #Spec's apply fields are %v", got, apply)
	}
	// Every source kind of #Spec has a constant.
	for _, kind := range sourceKinds {
		if !slices.Contains(specFields(), kind) {
			t.Errorf("source kind %s is not a field of #Spec", kind)
		}
	}
}

// jsonFields lists the JSON names of a struct type's fields.
func jsonFields(typ reflect.Type) []string {
	var out []string
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

// compareWithSchema checks that a Go struct type has exactly the fields of
// a CUE struct value, recursing into fields whose Go type is a struct (or
// a pointer, slice or map of one).
func compareWithSchema(t *testing.T, at string, v cue.Value, typ reflect.Type) {
	t.Helper()
	iter, err := v.Fields(cue.Optional(true))
	if err != nil {
		t.Fatalf("%s: %v", at, err)
	}
	var schemaFields []string
	for iter.Next() {
		schemaFields = append(schemaFields, iter.Selector().Unquoted())
	}
	goFields := jsonFields(typ)
	slices.Sort(schemaFields)
	slices.Sort(goFields)
	if !slices.Equal(goFields, schemaFields) {
		t.Errorf("%s: Go type %s has %v, the schema %v", at, typ, goFields, schemaFields)
		return
	}
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		ft, fv := f.Type, v.LookupPath(cue.MakePath(cue.Str(name).Optional()))
		for {
			switch ft.Kind() {
			case reflect.Pointer:
				ft = ft.Elem()
				continue
			case reflect.Slice:
				if ft.Elem().Kind() == reflect.Struct {
					ft, fv = ft.Elem(), fv.LookupPath(cue.MakePath(cue.AnyIndex))
					continue
				}
			case reflect.Map:
				if ft.Elem().Kind() == reflect.Struct {
					ft, fv = ft.Elem(), fv.LookupPath(cue.MakePath(cue.AnyString))
					continue
				}
			}
			break
		}
		if ft.Kind() == reflect.Struct {
			compareWithSchema(t, at+"."+name, fv, ft)
		}
	}
}
