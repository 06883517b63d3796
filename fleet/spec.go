package fleet

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/cuecontext"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-gitops/flotilla/schemas"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

// specFields are the fields of #Spec — what a bundle sets and an overlay
// may add to — read from the embedded schema, so that the schema is the one
// place a field is declared. They are read once per process from the
// schema alone (never from a fleet, whose files could add fields to
// #Spec).
var specFields = sync.OnceValue(func() []string {
	fields, err := definitionFields(schemaValue(), "#Spec")
	if err != nil {
		// The schema is embedded and compiled by every test: this cannot
		// happen in a build that passed them.
		panic(fmt.Sprintf("fleet: reading #Spec from the embedded schema: %v", err))
	}
	return fields
})

// schemaValue compiles the embedded fleet schema on its own.
func schemaValue() cue.Value {
	src, err := schemas.FS.ReadFile(schemas.FleetFile)
	if err != nil {
		panic(fmt.Sprintf("fleet: reading the embedded schema: %v", err))
	}
	return cuecontext.New().CompileBytes(src, cue.Filename(schemaDisplay))
}

// definitionFields lists the regular and optional fields of a definition of
// the schema, in schema order.
func definitionFields(schema cue.Value, def string) ([]string, error) {
	v := schema.LookupPath(cue.ParsePath(def))
	if err := v.Err(); err != nil {
		return nil, err
	}
	iter, err := v.Fields(cue.Optional(true))
	if err != nil {
		return nil, err
	}
	var out []string
	for iter.Next() {
		out = append(out, iter.Selector().Unquoted())
	}
	return out, nil
}

// specInputs is #Spec's fields as a bundle writes them, after its
// overlays are applied, plus the bundle's dependsOn (values are read apart,
// as canonical JSON): what both decoders fill, field by field, before
// inputs turns it into the bundle's Inputs. A test checks its JSON names
// against the schema; the fast decoder finds its fields by those names, so
// a field of #Spec it lacks sends every bundle that sets it to the slow
// path.
type specInputs struct {
	Namespace          string           `json:"namespace"`
	DependsOn          []string         `json:"dependsOn"`
	Prune              bool             `json:"prune"`
	Wait               bool             `json:"wait"`
	Timeout            string           `json:"timeout"`
	RenderTimeout      string           `json:"renderTimeout"`
	ServiceAccountName string           `json:"serviceAccountName"`
	DriftPolicy        spec.DriftPolicy `json:"driftPolicy"`
	Force              bool             `json:"force"`
	Adopt              bool             `json:"adopt"`
	Helm               *spec.Helm       `json:"helm"`
	Kustomize          *spec.Kustomize  `json:"kustomize"`
	Manifests          *spec.Manifests  `json:"manifests"`
	Resources          json.RawMessage  `json:"resources"`
}

// inputFields are the fields the decoders read: #Spec's, plus dependsOn.
// All but values are read into specInputs.
var inputFields = sync.OnceValue(func() []string {
	return append(slices.Clone(specFields()), "dependsOn")
})

// specInputIndex maps each JSON name of specInputs to its field index.
var specInputIndex = sync.OnceValue(func() map[string]int {
	index := map[string]int{}
	for i, f := range slices.Collect(reflect.TypeFor[specInputs]().Fields()) {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		index[name] = i
	}
	return index
})

// kinds are the source kinds the bundle sets, in schema order.
func (f *specInputs) kinds() []spec.Kind {
	var out []spec.Kind
	for _, k := range []struct {
		kind spec.Kind
		set  bool
	}{
		{spec.KindHelm, f.Helm != nil}, {spec.KindKustomize, f.Kustomize != nil},
		{spec.KindManifests, f.Manifests != nil}, {spec.KindResources, f.Resources != nil},
	} {
		if k.set {
			out = append(out, k.kind)
		}
	}
	return out
}

// fieldError is a field of the spec whose value the schema's types allow
// but Flotilla cannot use (a duration Go cannot parse).
type fieldError struct {
	field, message string
}

// inputs turns the decoded spec of a bundle with exactly one source into
// its Inputs (Name and Values apart).
func (f *specInputs) inputs() (Inputs, *fieldError) {
	in := Inputs{
		Namespace: f.Namespace,
		Source:    spec.Source{Helm: f.Helm, Kustomize: f.Kustomize, Manifests: f.Manifests},
		DependsOn: f.DependsOn,
		Apply: spec.ApplyOptions{
			Prune:              f.Prune,
			Wait:               f.Wait,
			ServiceAccountName: f.ServiceAccountName,
			DriftPolicy:        f.DriftPolicy,
			Force:              f.Force,
			Adopt:              f.Adopt,
		},
	}
	in.Source.Kind = f.kinds()[0]
	if in.Source.Kind == spec.KindResources {
		list, err := resourceListJSON(f.Resources)
		if err != nil {
			return in, &fieldError{string(spec.KindResources), err.Error()}
		}
		in.Source.Resources = list
	}
	timeout, err := time.ParseDuration(f.Timeout)
	if err != nil {
		return in, &fieldError{"timeout", err.Error()}
	}
	in.Apply.Timeout = metav1.Duration{Duration: timeout}
	if f.RenderTimeout != "" {
		d, err := time.ParseDuration(f.RenderTimeout)
		if err != nil || d <= 0 {
			return in, &fieldError{"renderTimeout", fmt.Sprintf("%q is not a positive duration", f.RenderTimeout)}
		}
		in.RenderTimeout = d.String()
	}
	return in, nil
}
