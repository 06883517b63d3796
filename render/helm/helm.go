// Package helm renders Helm charts with the Helm v3 SDK, as `helm template`
// does: offline (lookup returns nothing), with the target cluster's
// Kubernetes version and API versions as .Capabilities, CRDs from crds/
// included, and hooks rendered but kept apart.
package helm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/releaseutil"

	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

// Options configure the Helm renderer.
type Options struct {
	// CacheDir keeps charts downloaded from chart repositories, by
	// repository, name and version. Defaults to the user's cache folder
	// (~/.cache/flotilla/charts).
	CacheDir string
	// HTTPClient fetches from chart repositories; defaults to a client of
	// its own whose requests end after HTTPTimeout.
	HTTPClient *http.Client
	// HTTPTimeout bounds each request to a chart repository (index or
	// archive) when HTTPClient is not given: a repository that never
	// answers fails the bundle instead of hanging it. Default
	// DefaultHTTPTimeout.
	HTTPTimeout time.Duration
	// RegistryConfig is a file of registry credentials in Docker's
	// config.json format (`auths`), for OCI charts and dependencies. Only
	// this file is read: not the user's Docker or Helm credentials, and no
	// credential helper runs. Empty: registries are asked anonymously.
	RegistryConfig string
	// PlainHTTPRegistries are registries (host or host:port) reached over
	// plain HTTP instead of HTTPS.
	PlainHTTPRegistries []string
	// AllowDownloads lets a chart of the fleet repository whose
	// dependencies are not vendored in its charts/ folder have them
	// fetched from the repositories its Chart.lock lists (what `helm
	// dependency build` does), without writing into the repository.
	AllowDownloads bool
	// Secrets reads SOPS-encrypted values files; nil reads them as they
	// are.
	Secrets render.Secrets
	// CacheOnly takes charts of chart repositories and registries from the
	// cache only: one that is not cached fails with ErrNotCached, and
	// nothing reaches the network.
	CacheOnly bool
}

// ErrNotCached is wrapped when a chart is not in the cache and the
// renderer may take charts from the cache only.
var ErrNotCached = errors.New("chart not in the cache")

// DefaultHTTPTimeout bounds a request to a chart repository.
const DefaultHTTPTimeout = time.Minute

// Renderer renders Helm charts. It is safe for concurrent use.
type Renderer struct {
	cacheDir       string
	client         *http.Client
	registryConfig string
	plainHTTP      []string
	allowDownloads bool
	cacheOnly      bool
	secrets        render.Secrets
}

var _ render.Renderer = (*Renderer)(nil)

// New returns a Helm renderer.
func New(opts Options) *Renderer {
	r := &Renderer{
		cacheDir: opts.CacheDir, client: opts.HTTPClient, registryConfig: opts.RegistryConfig,
		plainHTTP: opts.PlainHTTPRegistries, allowDownloads: opts.AllowDownloads, cacheOnly: opts.CacheOnly,
		secrets: opts.Secrets,
	}
	if r.cacheDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		r.cacheDir = filepath.Join(base, "flotilla", "charts")
	}
	if r.client == nil {
		timeout := opts.HTTPTimeout
		if timeout <= 0 {
			timeout = DefaultHTTPTimeout
		}
		r.client = &http.Client{Timeout: timeout}
	}
	return r
}

// Render renders the chart of req.Source.Helm with req.Values.
func (r *Renderer) Render(ctx context.Context, req *render.Request) (*render.Output, error) {
	src := req.Source.Helm
	if src == nil {
		return nil, fmt.Errorf("no helm source")
	}
	chrt, err := r.loadChart(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := r.dependencies(ctx, req, chrt); err != nil {
		return nil, err
	}
	if err := checkSchemas(chrt); err != nil {
		return nil, err
	}
	values, err := r.bundleValues(ctx, req)
	if err != nil {
		return nil, err
	}

	install, err := newInstall(req)
	if err != nil {
		return nil, err
	}
	rel, err := install.RunWithContext(ctx, chrt, values)
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", src.Chart, err)
	}

	out := &render.Output{}
	if out.Objects, err = decodeManifest(rel.Manifest); err != nil {
		return nil, err
	}
	for _, h := range rel.Hooks {
		objs, err := render.DecodeObjects([]byte(h.Manifest), h.Path)
		if err != nil {
			return nil, err
		}
		if src.IncludeHooks {
			out.Objects = append(out.Objects, objs...)
		} else {
			out.Hooks = append(out.Hooks, objs...)
		}
	}
	return out, nil
}

// newInstall configures an install action the way `helm template` does.
func newInstall(req *render.Request) (*action.Install, error) {
	install := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	install.DryRun = true
	install.DryRunOption = "client"
	install.ClientOnly = true
	install.Replace = true
	install.IncludeCRDs = true
	install.ReleaseName = req.Source.Helm.ReleaseName
	if install.ReleaseName == "" {
		install.ReleaseName = req.Bundle
	}
	install.Namespace = req.Namespace
	kubeVersion := req.Capabilities.KubeVersion
	if kubeVersion == "" {
		kubeVersion = render.DefaultKubeVersion
	}
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, fmt.Errorf("kubernetes version %q: %w", kubeVersion, err)
	}
	install.KubeVersion = kv
	install.APIVersions = chartutil.VersionSet(req.Capabilities.APIVersions)
	return install, nil
}

// ValuesSchema returns the values.schema.json of a bundle's chart (nil when
// it has none), loaded as Render loads it, and the name its positions are
// given: the file's path in the repository, or the remote chart's
// reference. It fails where Render would fail before templating (the chart
// or its version not found, dependencies neither vendored nor locked, a
// lock out of sync, a schema that refers outside itself), and where a
// chart of the repository is not the `version` the bundle asks for (Render
// takes such a chart as it is). What needs a download the renderer may
// not make wraps ErrNotCached.
func (r *Renderer) ValuesSchema(ctx context.Context, repoDir string, src *spec.Helm) (name string, schema []byte, err error) {
	req := &render.Request{RepoDir: repoDir, Source: spec.Source{Kind: spec.KindHelm, Helm: src}}
	chrt, err := r.loadChart(ctx, req)
	if err != nil {
		return "", nil, err
	}
	if src.InRepository() {
		if err := localVersion(src, chrt); err != nil {
			return "", nil, err
		}
	}
	if err := r.dependencies(ctx, req, chrt); err != nil {
		return "", nil, err
	}
	if len(chrt.Schema) == 0 {
		return "", nil, nil
	}
	if err := checkSchemas(chrt); err != nil {
		return "", nil, err
	}
	switch {
	case src.Repo != "":
		name = fmt.Sprintf("%s/%s %s values.schema.json", strings.TrimSuffix(src.Repo, "/"), src.Chart, src.Version)
	case IsOCI(src.Chart):
		name = fmt.Sprintf("%s %s values.schema.json", src.Chart, src.Version)
	default:
		name = path.Join(src.Chart, "values.schema.json")
	}
	return name, chrt.Schema, nil
}

// localVersion checks that a chart of the fleet repository is the version
// its bundle asks for, when it asks for one: the version itself, or a
// range it is in.
func localVersion(src *spec.Helm, chrt *chart.Chart) error {
	if src.Version == "" {
		return nil
	}
	have := chrt.Metadata.Version
	if strings.TrimPrefix(have, "v") == strings.TrimPrefix(src.Version, "v") {
		return nil
	}
	c, err := semver.NewConstraint(src.Version)
	v, verr := semver.NewVersion(have)
	if err == nil && verr == nil && c.Check(v) {
		return nil
	}
	return fmt.Errorf("version %q: the chart %s is version %q (its Chart.yaml); a chart of the fleet repository renders as it is, so make them agree or leave version out", src.Version, path.Join(src.Chart, "Chart.yaml"), have)
}

// NeedsNetwork reports whether rendering req may reach the network: a
// chart from a chart repository or an OCI registry, or, when dependency
// downloads are allowed, a chart of the fleet repository with a
// Chart.lock. Anything else renders offline.
func NeedsNetwork(req *render.Request, allowDownloads bool) bool {
	src := req.Source.Helm
	if src == nil {
		return false
	}
	if !src.InRepository() {
		return true
	}
	if !allowDownloads {
		return false
	}
	root, err := os.OpenRoot(req.RepoDir)
	if err != nil {
		return false
	}
	defer root.Close()
	// A v2 chart's Chart.lock, or a v1 chart's requirements.lock (Helm's
	// loader reads either as the chart's lock).
	for _, lock := range []string{"Chart.lock", "requirements.lock"} {
		if _, err := root.Stat(filepath.Join(filepath.FromSlash(src.Chart), lock)); err == nil {
			return true
		}
	}
	return false
}

// loadChart loads the chart: from a chart repository, an OCI registry, or
// a folder of the fleet repository, read only through the repository root.
func (r *Renderer) loadChart(ctx context.Context, req *render.Request) (*chart.Chart, error) {
	src := req.Source.Helm
	switch {
	case src.Repo != "":
		return r.repoChart(ctx, src.Repo, src.Chart, src.Version)
	case IsOCI(src.Chart):
		return r.ociChart(ctx, src.Chart, src.Version)
	}
	// Every file is read through the repository root; a path that leaves it
	// is explained by render.RepoPath (there is no need to walk the chart
	// first).
	return loadRepoChart(req.RepoDir, src.Chart)
}

// sourceLine is the comment Helm puts before each rendered template.
var sourceLine = regexp.MustCompile(`(?m)^# Source: (.+)$`)

// decodeManifest decodes a release manifest, naming each object after the
// template that rendered it.
func decodeManifest(manifest string) ([]render.Object, error) {
	docs := releaseutil.SplitManifests(manifest)
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	// SplitManifests keys are manifest-N; keep the chart's order.
	sort.Sort(releaseutil.BySplitManifestsOrder(keys))
	var out []render.Object
	for _, k := range keys {
		doc := docs[k]
		source := "chart"
		if m := sourceLine.FindStringSubmatch(doc); m != nil {
			source = strings.TrimSpace(m[1])
		}
		objs, err := render.DecodeObjects([]byte(doc), source)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}
