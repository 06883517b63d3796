package fleet

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/cuecontext"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/token"
	cuejson "cuelang.org/go/encoding/json"
	"cuelang.org/go/encoding/jsonschema"
	"github.com/flotilla-gitops/flotilla/internal/metaschema"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

// ChartSchema is a Helm chart's values.schema.json.
type ChartSchema struct {
	// Name is where the schema comes from, as positions in messages name
	// it ("charts/web/values.schema.json").
	Name string
	JSON []byte
}

// SchemaSource gives the values schema of a Helm bundle's chart: nil, nil
// when the chart has none. Plans of several clusters call it at once, for
// the same charts again and again: it must be safe for concurrent use, and
// should remember what it read.
type SchemaSource func(h *spec.Helm) (*ChartSchema, error)

// CheckValues makes every plan of f check each Helm bundle's values
// against its chart's values.schema.json, before anything renders: the
// JSON Schema is lifted into CUE (cuelang.org/go/encoding/jsonschema) and
// unified with the bundle's values as the fleet wrote them, so that a
// violation fails the bundle at the fleet.cue line that set the value
// (with the schema's line), not as a template error at render time.
//
// Only what the fleet sets is checked: a property the schema requires may
// come from the chart's own values or a values file, which Helm merges
// and checks again when it renders; a null (which deletes a chart value in
// Helm) is left to Helm too.
func (f *Fleet) CheckValues(src SchemaSource) {
	f.schemas = src
	if f.onePass != nil && f.onePass.memo != nil {
		// Bundles kept unchecked are not reused unchecked.
		clear(f.onePass.memo.entries)
	}
}

// compiledSchema is a chart schema in a Fleet's CUE context, or why it
// could not be lifted into CUE; key identifies its content.
type compiledSchema struct {
	v   cue.Value
	err error
	key string
}

// CompileValuesSchema lifts a values schema into CUE, as plans do: an error
// says the schema cannot be checked by vet (Helm still checks it at render
// time).
func CompileValuesSchema(cs *ChartSchema) error {
	f := &Fleet{ctx: cuecontext.New()}
	return f.compileSchema(cs).err
}

// compileSchema compiles a schema once per Fleet (per schema the source
// gives: it gives the same one for a chart).
func (f *Fleet) compileSchema(cs *ChartSchema) compiledSchema {
	if c, ok := f.compiled[cs]; ok {
		return c
	}
	v, err := func() (cue.Value, error) {
		expr, err := cuejson.Extract(cs.Name, cs.JSON)
		if err != nil {
			return cue.Value{}, err
		}
		canonicalMetaSchema(expr)
		file, err := jsonschema.Extract(f.ctx.BuildExpr(expr), &jsonschema.Config{})
		if err != nil {
			return cue.Value{}, err
		}
		v := f.ctx.BuildFile(file)
		return v, v.Err()
	}()
	if err != nil {
		err = schemaError(cs.Name, err)
	}
	if f.compiled == nil {
		f.compiled = map[*ChartSchema]compiledSchema{}
	}
	c := compiledSchema{v: v, err: err, key: fmt.Sprintf("%s\x00%x", cs.Name, sha256.Sum256(cs.JSON))}
	f.compiled[cs] = c
	return c
}

// schemaError is why a values schema cannot be lifted into CUE, on one
// line: the first problem, at its place in the schema.
func schemaError(name string, err error) error {
	errs := cueerrors.Errors(err)
	if len(errs) == 0 {
		return fmt.Errorf("%s: %w", name, err)
	}
	format, args := errs[0].Msg()
	msg := strings.TrimSuffix(fmt.Sprintf(format, args...), ":")
	if pos := errs[0].Position(); pos.IsValid() {
		return fmt.Errorf("%s:%d:%d: %s", name, pos.Line(), pos.Column(), msg)
	}
	return fmt.Errorf("%s: %s", name, msg)
}

// canonicalMetaSchema rewrites the schema's `$schema` to the spelling CUE
// knows ("https://json-schema.org/draft-07/schema#" is the draft-07 that
// CUE knows only as "http://…"), for every spelling of a standard
// meta-schema that Helm's validator accepts offline. Positions stay.
func canonicalMetaSchema(expr ast.Expr) {
	root, ok := expr.(*ast.StructLit)
	if !ok {
		return
	}
	for _, d := range root.Elts {
		field, ok := d.(*ast.Field)
		if !ok {
			continue
		}
		name, _, err := ast.LabelName(field.Label)
		lit, isLit := field.Value.(*ast.BasicLit)
		if err != nil || name != "$schema" || !isLit || lit.Kind != token.STRING {
			continue
		}
		url, err := strconv.Unquote(lit.Value)
		if err != nil {
			continue
		}
		if c, ok := metaschema.Canonical(url); ok {
			lit.Value = strconv.Quote(c)
		}
	}
}

// checkValues checks the plan's Helm bundles against their charts' values
// schemas when CheckValues asked for it, and forgets the bundles' CUE
// values either way.
func (f *Fleet) checkValues(p *Plan) {
	for _, b := range p.Bundles {
		values := b.values
		b.values = cue.Value{}
		if f.schemas == nil || b.Failed() || b.Source.Helm == nil || !values.Exists() {
			continue
		}
		cs, err := f.schemas(b.Source.Helm)
		if err != nil {
			b.Errors = append(b.Errors, &Diagnostic{Clusters: []string{p.Cluster.Name}, Bundle: b.Name, Path: "helm",
				Message: err.Error(), Positions: positionsOf([]token.Pos{f.sourcePos(b.Name, spec.KindHelm)})})
			continue
		}
		if cs == nil {
			continue
		}
		schema := f.compileSchema(cs)
		if schema.err != nil {
			continue // not the fleet's problem: Helm checks the values when it renders
		}
		// Clusters often get the same values: a check that passed for them
		// passes again (a violation is worked out each time, for the
		// positions of this cluster's evaluation).
		valid := fmt.Sprintf("%s\x00%x", schema.key, sha256.Sum256(b.Values))
		if f.validValues[valid] {
			continue
		}
		ds := f.violations(b, values, schema.v, cs.Name, p.Cluster.Name)
		if len(ds) == 0 {
			if f.validValues == nil {
				f.validValues = map[string]bool{}
			}
			f.validValues[valid] = true
		}
		b.Errors = append(b.Errors, ds...)
	}
}

// violations checks the bundle's final values (defaults chosen, overlays
// applied: what Helm would get) against the schema, and positions each
// violation where the fleet wrote the value, then in the schema.
func (f *Fleet) violations(b *Bundle, values, schema cue.Value, schemaFile, cluster string) Diagnostics {
	data := f.ctx.CompileBytes(b.Values)
	if data.Err() != nil {
		return nil
	}
	verr := nonNull(data.Unify(schema).Validate(), data)
	if verr == nil {
		return nil
	}
	// The path of each error, as the diagnostics name it, to find where the
	// fleet wrote the value.
	paths := map[string][]string{}
	for _, e := range cueerrors.Errors(verr) {
		paths[strings.Join(e.Path(), ".")] = e.Path()
	}
	ds := innermost(fromCUE(verr))
	for _, d := range ds {
		var schemaPos []Position
		for _, pos := range d.Positions {
			if pos.File == schemaFile {
				schemaPos = append(schemaPos, pos)
			}
		}
		d.Positions = append(positionsOf(setters(values, paths[d.Path])), schemaPos...)
		d.Path = strings.TrimSuffix("values."+d.Path, ".")
		d.Clusters, d.Bundle = []string{cluster}, b.Name
		d.Message += " (the chart's values.schema.json)"
	}
	return ds
}

// innermost leaves out a violation of a value that has a violation inside
// it: with a schema that allows several types at a level ("no allowed
// alternative accepts the value: conflicting values {…} and bool …"), the
// inner violation is the one a person fixes; the outer is CUE's account of
// every alternative it tried.
func innermost(ds Diagnostics) Diagnostics {
	var out Diagnostics
	for _, d := range ds {
		if !slices.ContainsFunc(ds, func(o *Diagnostic) bool { return pathUnder(d.Path, o.Path) }) {
			out = append(out, d)
		}
	}
	return out
}

// setters are the places in the fleet that set the value at path of
// values: the conjunct that gives the final value (an overlay's, say,
// over a base's default), or every place that writes a part of it.
func setters(values cue.Value, path []string) []token.Pos {
	v := values
	for _, part := range path {
		sel := cue.Str(part)
		if i, err := strconv.Atoi(part); err == nil && v.IncompleteKind() == cue.ListKind {
			sel = cue.Index(i)
		}
		next := v.LookupPath(cue.MakePath(sel))
		if !next.Exists() {
			break
		}
		v = next
	}
	final, _ := v.Default()
	if op, args := v.Expr(); op == cue.AndOp {
		for _, a := range args {
			if a.IsConcrete() && a.Kind() != cue.StructKind && a.Kind() != cue.ListKind && a.Equals(final) && a.Pos().IsValid() {
				return []token.Pos{a.Pos()}
			}
		}
	}
	if ps := userPositions(v); len(ps) > 0 {
		return ps
	}
	return []token.Pos{v.Pos()}
}

// nonNull leaves out of err the errors about a value the fleet set to
// null: Helm deletes such a key from the chart's values before it checks
// them.
func nonNull(err error, values cue.Value) error {
	if err == nil {
		return nil
	}
	prefix := len(values.Path().Selectors())
	var kept cueerrors.Error
	for _, e := range cueerrors.Errors(err) {
		path := e.Path()
		if len(path) > prefix {
			var sels []cue.Selector
			for _, part := range path[prefix:] {
				sels = append(sels, cue.Str(part))
			}
			if values.LookupPath(cue.MakePath(sels...)).IsNull() {
				continue
			}
		}
		kept = cueerrors.Append(kept, e)
	}
	if kept == nil {
		return nil
	}
	return kept
}
