package spec_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/cuecontext"

	"github.com/flotilla-gitops/flotilla/schemas"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

// The bundle spec is declared once, in schemas/fleet.cue; these tests keep
// its Go form from drifting from it, field by field and level by level.

func schema(t *testing.T) cue.Value {
	t.Helper()
	src, err := schemas.FS.ReadFile(schemas.FleetFile)
	if err != nil {
		t.Fatal(err)
	}
	v := cuecontext.New().CompileBytes(src)
	if err := v.Err(); err != nil {
		t.Fatal(err)
	}
	return v
}

// fieldsOf lists a CUE struct's regular and optional fields.
func fieldsOf(t *testing.T, v cue.Value) []string {
	t.Helper()
	iter, err := v.Fields(cue.Optional(true))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for iter.Next() {
		out = append(out, iter.Selector().Unquoted())
	}
	return out
}

// TestSourceTypesMatchTheSchema checks the Go form of each source kind and
// of the apply options against their definitions, nested types included.
func TestSourceTypesMatchTheSchema(t *testing.T) {
	s := schema(t)
	for def, typ := range map[string]reflect.Type{
		"#Helm":      reflect.TypeFor[spec.Helm](),
		"#Kustomize": reflect.TypeFor[spec.Kustomize](),
		"#Manifests": reflect.TypeFor[spec.Manifests](),
	} {
		compareWithSchema(t, def, s.LookupPath(cue.ParsePath(def)), typ)
	}

	specFields := fieldsOf(t, s.LookupPath(cue.ParsePath("#Spec")))
	// Every source kind is a field of #Spec, and Source has a field of
	// that name for each.
	source := jsonFields(reflect.TypeFor[spec.Source]())
	for _, kind := range spec.Kinds {
		if !slices.Contains(specFields, kind.String()) {
			t.Errorf("source kind %s is not a field of #Spec", kind)
		}
		if !slices.Contains(source, kind.String()) {
			t.Errorf("spec.Source has no field %s", kind)
		}
	}
	// ApplyOptions are #Spec's fields less its namespace, values, render
	// timeout (the render's) and sources.
	var apply []string
	for _, f := range specFields {
		if !slices.Contains([]string{"namespace", "values", "renderTimeout"}, f) && !slices.Contains(spec.Kinds, spec.Kind(f)) {
			apply = append(apply, f)
		}
	}
	got := jsonFields(reflect.TypeFor[spec.ApplyOptions]())
	slices.Sort(apply)
	slices.Sort(got)
	if !slices.Equal(got, apply) {
		t.Errorf("ApplyOptions has %v; #Spec's apply fields are %v", got, apply)
	}
}

// TestDriftPoliciesMatchTheSchema: the constants are the values #Spec
// allows, and nothing else is.
func TestDriftPoliciesMatchTheSchema(t *testing.T) {
	field := schema(t).LookupPath(cue.MakePath(cue.Def("#Spec"), cue.Str("driftPolicy").Optional()))
	ctx := cuecontext.New()
	for _, p := range []spec.DriftPolicy{spec.DriftCorrect, spec.DriftReport} {
		if err := field.Unify(ctx.CompileString(`"` + p.String() + `"`)).Validate(cue.Concrete(true)); err != nil {
			t.Errorf("drift policy %s: %v", p, err)
		}
	}
	if err := field.Unify(ctx.CompileString(`"ignore"`)).Validate(cue.Concrete(true)); err == nil {
		t.Errorf("the schema allows a drift policy the Go constants lack")
	}
	_, alternatives := field.Expr()
	if len(alternatives) != 2 {
		t.Errorf("#Spec.driftPolicy has %d alternatives, the Go constants 2", len(alternatives))
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
	schemaFields := fieldsOf(t, v)
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
		if ft.Kind() == reflect.Struct && ft.PkgPath() == reflect.TypeFor[spec.Helm]().PkgPath() {
			compareWithSchema(t, at+"."+name, fv, ft)
		}
	}
}
