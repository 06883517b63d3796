package fleet

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/token"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	Source    Source `json:"source"`
	// Values are the bundle's concrete values as JSON with sorted keys.
	Values    json.RawMessage `json:"values,omitempty"`
	DependsOn []string        `json:"dependsOn,omitempty"`
	Apply     ApplyOptions    `json:"apply"`
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

// Source kinds.
const (
	SourceHelm      = "helm"
	SourceKustomize = "kustomize"
	SourceManifests = "manifests"
	SourceResources = "resources"
)

var sourceKinds = []string{SourceHelm, SourceKustomize, SourceManifests, SourceResources}

// Source is where the bundle's objects come from: exactly one of the
// pointers (or Resources) is set, named by Kind.
type Source struct {
	Kind      string     `json:"kind"`
	Helm      *Helm      `json:"helm,omitempty"`
	Kustomize *Kustomize `json:"kustomize,omitempty"`
	Manifests *Manifests `json:"manifests,omitempty"`
	// Resources are the objects written in CUE, as a JSON list (a struct
	// keyed by name becomes a list in key order).
	Resources json.RawMessage `json:"resources,omitempty"`
}

// Helm is the Go form of #Helm.
type Helm struct {
	Chart        string `json:"chart"`
	Repo         string `json:"repo,omitempty"`
	Version      string `json:"version,omitempty"`
	ReleaseName  string `json:"releaseName,omitempty"`
	IncludeHooks bool   `json:"includeHooks"`
	// ValuesFiles are YAML files of the repository merged in order under
	// the bundle's values.
	ValuesFiles []string `json:"valuesFiles,omitempty"`
}

// Kustomize is the Go form of #Kustomize.
type Kustomize struct {
	Path       string                    `json:"path"`
	Images     []KustomizeImage          `json:"images,omitempty"`
	Patches    map[string]KustomizePatch `json:"patches,omitempty"`
	Labels     map[string]string         `json:"labels,omitempty"`
	Components []string                  `json:"components,omitempty"`
}

// KustomizeImage overrides an image, as in kustomization.yaml `images`.
type KustomizeImage struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

// KustomizePatch is a patch, as in kustomization.yaml `patches`.
type KustomizePatch struct {
	Patch  string           `json:"patch"`
	Target *KustomizeTarget `json:"target,omitempty"`
}

// KustomizeTarget selects what a patch applies to.
type KustomizeTarget struct {
	Group              string `json:"group,omitempty"`
	Version            string `json:"version,omitempty"`
	Kind               string `json:"kind,omitempty"`
	Name               string `json:"name,omitempty"`
	Namespace          string `json:"namespace,omitempty"`
	LabelSelector      string `json:"labelSelector,omitempty"`
	AnnotationSelector string `json:"annotationSelector,omitempty"`
}

// Manifests is the Go form of #Manifests.
type Manifests struct {
	Path      string `json:"path"`
	Recursive bool   `json:"recursive"`
}

// ApplyOptions are how the bundle is applied.
type ApplyOptions struct {
	Prune              bool            `json:"prune"`
	Wait               bool            `json:"wait"`
	Timeout            metav1.Duration `json:"timeout"`
	ServiceAccountName string          `json:"serviceAccountName,omitempty"`
	// DriftPolicy is "correct" or "report".
	DriftPolicy string `json:"driftPolicy"`
	// Force recreates objects whose immutable fields change.
	Force bool `json:"force"`
	// Adopt lets the bundle take over objects that another GitOps
	// controller (Argo CD, Flux, Helm) manages; without it the bundle
	// fails naming the owner. Omitted when false, so that bundles that do
	// not set it keep their inputs digest.
	Adopt bool `json:"adopt,omitempty"`
}

// decodeInputs reads the concrete inputs of the bundle after its overlays
// were applied. Every field must be concrete: an open constraint left by a
// cluster class (`int & >=3`) without a value is an error here.
func (b *Bundle) decodeInputs(v cue.Value) error {
	var fields specInputs
	var ds Diagnostics
	for _, field := range slices.Concat(specFields(), []string{"dependsOn"}) {
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

	source, err := sourceOf(v)
	if err != nil {
		return err
	}
	source.Helm, source.Kustomize, source.Manifests = fields.Helm, fields.Kustomize, fields.Manifests
	if source.Kind == SourceResources {
		if source.Resources, err = resourceList(lookup(v, SourceResources)); err != nil {
			return err
		}
	}
	timeout, err := time.ParseDuration(fields.Timeout)
	if err != nil {
		return diagnostic("timeout", err.Error(), userPos(lookup(v, "timeout")))
	}
	if fields.RenderTimeout != "" {
		d, err := time.ParseDuration(fields.RenderTimeout)
		if err != nil || d <= 0 {
			return diagnostic("renderTimeout", fmt.Sprintf("%q is not a positive duration", fields.RenderTimeout), userPos(lookup(v, "renderTimeout")))
		}
		b.RenderTimeout = d.String()
	}
	values, err := canonicalJSON(lookup(v, "values"))
	if err != nil {
		return err
	}

	b.setInputs(v, fields, source, values, timeout)
	return nil
}

// setInputs sets what decodeInputs and decodeInputsFast read (RenderTimeout
// apart).
func (b *Bundle) setInputs(v cue.Value, fields specInputs, source Source, values json.RawMessage, timeout time.Duration) {
	b.Namespace = fields.Namespace
	b.Source = source
	b.Values = values
	b.values = lookup(v, "values")
	b.DependsOn = fields.DependsOn
	b.dependsOnPos = userPos(lookup(v, "dependsOn"))
	b.Apply = ApplyOptions{
		Prune:              fields.Prune,
		Wait:               fields.Wait,
		Timeout:            metav1.Duration{Duration: timeout},
		ServiceAccountName: fields.ServiceAccountName,
		DriftPolicy:        fields.DriftPolicy,
		Force:              fields.Force,
		Adopt:              fields.Adopt,
	}
}

// decodeInputsFast is decodeInputs without the error reporting: each
// field is looked up and read on its own (scalars decoded, structs
// exported as JSON), which costs a fraction of decoding the whole bundle
// (every struct CUE decodes or exports has its fields sorted first). It
// returns false, having set nothing, when anything is not as expected,
// and decodeInputs then reads the bundle again and reports the problem
// with its positions.
func (b *Bundle) decodeInputsFast(v cue.Value) bool {
	var fields specInputs
	var kinds []string
	raw := map[string][]byte{}
	for _, field := range []string{"namespace", "prune", "wait", "timeout", "renderTimeout", "serviceAccountName", "driftPolicy", "force", "adopt", "dependsOn",
		SourceHelm, SourceKustomize, SourceManifests, SourceResources, "values"} {
		fv := lookup(v, field)
		if !fv.Exists() {
			continue
		}
		var err error
		switch field {
		case "namespace":
			fields.Namespace, err = fv.String()
		case "timeout":
			fields.Timeout, err = fv.String()
		case "renderTimeout":
			fields.RenderTimeout, err = fv.String()
		case "serviceAccountName":
			fields.ServiceAccountName, err = fv.String()
		case "driftPolicy":
			fields.DriftPolicy, err = fv.String()
		case "prune":
			fields.Prune, err = fv.Bool()
		case "wait":
			fields.Wait, err = fv.Bool()
		case "force":
			fields.Force, err = fv.Bool()
		case "adopt":
			fields.Adopt, err = fv.Bool()
		default:
			if slices.Contains(sourceKinds, field) {
				kinds = append(kinds, field)
			}
			raw[field], err = fv.MarshalJSON()
		}
		if err != nil {
			return false
		}
	}
	if len(kinds) != 1 {
		return false
	}
	source := Source{Kind: kinds[0]}
	var err error
	switch source.Kind {
	case SourceHelm:
		err = json.Unmarshal(raw[SourceHelm], &source.Helm)
	case SourceKustomize:
		err = json.Unmarshal(raw[SourceKustomize], &source.Kustomize)
	case SourceManifests:
		err = json.Unmarshal(raw[SourceManifests], &source.Manifests)
	case SourceResources:
		source.Resources, err = resourceListJSON(raw[SourceResources])
	}
	if err != nil {
		return false
	}
	if d, ok := raw["dependsOn"]; ok && json.Unmarshal(d, &fields.DependsOn) != nil {
		return false
	}
	timeout, err := time.ParseDuration(fields.Timeout)
	if err != nil {
		return false
	}
	var renderTimeout string
	if fields.RenderTimeout != "" {
		d, err := time.ParseDuration(fields.RenderTimeout)
		if err != nil || d <= 0 {
			return false
		}
		renderTimeout = d.String()
	}
	values := json.RawMessage("{}")
	if data, ok := raw["values"]; ok {
		if values, err = canonicalize(data); err != nil {
			return false
		}
	}
	b.RenderTimeout = renderTimeout
	b.setInputs(v, fields, source, values, timeout)
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
		d.Positions = positionsOf(userPositions(bundle.LookupPath(cue.ParsePath(rest))))
		if strings.HasPrefix(d.Message, "incomplete value") {
			d.Message += "; no default or overlay gives it a value for this cluster"
		}
	}
	return ds
}

// sourceOf finds the bundle's one source; none or several is an error that
// points at each.
func sourceOf(v cue.Value) (Source, error) {
	var found []string
	var at []token.Pos
	for _, kind := range sourceKinds {
		if fv := lookup(v, kind); fv.Exists() {
			found = append(found, kind)
			at = append(at, userPos(fv))
		}
	}
	switch len(found) {
	case 1:
		return Source{Kind: found[0]}, nil
	case 0:
		return Source{}, diagnostic("", "a bundle needs exactly one source (helm, kustomize, manifests or resources); it has none", userPos(v))
	default:
		return Source{}, diagnostic("", fmt.Sprintf("a bundle needs exactly one source (helm, kustomize, manifests or resources); it has %s",
			strings.Join(found, " and ")), at...)
	}
}

// resourceList returns the objects of `resources` as a JSON list: a struct
// keyed by name becomes its values in key order.
func resourceList(v cue.Value) (json.RawMessage, error) {
	data, err := v.MarshalJSON()
	if err != nil {
		return nil, err
	}
	return resourceListJSON(data)
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
