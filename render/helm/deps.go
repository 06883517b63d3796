package helm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/chart"

	"github.com/flotilla-gitops/flotilla/render"
)

// dependencies makes sure that every dependency the chart's Chart.yaml
// lists is there, as `helm template` requires (Helm's renderer would
// silently leave a missing one out). One vendored in charts/ is used as
// is. For a chart of the fleet repository, a missing one is taken from
// Chart.lock — what `helm dependency build` does, in memory, without
// writing into the repository: a `file://` dependency is read from the
// repository (never outside it); an HTTP(S) or OCI one is fetched, when
// downloads are allowed, at the exact version the lock gives, verified as
// any chart (the repository index's digest, the registry's content
// digests) and cached. The lock must be in sync with Chart.yaml (its
// digest is Helm's hash of both dependency lists).
func (r *Renderer) dependencies(ctx context.Context, req *render.Request, chrt *chart.Chart) error {
	reqs := chrt.Metadata.Dependencies
	var missing []*chart.Dependency
	for _, d := range reqs {
		if !slices.ContainsFunc(chrt.Dependencies(), func(c *chart.Chart) bool { return c.Name() == d.Name }) {
			missing = append(missing, d)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	names := make([]string, len(missing))
	for i, d := range missing {
		names[i] = d.Name
	}
	src := req.Source.Helm
	if !src.InRepository() {
		return fmt.Errorf("chart %s: found in Chart.yaml, but missing in charts/ directory: %s", chrt.Name(), strings.Join(names, ", "))
	}
	if chrt.Lock == nil {
		return fmt.Errorf("chart %s: found in Chart.yaml, but missing in charts/ directory: %s; and there is no Chart.lock to fetch them from: run `helm dependency update %s` and commit Chart.lock (or the charts/ it fills)",
			src.Chart, strings.Join(names, ", "), src.Chart)
	}
	if sum, err := hashDependencies(reqs, chrt.Lock.Dependencies); err != nil || sum != chrt.Lock.Digest {
		return fmt.Errorf("chart %s: Chart.lock is out of sync with Chart.yaml: run `helm dependency update %s` and commit Chart.lock", src.Chart, src.Chart)
	}
	for _, d := range missing {
		i := slices.IndexFunc(chrt.Lock.Dependencies, func(l *chart.Dependency) bool {
			return l.Name == d.Name && l.Repository == d.Repository
		})
		if i < 0 {
			return fmt.Errorf("chart %s: dependency %s is not in Chart.lock: run `helm dependency update %s`", src.Chart, d.Name, src.Chart)
		}
		locked := chrt.Lock.Dependencies[i]
		sub, err := r.lockedDependency(ctx, req, locked)
		if err != nil {
			return fmt.Errorf("chart %s: dependency %s %s: %w", src.Chart, locked.Name, locked.Version, err)
		}
		if sub.Name() != locked.Name || (!strings.HasPrefix(locked.Repository, "file://") && sub.Metadata.Version != locked.Version) {
			return fmt.Errorf("chart %s: dependency %s %s: %s gave chart %s %s", src.Chart, locked.Name, locked.Version, locked.Repository, sub.Name(), sub.Metadata.Version)
		}
		chrt.AddDependency(sub)
	}
	return nil
}

// lockedDependency loads one dependency at the version the lock gives.
func (r *Renderer) lockedDependency(ctx context.Context, req *render.Request, locked *chart.Dependency) (*chart.Chart, error) {
	repo := locked.Repository
	switch {
	case strings.HasPrefix(repo, "file://"):
		// Relative to the chart's folder, read through the repository
		// root like the chart itself.
		return loadRepoChart(req.RepoDir, path.Join(req.Source.Helm.Chart, strings.TrimPrefix(repo, "file://")))
	case IsOCI(repo), strings.HasPrefix(repo, "https://"), strings.HasPrefix(repo, "http://"):
		if !r.allowDownloads {
			return nil, notFetched(fmt.Sprintf("not in charts/: vendor it (`helm dependency build`) or let Flotilla fetch it from %s (--allow-chart-downloads)", repo))
		}
		if IsOCI(repo) {
			return r.ociChart(ctx, strings.TrimSuffix(repo, "/")+"/"+locked.Name, locked.Version)
		}
		return r.repoChart(ctx, repo, locked.Name, locked.Version)
	case repo == "":
		return nil, fmt.Errorf("not in charts/ and Chart.lock names no repository")
	default:
		return nil, fmt.Errorf("repository %q: only https://, oci:// and file:// repositories are fetched (a named repository, @name or alias:name, needs its URL in Chart.yaml)", repo)
	}
}

// hashDependencies is the digest Helm writes in Chart.lock (Helm's
// internal resolver.HashReq): the SHA-256 of the JSON of Chart.yaml's and
// the lock's dependency lists.
func hashDependencies(reqs, locked []*chart.Dependency) (string, error) {
	data, err := json.Marshal([2][]*chart.Dependency{reqs, locked})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// ErrNotVendored is wrapped when a chart's locked dependency is neither in
// its charts/ folder nor may be downloaded. It is ErrNotCached too.
var ErrNotVendored = errors.New("dependency not vendored")

// notFetched is a dependency the renderer may not download: ErrNotVendored
// and ErrNotCached to errors.Is (vet notes it rather than failing, as an
// agent allowed to download would render it), with its own message.
type notFetched string

func (e notFetched) Error() string { return string(e) }
func (e notFetched) Is(target error) bool {
	return target == ErrNotVendored || target == ErrNotCached
}
