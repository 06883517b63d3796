package fleet

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/token"

	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

// Bundle is one bundle as planned for one cluster: everything a renderer
// and the apply engine need, concrete, plus why it was selected.
type Bundle struct {
	Inputs

	// SelectedBecause says which target conditions chose the cluster.
	SelectedBecause []string `json:"selectedBecause"`
	// Overlays are the overlays that matched, in fleet order.
	Overlays []MatchedOverlay `json:"overlays,omitempty"`

	// InputsDigest identifies the Inputs (not the reasons): two clusters
	// with the same digest for a bundle render it identically, and an
	// unchanged digest means nothing to re-render.
	InputsDigest string `json:"inputsDigest,omitempty"`

	// Rollout is set when the bundle has a rollout of its own (the plan's
	// applies otherwise).
	Rollout *Rollout `json:"rollout,omitempty"`

	// Tenant is set for a tenant's bundle under the fleet's tenancy
	// policy: what its rendered objects may be. Nil for platform bundles
	// and in fleets without a policy.
	Tenant *Grant `json:"tenant,omitempty"`

	// Errors are set when the bundle could not be evaluated for this cluster.
	Errors Diagnostics `json:"errors,omitempty"`

	dependsOnPos token.Pos
	invalid      bool // Errors come from the schema, whatever the cluster
	// values is the bundle's `values` as evaluated, with the positions
	// that wrote each part, while Plan checks them against the chart's
	// values schema; cleared before Plan returns.
	values cue.Value
}

// Inputs are what a bundle's rendering and applying depend on.
type Inputs struct {
	Name      string      `json:"name"`
	Namespace string      `json:"namespace,omitempty"`
	Source    spec.Source `json:"source"`
	// Values are the bundle's concrete values as JSON with sorted keys.
	Values    json.RawMessage   `json:"values,omitempty"`
	DependsOn []string          `json:"dependsOn,omitempty"`
	Apply     spec.ApplyOptions `json:"apply"`
	// RenderTimeout bounds the bundle's render (a Go duration); empty for
	// the renderer's default.
	RenderTimeout string `json:"renderTimeout,omitempty"`
}

// Failed reports whether the bundle could not be evaluated.
func (b *Bundle) Failed() bool { return len(b.Errors) > 0 }

// MatchedOverlay is an overlay that applied to the bundle.
type MatchedOverlay struct {
	// Index is the overlay's position in the bundle's `overlays`.
	Index int `json:"index"`
	// Name is the overlay's `name`, or "#<index>".
	Name    string   `json:"name"`
	Because []string `json:"because"`
	// Position is where the overlay is written.
	Position *Position `json:"position,omitempty"`
}

// decodeInputs reads the concrete inputs of the bundle after its overlays
// were applied. Every field must be concrete: an open constraint left by a
// cluster class (`int & >=3`) without a value is an error here.
func (b *Bundle) decodeInputs(v cue.Value) error {
	var fields specInputs
	var ds Diagnostics
	for _, field := range inputFields() {
		fv := lookup(v, field)
		if !fv.Exists() {
			continue
		}
		if err := fv.Validate(cue.Concrete(true)); err != nil {
			ds = append(ds, incompleteDiagnostics(v, err)...)
		}
	}
	if len(ds) > 0 {
		return ds
	}
	if err := v.Decode(&fields); err != nil {
		return err
	}
	if err := oneSource(v); err != nil {
		return err
	}
	values, err := canonicalJSON(lookup(v, "values"))
	if err != nil {
		return err
	}
	in, problem := fields.inputs()
	if problem != nil {
		return diagnostic(problem.field, problem.message, userPos(lookup(v, problem.field)))
	}
	b.setInputs(v, in, values)
	return nil
}

// setInputs sets what decodeInputs and decodeInputsFast read.
func (b *Bundle) setInputs(v cue.Value, in Inputs, values json.RawMessage) {
	in.Name = b.Name
	in.Values = values
	b.Inputs = in
	b.values = lookup(v, "values")
	b.dependsOnPos = userPos(lookup(v, "dependsOn"))
}

// decodeInputsFast is decodeInputs without the error reporting: each
// field is looked up and read on its own (scalars decoded, the rest
// exported as JSON), which costs a fraction of decoding the whole bundle
// (every struct CUE decodes or exports has its fields sorted first). The
// fields are the schema's (inputFields), found in specInputs by their JSON
// names. It returns false, having set nothing, when anything is not as
// expected — a field the Go form does not know among them — and
// decodeInputs then reads the bundle again and reports the problem with
// its positions.
func (b *Bundle) decodeInputsFast(v cue.Value) bool {
	var fields specInputs
	target := reflect.ValueOf(&fields).Elem()
	index := specInputIndex()
	for _, field := range inputFields() {
		fv := lookup(v, field)
		if !fv.Exists() || field == "values" {
			continue
		}
		i, ok := index[field]
		if !ok || !readField(fv, target.Field(i)) {
			return false
		}
	}
	if len(fields.kinds()) != 1 {
		return false
	}
	values, err := canonicalJSON(lookup(v, "values"))
	if err != nil {
		return false
	}
	in, problem := fields.inputs()
	if problem != nil {
		return false
	}
	b.setInputs(v, in, values)
	return true
}

// readField reads a concrete CUE value into a field of specInputs: strings
// and booleans directly, anything else through its JSON.
func readField(v cue.Value, field reflect.Value) bool {
	switch field.Kind() {
	case reflect.String:
		s, err := v.String()
		if err != nil {
			return false
		}
		field.SetString(s)
	case reflect.Bool:
		x, err := v.Bool()
		if err != nil {
			return false
		}
		field.SetBool(x)
	default:
		data, err := v.MarshalJSON()
		if err != nil {
			return false
		}
		if err := json.Unmarshal(data, field.Addr().Interface()); err != nil {
			return false
		}
	}
	return true
}

// resourceListJSON is resourceList for `resources` already exported.
func resourceListJSON(raw json.RawMessage) (json.RawMessage, error) {
	if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("[")) {
		return canonicalize(raw)
	}
	var byName map[string]json.RawMessage
	if err := json.Unmarshal(raw, &byName); err != nil {
		return nil, err
	}
	list := make([]json.RawMessage, 0, len(byName))
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		list = append(list, byName[name])
	}
	data, err := json.Marshal(list)
	if err != nil {
		return nil, err
	}
	return canonicalize(data)
}

// incompleteDiagnostics explains values left without a concrete value, at
// every fleet position that constrains them (the base and each overlay).
func incompleteDiagnostics(bundle cue.Value, err error) Diagnostics {
	ds := fromCUE(err)
	for _, d := range ds {
		_, rest, ok := bundlePath(d.Path)
		if !ok || len(d.Positions) > 0 {
			continue
		}
		v := bundle.LookupPath(cue.ParsePath(rest))
		d.Positions = positionsOf(userPositions(v))
		if len(d.Positions) == 0 && v.Pos().IsValid() && v.Pos().Filename() != schemaDisplay {
			// (`uint` has no position of its own: the field's.)
			d.Positions = positionsOf([]token.Pos{v.Pos()})
		}
		if !strings.HasPrefix(d.Message, "incomplete value") {
			continue
		}
		if defaults := conflictingDefaults(v); len(defaults) > 1 {
			texts := make([]string, len(defaults))
			at := make([]token.Pos, len(defaults))
			for i, dv := range defaults {
				texts[i], at[i] = fmt.Sprint(dv), dv.Pos()
			}
			d.Message = fmt.Sprintf("defaults %s conflict, so it has none: keep one default, or give it a value", strings.Join(texts, " and "))
			d.Positions = positionsOf(at)
			continue
		}
		d.Message += "; no default or overlay gives it a value for this cluster"
	}
	return ds
}

// conflictingDefaults are the defaults of v's conjuncts when they differ
// (`*"a" | string` in one file, `*"b" | string` in another): CUE then has
// no default, and says only "incomplete value".
func conflictingDefaults(v cue.Value) []cue.Value {
	op, args := v.Expr()
	if op != cue.AndOp {
		return nil
	}
	var out []cue.Value
	for _, a := range args {
		if dv, ok := a.Default(); ok && dv.IsConcrete() && !slices.ContainsFunc(out, dv.Equals) {
			out = append(out, dv)
		}
	}
	return out
}

// oneSource checks that the bundle has exactly one source; none or several
// is an error that points at each.
func oneSource(v cue.Value) error {
	var found []string
	var at []token.Pos
	for _, kind := range spec.Kinds {
		if fv := lookup(v, kind.String()); fv.Exists() {
			found = append(found, kind.String())
			at = append(at, userPos(fv))
		}
	}
	switch len(found) {
	case 1:
		return nil
	case 0:
		return diagnostic("", "a bundle needs exactly one source (helm, kustomize, manifests or resources); it has none", userPos(v))
	default:
		return diagnostic("", fmt.Sprintf("a bundle needs exactly one source (helm, kustomize, manifests or resources); it has %s",
			strings.Join(found, " and ")), at...)
	}
}

// canonicalJSON exports a concrete value as JSON with sorted keys, so equal
// values give equal bytes (and digests) whatever order overlays were
// written in. Numbers keep their exact text.
func canonicalJSON(v cue.Value) (json.RawMessage, error) {
	if !v.Exists() {
		return json.RawMessage("{}"), nil
	}
	data, err := v.MarshalJSON()
	if err != nil {
		return nil, err
	}
	return canonicalize(data)
}

func canonicalize(data []byte) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return nil, err
	}
	return json.Marshal(x)
}

// digest hashes the bundle's inputs (not the explanations).
func (b *Bundle) digest() string {
	data, err := json.Marshal(b.Inputs)
	if err != nil {
		// Every field is plain data that marshalled once already.
		panic(fmt.Sprintf("fleet: marshalling bundle inputs: %v", err))
	}
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}
