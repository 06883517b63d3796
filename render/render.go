// Package render turns one planned bundle into Kubernetes objects: the same
// objects the reference tool (helm template, kustomize build) would produce
// from the same inputs, then namespaced, labelled as Flotilla's, sorted and
// digested. Each source kind has its own sub-package (helm, kustomize,
// manifests, cue) implementing Renderer.
//
// render never imports fleet or sync: the caller (the agent or the CLI)
// turns a planned bundle into a Request.
package render

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flotilla-gitops/flotilla/internal/errtext"
)

// Source kinds, as in the fleet schema.
const (
	KindHelm      = "helm"
	KindKustomize = "kustomize"
	KindManifests = "manifests"
	KindResources = "resources"
)

// Request is one bundle to render for one cluster. Its JSON form matches
// the fleet plan's bundle inputs, so a planned bundle converts by
// marshalling.
type Request struct {
	// Bundle is the bundle's name: the Helm release name by default, and
	// the value of the bundle ownership label.
	Bundle string `json:"name"`
	// Namespace receives namespaced objects that name none.
	Namespace string `json:"namespace"`
	Source    Source `json:"source"`
	// Values are the bundle's values as JSON (Helm values).
	Values json.RawMessage `json:"values"`
	// RenderTimeout bounds this render (a Go duration), instead of the
	// engine's default.
	RenderTimeout string `json:"renderTimeout,omitempty"`

	// Cluster names the cluster in errors.
	Cluster string `json:"-"`
	// RepoDir is the fleet repository's root; every path of the source is
	// relative to it and may not leave it.
	RepoDir string `json:"-"`
	// Capabilities describe the target cluster to Helm.
	Capabilities Capabilities `json:"-"`
}

// Source is where the objects come from; Kind names the one that is set.
type Source struct {
	Kind      string          `json:"kind"`
	Helm      *Helm           `json:"helm,omitempty"`
	Kustomize *Kustomize      `json:"kustomize,omitempty"`
	Manifests *Manifests      `json:"manifests,omitempty"`
	Resources json.RawMessage `json:"resources,omitempty"`
}

// Helm renders a chart from a folder of the repository or an HTTP chart
// repository.
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

// Kustomize builds a kustomization of the repository with additions.
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

// Manifests reads YAML and JSON files of a repository folder.
type Manifests struct {
	Path      string `json:"path"`
	Recursive bool   `json:"recursive"`
}

// Capabilities are what Helm's .Capabilities report.
type Capabilities struct {
	// KubeVersion is the cluster's version ("v1.36.3"); empty means
	// DefaultKubeVersion.
	KubeVersion string
	// APIVersions are the group/versions the cluster serves
	// ("monitoring.coreos.com/v1"), added to the built-in ones.
	APIVersions []string
}

// DefaultKubeVersion is the Kubernetes version charts see when the cluster's
// is not known: the minor Flotilla is tested against.
const DefaultKubeVersion = "v1.36.0"

// Object is one rendered object and where it came from (a file, a template),
// for error messages.
type Object struct {
	Object *unstructured.Unstructured
	Source string
}

// Output is what a Renderer produces.
type Output struct {
	Objects []Object
	// Hooks are Helm hooks: rendered, and applied only when the bundle opts
	// in.
	Hooks []Object
}

// Secrets decides what renderers read of a file of the repository that
// may be SOPS-encrypted (manifests, kustomization trees, Helm values
// files): Read returns the bytes to use — the file as it is when it is not
// encrypted; decrypted in memory, masked, or an error when it is — and
// never puts a file's content in its error. Implemented by render/sops.
type Secrets interface {
	Read(name string, data []byte) ([]byte, error)
}

// ReadSecrets is s.Read, or data as it is when s is nil.
func ReadSecrets(s Secrets, name string, data []byte) ([]byte, error) {
	if s == nil {
		return data, nil
	}
	return s.Read(name, data)
}

// Renderer renders one kind of source.
type Renderer interface {
	Render(ctx context.Context, req *Request) (*Output, error)
}

// ErrRender is wrapped by every rendering failure; Error says which bundle
// and cluster.
var ErrRender = errors.New("render failed")

// Error is a rendering failure of one bundle for one cluster.
type Error struct {
	Bundle  string
	Cluster string
	Err     error
}

// Error is bounded in size and free of terminal escapes: what a template
// prints (a recursion's trace, escape sequences) is the fleet's to choose.
func (e *Error) Error() string {
	if e.Cluster != "" {
		return fmt.Sprintf("cluster %s: bundle %s: %s", e.Cluster, e.Bundle, errtext.Error(e.Err))
	}
	return fmt.Sprintf("bundle %s: %s", e.Bundle, errtext.Error(e.Err))
}

func (e *Error) Unwrap() []error { return []error{ErrRender, e.Err} }
