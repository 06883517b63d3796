package fleet

import (
	"encoding/json"
	"fmt"
	"sync"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/cuecontext"

	"github.com/flotilla-gitops/flotilla/schemas"
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

// specInputs is the Go form of #Spec's concrete fields, plus the bundle's
// dependsOn, as decodeInputs reads them after overlays are applied (values
// are read apart, as canonical JSON). A test checks its JSON names against
// the schema.
type specInputs struct {
	Namespace          string          `json:"namespace"`
	DependsOn          []string        `json:"dependsOn"`
	Prune              bool            `json:"prune"`
	Wait               bool            `json:"wait"`
	Timeout            string          `json:"timeout"`
	RenderTimeout      string          `json:"renderTimeout"`
	ServiceAccountName string          `json:"serviceAccountName"`
	DriftPolicy        string          `json:"driftPolicy"`
	Force              bool            `json:"force"`
	Adopt              bool            `json:"adopt"`
	Helm               *Helm           `json:"helm"`
	Kustomize          *Kustomize      `json:"kustomize"`
	Manifests          *Manifests      `json:"manifests"`
	Resources          json.RawMessage `json:"resources"`
}
