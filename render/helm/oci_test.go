package helm_test

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"

	"github.com/flotilla-gitops/flotilla/internal/registrytest"
	"github.com/flotilla-gitops/flotilla/internal/rendertest"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/helm"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

// pushShop pushes the test chart to the registry at each version and
// returns the manifest digests by version.
func pushShop(t *testing.T, reg *registrytest.Registry, versions ...string) map[string]string {
	t.Helper()
	digests := map[string]string{}
	for _, v := range versions {
		c, err := loader.Load("testdata/repo/charts/shop")
		if err != nil {
			t.Fatal(err)
		}
		c.Metadata.Version = v
		digests[v] = reg.Push(t, "charts", c)
	}
	return digests
}

func ociRequest(reg *registrytest.Registry, version string) *render.Request {
	req := shopRequest(shopValues, false)
	req.Source.Helm = &spec.Helm{Chart: "oci://" + reg.Host + "/charts/shop", Version: version}
	return req
}

// TestOCIChart pulls a chart from a real registry: by version (then from
// the cache, with no request), by range, and pinned by digest; a pin the
// registry does not have, or that names another version, fails.
func TestOCIChart(t *testing.T) {
	reg := registrytest.Start(t, false)
	digests := pushShop(t, reg, "1.2.3", "1.3.0")
	local, err := helm.New(helm.Options{}).Render(context.Background(), shopRequest(shopValues, false))
	if err != nil {
		t.Fatal(err)
	}
	opts := func() helm.Options {
		return helm.Options{CacheDir: t.TempDir(), PlainHTTPRegistries: []string{reg.Host}}
	}

	cached := opts()
	before := reg.Requests.Load()
	out, err := helm.New(cached).Render(context.Background(), ociRequest(reg, "1.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	rendertest.CompareObjects(t, out.Objects, local.Objects)
	if reg.Requests.Load() == before {
		t.Fatal("no request reached the registry")
	}
	before = reg.Requests.Load()
	if _, err := helm.New(cached).Render(context.Background(), ociRequest(reg, "1.2.3")); err != nil {
		t.Fatal(err)
	}
	if n := reg.Requests.Load() - before; n != 0 {
		t.Errorf("a cached exact version made %d requests", n)
	}

	for _, tc := range []struct{ version, wantChart string }{
		{"~1.2.0", "shop-1.2.3"},
		{">=1.0.0", "shop-1.3.0"},
		{"1.3.0@" + digests["1.3.0"], "shop-1.3.0"},
	} {
		out, err := helm.New(opts()).Render(context.Background(), ociRequest(reg, tc.version))
		if err != nil {
			t.Errorf("%s: %v", tc.version, err)
			continue
		}
		if got := nested(rendertest.ByKey(out.Objects)["Deployment.apps shop-shop"], "metadata", "labels", "helm.sh/chart"); got != tc.wantChart {
			t.Errorf("%s: chart label %v, want %s", tc.version, got, tc.wantChart)
		}
	}

	_, err = helm.New(opts()).Render(context.Background(), ociRequest(reg, "1.2.3@"+digests["1.3.0"]))
	if !errors.Is(err, helm.ErrOCIDigest) {
		t.Errorf("a pin naming another version: %v", err)
	}
	missing := "sha256:" + strings.Repeat("0", 64)
	_, err = helm.New(opts()).Render(context.Background(), ociRequest(reg, "1.2.3@"+missing))
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("a pin the registry does not have: %v", err)
	}
	for _, bad := range []string{"1.2.3@sha256:abc", "@" + digests["1.2.3"], "9.9.9"} {
		if _, err := helm.New(opts()).Render(context.Background(), ociRequest(reg, bad)); err == nil {
			t.Errorf("version %q accepted", bad)
		}
	}
}

// TestOCIChartWithCredentials: a registry behind authentication answers
// only with the credentials of --registry-config, and the password is in
// no error.
func TestOCIChartWithCredentials(t *testing.T) {
	reg := registrytest.Start(t, true)
	pushShop(t, reg, "1.2.3")
	render := func(config string) error {
		_, err := helm.New(helm.Options{CacheDir: t.TempDir(), PlainHTTPRegistries: []string{reg.Host}, RegistryConfig: config}).
			Render(context.Background(), ociRequest(reg, "1.2.3"))
		return err
	}
	// The user's Docker and Helm credentials are never used: only the
	// file given.
	home := t.TempDir()
	docker := filepath.Dir(reg.ConfigFile(t))
	t.Setenv("DOCKER_CONFIG", docker)
	t.Setenv("HOME", home)
	t.Setenv("HELM_REGISTRY_CONFIG", filepath.Join(docker, "config.json"))
	if err := render(""); err == nil || !strings.Contains(err.Error(), "--registry-config") {
		t.Errorf("anonymous (with credentials in the user's Docker config): %v", err)
	}
	if err := render(reg.ConfigFile(t)); err != nil {
		t.Errorf("with the registry config: %v", err)
	}
	const wrongPassword = "not-the-password-31f"
	err := render(reg.ConfigFileWith(t, reg.Username, wrongPassword))
	if err == nil {
		t.Fatal("a wrong password was accepted")
	}
	for _, secret := range []string{wrongPassword, reg.Password} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows a password: %v", err)
		}
	}
	if err := render("/nonexistent/config.json"); err == nil || !strings.Contains(err.Error(), "/nonexistent/config.json") {
		t.Errorf("a missing registry config: %v", err)
	}
	// An auths entry that is a bare token, not base64(user:password): the
	// reader's error would quote the token decoded.
	const token = "ghp_token-in-a-malformed-entry-7a1"
	malformed := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(malformed, []byte(`{"auths": {"`+reg.Host+`": {"auth": "`+base64.StdEncoding.EncodeToString([]byte(token))+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := render(malformed); err == nil || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "cannot be read") {
		t.Errorf("a malformed auth entry: %v", err)
	}
}
