package helm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/Masterminds/semver/v3"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/repo"
	"sigs.k8s.io/yaml"
)

// ErrDigestMismatch is wrapped when a downloaded chart does not match the
// digest its repository index lists.
var ErrDigestMismatch = errors.New("chart archive does not match the repository index digest")

// maxDownload bounds what is read from a chart repository (index or
// archive).
const maxDownload = 64 << 20

// repoChart fetches a chart from an HTTP chart repository: the index gives
// the archive's URL and digest; the archive is verified against the digest
// and cached on disk by repository, name and version, so the next render
// does not touch the network.
func (r *Renderer) repoChart(ctx context.Context, repoURL, name, version string) (*chart.Chart, error) {
	if version == "" {
		return nil, fmt.Errorf("chart %s from %s: a version is required", name, repoURL)
	}
	if !chartName.MatchString(name) || strings.Contains(name, "..") {
		return nil, fmt.Errorf("chart name %q from %s: want letters, digits, '.', '_' and '-' only", name, repoURL)
	}
	// An exact version is looked up in the cache first; a range needs the
	// index to say which version it means.
	if _, err := semver.StrictNewVersion(strings.TrimPrefix(version, "v")); err == nil {
		if chrt, ok := r.cached(repoURL, name, version); ok {
			return chrt, nil
		}
	}

	if r.cacheOnly {
		return nil, fmt.Errorf("%w: %s %s from %s", ErrNotCached, name, version, repoURL)
	}
	index, err := r.fetchIndex(ctx, repoURL)
	if err != nil {
		return nil, err
	}
	cv, err := index.Get(name, version)
	if err != nil {
		var have []string
		for _, v := range index.Entries[name] {
			have = append(have, v.Version)
		}
		if len(have) == 0 {
			return nil, fmt.Errorf("chart %s is not in %s (its index has no chart of that name)", name, repoURL)
		}
		return nil, fmt.Errorf("chart %s: no version matches %q in %s (it has %s)", name, version, repoURL, strings.Join(firstN(have, 10), ", "))
	}
	if len(cv.URLs) == 0 || cv.Digest == "" {
		return nil, fmt.Errorf("chart %s %s in %s: the index gives no URL or no digest to verify", name, cv.Version, repoURL)
	}
	url, err := repo.ResolveReferenceURL(repoURL, cv.URLs[0])
	if err != nil {
		return nil, err
	}
	data, err := r.get(ctx, url)
	if err != nil {
		return nil, err
	}
	if got := digestOf(data); got != cv.Digest {
		return nil, fmt.Errorf("%w: %s: index says %s, archive is %s", ErrDigestMismatch, url, cv.Digest, got)
	}
	chrt, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("chart %s from %s: %w", name, url, err)
	}
	if err := r.store(repoURL, name, cv.Version, data); err != nil {
		return nil, err
	}
	return chrt, nil
}

// chartName is what a chart repository's chart may be called here: a name
// that cannot climb out of a folder or name a hidden file.
var chartName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// cached loads a cached chart: the reference says which archive, by
// digest, and the archive is checked against that digest on every read, so
// a cache file changed on disk is never used.
func (r *Renderer) cached(repoURL, name, version string) (*chart.Chart, bool) {
	ref, err := os.ReadFile(r.refPath(repoURL, name, version))
	if err != nil {
		return nil, false
	}
	digest := strings.TrimSpace(string(ref))
	if !sha256Hex.MatchString(digest) {
		return nil, false
	}
	data, err := os.ReadFile(r.archivePath(digest))
	if err != nil || digestOf(data) != digest {
		return nil, false
	}
	chrt, err := loader.LoadArchive(bytes.NewReader(data))
	return chrt, err == nil
}

// sha256Hex is a digest as the cache records it.
var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// fetchIndex downloads and parses a repository's index.yaml.
func (r *Renderer) fetchIndex(ctx context.Context, repoURL string) (*repo.IndexFile, error) {
	data, err := r.get(ctx, strings.TrimSuffix(repoURL, "/")+"/index.yaml")
	if err != nil {
		return nil, err
	}
	var index repo.IndexFile
	if err := yaml.Unmarshal(data, &index); err != nil {
		return nil, fmt.Errorf("index of %s: %w", repoURL, err)
	}
	if index.APIVersion == "" {
		return nil, fmt.Errorf("index of %s: %w", repoURL, repo.ErrNoAPIVersion)
	}
	index.SortEntries()
	return &index, nil
}

// get downloads a URL.
func (r *Renderer) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxDownload))
}

// The cache is content-addressed: archives are kept by their digest
// (sha256/<digest>.tgz), and a reference per repository, name and version
// (refs/<hash of the three>) holds the digest of the archive the index
// gave. No name or version from a repository becomes a path, and one
// repository's chart can never stand in for another's.
func (r *Renderer) archivePath(digest string) string {
	return filepath.Join(r.cacheDir, "sha256", digest+".tgz")
}

func (r *Renderer) refPath(repoURL, name, version string) string {
	return filepath.Join(r.cacheDir, "refs", digestOf([]byte(repoURL+"\x00"+name+"\x00"+version)))
}

// store writes a verified archive and its reference to the cache,
// atomically each.
func (r *Renderer) store(repoURL, name, version string, data []byte) error {
	digest := digestOf(data)
	for _, f := range []struct {
		path string
		data []byte
	}{{r.archivePath(digest), data}, {r.refPath(repoURL, name, version), []byte(digest + "\n")}} {
		if err := writeAtomic(f.path, f.data); err != nil {
			return fmt.Errorf("chart cache: %w", err)
		}
	}
	return nil
}

// writeAtomic writes a file through a temporary file and a rename.
func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
