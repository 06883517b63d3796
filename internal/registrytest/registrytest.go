// Package registrytest runs a real OCI registry for tests: CNCF
// Distribution's (the registry behind Docker Hub, GitLab's and Harbor's),
// in this process, storing blobs in memory, optionally behind htpasswd
// authentication, and pushes Helm charts to it with Helm's own registry
// client.
package registrytest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/bcrypt"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/registry"

	// The registry's parts, registered by import.
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

// Registry is a running registry.
type Registry struct {
	// Host is host:port, reached over plain HTTP.
	Host string
	// Username and Password are required when the registry was started
	// with authentication.
	Username, Password string
	// Requests counts the HTTP requests the registry answered.
	Requests atomic.Int64
}

// Start starts a registry for the test; with auth, every request needs
// Username and Password.
func Start(t testing.TB, auth bool) *Registry {
	t.Helper()
	cfg := baseConfig()
	r := &Registry{}
	if auth {
		r.Username, r.Password = "fleet-ci", "s3cret-registry-pass"
		hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(t.TempDir(), "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(r.Username+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": "flotilla-test", "path": htpasswd}}
	}
	t.Cleanup(r.serve(cfg))
	return r
}

// Serve starts an open registry (no authentication) until stop is
// called: for the demo, which is not a test.
func Serve() (r *Registry, stop func()) {
	r = &Registry{}
	return r, r.serve(baseConfig())
}

// baseConfig is an in-memory registry's configuration, quiet.
func baseConfig() *configuration.Configuration {
	// The registry logs every 404 (a client's probe) as an error.
	logrus.SetOutput(io.Discard)
	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{"inmemory": configuration.Parameters{}}
	cfg.Log.AccessLog.Disabled = true
	cfg.Log.Level = "error"
	return cfg
}

func (r *Registry) serve(cfg *configuration.Configuration) (stop func()) {
	app := handlers.NewApp(context.Background(), cfg)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.Requests.Add(1)
		app.ServeHTTP(w, req)
	}))
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	return srv.Close
}

// ConfigFile writes a Docker config.json with the registry's credentials
// and returns its path.
func (r *Registry) ConfigFile(t testing.TB) string {
	return r.ConfigFileWith(t, r.Username, r.Password)
}

// ConfigFileWith writes a Docker config.json with the given credentials
// for the registry and returns its path.
func (r *Registry) ConfigFileWith(t testing.TB, user, pass string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	config := fmt.Sprintf(`{"auths": {%q: {"username": %q, "password": %q}}}`, r.Host, user, pass)
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Push packages the chart as `helm package` does and pushes it to
// oci://HOST/repo/NAME:VERSION with Helm's registry client, returning the
// manifest's digest.
func (r *Registry) Push(t testing.TB, repo string, c *chart.Chart) string {
	t.Helper()
	dir := t.TempDir()
	archive, err := chartutil.Save(c, dir)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	opts := []registry.ClientOption{registry.ClientOptPlainHTTP(),
		registry.ClientOptCredentialsFile(filepath.Join(dir, "no-credentials.json"))}
	if r.Username != "" {
		opts = append(opts, registry.ClientOptBasicAuth(r.Username, r.Password))
	}
	client, err := registry.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	ref := fmt.Sprintf("%s/%s/%s:%s", r.Host, repo, c.Name(), c.Metadata.Version)
	res, err := client.Push(data, ref)
	if err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return res.Manifest.Digest
}
