package helm_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/repo"

	"github.com/flotilla-gitops/flotilla/internal/rendertest"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/helm"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

// chartRepo serves a real chart repository (index.yaml and archives made
// by Helm's own packaging code) over HTTP and counts requests.
func chartRepo(t *testing.T) (url, dir string, requests *atomic.Int64) {
	t.Helper()
	dir = t.TempDir()
	chrt, err := loader.Load("testdata/repo/charts/shop")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1.2.3", "1.3.0"} {
		chrt.Metadata.Version = v
		if _, err := chartutil.Save(chrt, dir); err != nil {
			t.Fatal(err)
		}
	}
	requests = &atomic.Int64{}
	files := http.FileServer(http.Dir(dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	index, err := repo.IndexDirectory(dir, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := index.WriteFile(filepath.Join(dir, "index.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	return srv.URL, dir, requests
}

func repoRequest(url, version string) *render.Request {
	req := shopRequest(`{"replicas": 1}`, false)
	req.Source.Helm = &spec.Helm{Repo: url, Chart: "shop", Version: version}
	return req
}

// TestChartFromRepository renders a chart from an HTTP repository, then
// from the cache without any request.
func TestChartFromRepository(t *testing.T) {
	url, _, requests := chartRepo(t)
	cache := t.TempDir()
	out, err := helm.New(helm.Options{CacheDir: cache}).Render(context.Background(), repoRequest(url, "1.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	if rendertest.ByKey(out.Objects)["Deployment.apps shop-shop"] == nil {
		t.Fatalf("no deployment rendered")
	}
	if requests.Load() != 2 {
		t.Errorf("%d requests, want index + archive", requests.Load())
	}
	before := requests.Load()
	if _, err := helm.New(helm.Options{CacheDir: cache}).Render(context.Background(), repoRequest(url, "1.2.3")); err != nil {
		t.Fatal(err)
	}
	if requests.Load() != before {
		t.Errorf("cached chart fetched again")
	}

	// A version range asks the index which version it means.
	out, err = helm.New(helm.Options{CacheDir: cache}).Render(context.Background(), repoRequest(url, "~1.3"))
	if err != nil {
		t.Fatal(err)
	}
	deploy := rendertest.ByKey(out.Objects)["Deployment.apps shop-shop"]
	if got := nested(deploy, "metadata", "labels", "helm.sh/chart"); got != "shop-1.3.0" {
		t.Errorf("range ~1.3 rendered %v", got)
	}
}

// TestChartRepositoryErrors checks a tampered archive and a missing
// version.
func TestChartRepositoryErrors(t *testing.T) {
	url, dir, _ := chartRepo(t)
	r := helm.New(helm.Options{CacheDir: t.TempDir()})

	_, err := r.Render(context.Background(), repoRequest(url, "9.9.9"))
	if err == nil || !strings.Contains(err.Error(), `chart shop: no version matches "9.9.9" in `+url+" (it has 1.3.0, 1.2.3)") {
		t.Errorf("missing version: %v", err)
	}

	archive := filepath.Join(dir, "shop-1.2.3.tgz")
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(archive, append(data, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = r.Render(context.Background(), repoRequest(url, "1.2.3"))
	if !errors.Is(err, helm.ErrDigestMismatch) {
		t.Errorf("tampered archive: %v", err)
	}
	if _, err := r.Render(context.Background(), repoRequest(url, "")); err == nil || !strings.Contains(err.Error(), "a version is required") {
		t.Errorf("no version: %v", err)
	}
}

// TestChartCacheStaysInItself: a chart name that climbs out of the cache is
// refused before anything is fetched or written, and an archive changed in
// the cache is never served (the digest is checked on every read: the
// chart is fetched and verified again).
func TestChartCacheStaysInItself(t *testing.T) {
	url, _, requests := chartRepo(t)
	parent := t.TempDir()
	cache := filepath.Join(parent, "cache")
	r := helm.New(helm.Options{CacheDir: cache})
	for _, name := range []string{"../x", "../../etc/passwd", ".hidden", "a/b"} {
		req := repoRequest(url, "1.2.3")
		req.Source.Helm.Chart = name
		if _, err := r.Render(context.Background(), req); err == nil || !strings.Contains(err.Error(), "chart name") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 || requests.Load() != 0 {
		t.Errorf("written beside the cache: %v; %d requests", entries, requests.Load())
	}

	if _, err := r.Render(context.Background(), repoRequest(url, "1.2.3")); err != nil {
		t.Fatal(err)
	}
	archives, err := filepath.Glob(filepath.Join(cache, "sha256", "*.tgz"))
	if err != nil || len(archives) != 1 {
		t.Fatalf("cached archives %v %v", archives, err)
	}
	data, err := os.ReadFile(archives[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(archives[0], append(data, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	before := requests.Load()
	if _, err := r.Render(context.Background(), repoRequest(url, "1.2.3")); err != nil {
		t.Fatal(err)
	}
	if requests.Load() != before+2 {
		t.Errorf("a changed cache file was served (%d requests, want index + archive again)", requests.Load()-before)
	}
}

// TestChartRepositoryThatNeverAnswers: requests to a chart repository are
// bounded in time, so a repository that never answers fails the bundle.
func TestChartRepositoryThatNeverAnswers(t *testing.T) {
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-done:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(done)
	r := helm.New(helm.Options{CacheDir: t.TempDir(), HTTPTimeout: 200 * time.Millisecond})
	_, err := r.Render(context.Background(), repoRequest(srv.URL, "1.2.3"))
	if err == nil || !strings.Contains(err.Error(), "Client.Timeout exceeded") {
		t.Errorf("error %v", err)
	}
}
