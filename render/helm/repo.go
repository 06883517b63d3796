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
	// An exact version is looked up in the cache first; a range needs the
	// index to say which version it means.
	if _, err := semver.StrictNewVersion(strings.TrimPrefix(version, "v")); err == nil {
		if chrt, ok := r.cached(r.cachePath(repoURL, name, version)); ok {
			return chrt, nil
		}
	}

	index, err := r.fetchIndex(ctx, repoURL)
	if err != nil {
		return nil, err
	}
	cv, err := index.Get(name, version)
	if err != nil {
		return nil, fmt.Errorf("chart %s version %s is not in %s: %w", name, version, repoURL, err)
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
	if err := r.store(r.cachePath(repoURL, name, cv.Version), data, cv.Digest); err != nil {
		return nil, err
	}
	return chrt, nil
}

// cached loads a cached archive whose digest still matches the one recorded
// when it was verified.
func (r *Renderer) cached(path string) (*chart.Chart, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, false
	}
	sum, err := os.ReadFile(path + ".sha256")
	if err != nil || digestOf(data) != strings.TrimSpace(string(sum)) {
		return nil, false
	}
	chrt, err := loader.LoadArchive(bytes.NewReader(data))
	return chrt, err == nil
}

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

// cachePath is where a chart archive is kept: a folder per repository (its
// URL hashed) and a file per name and version.
func (r *Renderer) cachePath(repoURL, name, version string) string {
	return filepath.Join(r.cacheDir, digestOf([]byte(repoURL))[:16], name+"-"+version+".tgz")
}

// store writes an archive and its verified digest to the cache, atomically.
func (r *Renderer) store(path string, data []byte, digest string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("chart cache: %w", err)
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{path, data}, {path + ".sha256", []byte(digest + "\n")}} {
		tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
		if err != nil {
			return fmt.Errorf("chart cache: %w", err)
		}
		_, werr := tmp.Write(f.data)
		cerr := tmp.Close()
		if err := errors.Join(werr, cerr); err != nil {
			_ = os.Remove(tmp.Name())
			return fmt.Errorf("chart cache: %w", err)
		}
		if err := os.Rename(tmp.Name(), f.path); err != nil {
			return fmt.Errorf("chart cache: %w", err)
		}
	}
	return nil
}

func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
