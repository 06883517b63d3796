// Package spec is the Go form of the bundle spec (#Spec in
// schemas/fleet.cue): a bundle's source and its kinds, and how it is
// applied. It is written once, here, beside the schema it mirrors, and used
// by everything that carries a bundle: the fleet model decodes a planned
// bundle into it, a render request and the apply engine's bundle hold it as
// it is. Tests compare every type with its definition in the schema, field
// by field.
//
// spec is a leaf: it imports no Flotilla package, so fleet, render and
// sync may all use it without importing each other.
package spec

import (
	"encoding/json"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Kind is a source kind: the field of #Spec that holds the bundle's one
// source.
type Kind string

// The source kinds, as the fields of #Spec are named.
const (
	KindHelm      Kind = "helm"
	KindKustomize Kind = "kustomize"
	KindManifests Kind = "manifests"
	KindResources Kind = "resources"
)

// Kinds are every source kind, in schema order.
var Kinds = []Kind{KindHelm, KindKustomize, KindManifests, KindResources}

func (k Kind) String() string { return string(k) }

// Source is where a bundle's objects come from: exactly one of the
// pointers (or Resources) is set, named by Kind. Its JSON form is part of
// a bundle's inputs digest: fields keep their names and order.
type Source struct {
	Kind      Kind       `json:"kind"`
	Helm      *Helm      `json:"helm,omitempty"`
	Kustomize *Kustomize `json:"kustomize,omitempty"`
	Manifests *Manifests `json:"manifests,omitempty"`
	// Resources are the objects written in CUE, as a JSON list (a struct
	// keyed by name becomes a list in key order).
	Resources json.RawMessage `json:"resources,omitempty"`
}

// Helm is #Helm: a chart of the fleet repository, of an HTTP chart
// repository (Repo) or of an OCI registry (Chart "oci://…").
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

// OCIScheme prefixes a chart kept in an OCI registry.
const OCIScheme = "oci://"

// InRepository reports whether the chart is a folder of the fleet
// repository, not a chart of an HTTP chart repository or an OCI registry.
func (h *Helm) InRepository() bool {
	return h.Repo == "" && !strings.HasPrefix(h.Chart, OCIScheme)
}

// Kustomize is #Kustomize: a kustomization of the fleet repository, with
// what the bundle adds from CUE.
type Kustomize struct {
	Path       string            `json:"path"`
	Images     []Image           `json:"images,omitempty"`
	Patches    map[string]Patch  `json:"patches,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Components []string          `json:"components,omitempty"`
}

// Image overrides an image, as kustomization.yaml `images`.
type Image struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

// Patch is a kustomization.yaml `patches` entry with the patch inline.
type Patch struct {
	Patch  string       `json:"patch"`
	Target *PatchTarget `json:"target,omitempty"`
}

// PatchTarget selects what a patch applies to.
type PatchTarget struct {
	Group              string `json:"group,omitempty"`
	Version            string `json:"version,omitempty"`
	Kind               string `json:"kind,omitempty"`
	Name               string `json:"name,omitempty"`
	Namespace          string `json:"namespace,omitempty"`
	LabelSelector      string `json:"labelSelector,omitempty"`
	AnnotationSelector string `json:"annotationSelector,omitempty"`
}

// Manifests is #Manifests: YAML and JSON files of a repository folder.
type Manifests struct {
	Path      string `json:"path"`
	Recursive bool   `json:"recursive"`
}

// DriftPolicy is what the agent does with objects changed outside Git.
type DriftPolicy string

// Drift policies, as #Spec spells them.
const (
	// DriftCorrect: Git wins; changed objects are put back, field
	// ownership forced. The default.
	DriftCorrect DriftPolicy = "correct"
	// DriftReport: changed objects are left alone and reported.
	DriftReport DriftPolicy = "report"
)

func (p DriftPolicy) String() string { return string(p) }

// ApplyOptions are #Spec's apply fields: how a bundle is applied. Their
// JSON form is part of a bundle's inputs digest.
type ApplyOptions struct {
	// Prune deletes objects that left the bundle (or the whole bundle when
	// the cluster stops selecting it).
	Prune bool `json:"prune"`
	// Wait waits for the objects to be ready before dependents apply.
	Wait bool `json:"wait"`
	// Timeout bounds the readiness wait.
	Timeout            metav1.Duration `json:"timeout"`
	ServiceAccountName string          `json:"serviceAccountName,omitempty"`
	DriftPolicy        DriftPolicy     `json:"driftPolicy"`
	// Force recreates objects whose immutable fields change.
	Force bool `json:"force"`
	// Adopt lets the bundle take over objects that another GitOps
	// controller (Argo CD, Flux, Helm) manages; without it the bundle
	// fails naming the owner. Omitted when false, so that bundles that do
	// not set it keep the inputs digest they had before it existed.
	Adopt bool `json:"adopt,omitempty"`
}
