// Package kustomize builds kustomizations of the fleet repository with
// krusty, the library behind `kustomize build`, plus what the bundle adds
// from CUE (images, patches keyed by name, labels, components).
//
// This is the one adapter that touches kustomize's global state (its
// OpenAPI schema, set on every build): builds are serialised here, and a
// panic inside kustomize becomes an error.
package kustomize

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

// repoMount is where the repository appears in the in-memory file system,
// and wrapperDir where the generated kustomizations go.
const (
	repoMount  = "/repo"
	wrapperDir = "/flotilla"
)

// ErrRemoteBase is wrapped when a kustomization refers to a remote base
// and remote bases are not enabled.
var ErrRemoteBase = errors.New("remote kustomize bases are disabled")

// Options configure the renderer.
type Options struct {
	// AllowRemoteBases lets kustomizations refer to git or HTTP bases.
	// Off by default: a fleet renders from its own repository only.
	AllowRemoteBases bool
	// Secrets reads SOPS-encrypted files of the repository (resources,
	// patches, generator files); nil reads them as they are.
	Secrets render.Secrets
}

// Renderer builds kustomizations. It reads the repository through
// os.Root (nothing outside it can be read) and never writes to it.
type Renderer struct {
	opts Options
	mu   sync.Mutex // kustomize's global state: one build at a time
}

var _ render.Renderer = (*Renderer)(nil)

// New returns a kustomize renderer.
func New(opts Options) *Renderer {
	return &Renderer{opts: opts}
}

// Render builds req.Source.Kustomize.
func (r *Renderer) Render(ctx context.Context, req *render.Request) (out *render.Output, err error) {
	src := req.Source.Kustomize
	if src == nil {
		return nil, fmt.Errorf("no kustomize source")
	}
	for _, p := range append([]string{src.Path}, src.Components...) {
		if _, err := render.RepoPath(req.RepoDir, p); err != nil {
			return nil, err
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	defer func() {
		if p := recover(); p != nil {
			out, err = nil, fmt.Errorf("kustomize panicked building %s: %v", src.Path, p)
		}
	}()

	root, err := os.OpenRoot(req.RepoDir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	fsys := newRepoFS(ctx, root, r.opts.Secrets)
	if !r.opts.AllowRemoteBases {
		if err := checkLocal(fsys, req.RepoDir, path.Join(repoMount, filepath.ToSlash(src.Path))); err != nil {
			return nil, err
		}
	}
	// A bundle that adds nothing in CUE builds its kustomization itself:
	// a wrapper around it would add nothing to the output, but krusty
	// would accumulate every resource a second time, and its accumulation
	// checks each resource against all those before it (half of a large
	// build's time; BenchmarkRenderScale).
	dir := path.Join(repoMount, filepath.ToSlash(src.Path))
	if addsToKustomization(src) {
		if dir, err = writeWrapper(fsys, req); err != nil {
			return nil, err
		}
	}

	// In the order of accumulation, as Flux's kustomize-controller and
	// `kustomize build --reorder none` build (the kustomization's
	// sortOptions still apply): the legacy order `kustomize build` applies
	// by default re-adds every resource through the same quadratic check,
	// a third of a large build's time, for an order the apply does not
	// use (it stages CRDs and Namespaces itself).
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", src.Path, inRepoTerms(err))
	}
	data, err := resMap.AsYaml()
	if err != nil {
		return nil, err
	}
	objs, err := render.DecodeObjects(data, "kustomize build "+src.Path)
	if err != nil {
		return nil, err
	}
	return &render.Output{Objects: objs}, nil
}

// inRepoTerms is a kustomize error with the paths of the in-memory file
// system ("/repo/apps/web", "../../repo/apps/web") said as the
// repository's ("apps/web").
func inRepoTerms(err error) error {
	msg := err.Error()
	clean := strings.NewReplacer("../.."+repoMount+"/", "", repoMount+"/", "", "../.."+wrapperDir+"/", "", wrapperDir+"/", "").Replace(msg)
	if clean == msg {
		return err
	}
	return reworded{msg: clean, err: err}
}

// reworded is an error said in other words.
type reworded struct {
	msg string
	err error
}

func (e reworded) Error() string { return e.msg }
func (e reworded) Unwrap() error { return e.err }

// wrapper is the kustomization Flotilla generates around the bundle's
// path to add what the bundle sets in CUE. Its JSON names are
// kustomization.yaml's.
type wrapper struct {
	APIVersion string        `json:"apiVersion"`
	Kind       string        `json:"kind"`
	Resources  []string      `json:"resources"`
	Components []string      `json:"components,omitempty"`
	Images     []spec.Image  `json:"images,omitempty"`
	Patches    []spec.Patch  `json:"patches,omitempty"`
	Labels     []types.Label `json:"labels,omitempty"`
}

// addsToKustomization reports whether the bundle adds anything in CUE to
// its kustomization (then it is built inside a generated one).
func addsToKustomization(src *spec.Kustomize) bool {
	return len(src.Components) > 0 || len(src.Images) > 0 || len(src.Patches) > 0 || len(src.Labels) > 0
}

// writeWrapper writes the generated kustomization into a new folder of
// the in-memory file system and returns the folder.
func writeWrapper(mem filesys.FileSystem, req *render.Request) (string, error) {
	src := req.Source.Kustomize
	dir := path.Join(wrapperDir, req.Bundle)
	rel := func(p string) string { return path.Join("../..", path.Base(repoMount), filepath.ToSlash(p)) }
	w := wrapper{
		APIVersion: types.KustomizationVersion,
		Kind:       types.KustomizationKind,
		Resources:  []string{rel(src.Path)},
		Images:     src.Images,
	}
	for _, c := range src.Components {
		w.Components = append(w.Components, rel(c))
	}
	// Patches are keyed by name so overlays can each add one; apply them in
	// name order.
	for _, name := range slices.Sorted(maps.Keys(src.Patches)) {
		w.Patches = append(w.Patches, src.Patches[name])
	}
	if len(src.Labels) > 0 {
		w.Labels = []types.Label{{Pairs: src.Labels}}
	}
	data, err := yaml.Marshal(w)
	if err != nil {
		return "", err
	}
	if err := mem.MkdirAll(dir); err != nil {
		return "", err
	}
	return dir, mem.WriteFile(path.Join(dir, "kustomization.yaml"), data)
}
