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
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

// Request is one bundle to render for one cluster: a planned bundle's
// inputs (its source in the Go form of the fleet schema, package
// schemas/spec) and where it is rendered. Its JSON form is what a sandbox
// worker receives.
type Request struct {
	// Bundle is the bundle's name: the Helm release name by default, and
	// the value of the bundle ownership label.
	Bundle string `json:"name"`
	// Namespace receives namespaced objects that name none.
	Namespace string      `json:"namespace"`
	Source    spec.Source `json:"source"`
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
	// Sensitive are the values the render decrypted (Scrubbing): no
	// message about the objects may show them.
	Sensitive []string
}

// Secrets decides what renderers read of a file of the repository that
// may be SOPS-encrypted (manifests, kustomization trees, Helm values
// files): Read returns the bytes to use — the file as it is when it is not
// encrypted; decrypted in memory, masked, or an error when it is — and
// never puts a file's content in its error. Implemented by render/sops.
type Secrets interface {
	// Read returns the bytes to use and, when it decrypted the file, the
	// scalars it decrypted.
	Read(name string, data []byte) (out []byte, decrypted []string, err error)
}

// MaskedPrefix starts what an encrypted value is shown as when it is not
// decrypted (render/sops's Mask): a placeholder, which render's checks
// take as a value of the right kind (a Secret's base64 data).
const MaskedPrefix = "sops-encrypted:"

// ReadSecrets is s.Read, or data as it is when s is nil; what it
// decrypts is recorded for the render that ctx is of (Scrubbing), if any.
func ReadSecrets(ctx context.Context, s Secrets, name string, data []byte) ([]byte, error) {
	if s == nil {
		return data, nil
	}
	out, values, err := s.Read(name, data)
	if d, ok := ctx.Value(decryptedKey{}).(*decrypted); ok {
		d.add(values)
	}
	return out, err
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
