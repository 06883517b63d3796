package helm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/registry"
	orasregistry "oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
)

// OCIScheme prefixes a chart kept in an OCI registry.
const OCIScheme = "oci://"

// ErrOCIDigest is wrapped when a pulled OCI chart is not the one its
// version pins.
var ErrOCIDigest = errors.New("OCI chart does not match the pinned digest")

// ociDigest is a pinned manifest digest.
var ociDigest = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// IsOCI reports whether a chart reference names an OCI registry.
func IsOCI(chartRef string) bool { return strings.HasPrefix(chartRef, OCIScheme) }

// ociVersion splits a bundle's version into the chart version (or range)
// and the pinned manifest digest ("1.2.3@sha256:…").
func ociVersion(version string) (tag, digest string, err error) {
	tag, digest, pinned := strings.Cut(version, "@")
	if pinned && !ociDigest.MatchString(digest) {
		return "", "", fmt.Errorf("version %q: a pinned digest is sha256: and 64 lowercase hex digits", version)
	}
	if tag == "" {
		return "", "", fmt.Errorf("version %q: a chart version is required before the digest", version)
	}
	return tag, digest, nil
}

// ociChart pulls a chart from an OCI registry, as `helm pull oci://…`
// does, with the credentials of the renderer's registry config only. An
// exact version is looked up in the cache first; a range asks the
// registry's tags. With a pinned digest, the manifest is pulled by digest
// (the registry cannot substitute another chart under the tag), and the
// chart's own version must be the one asked for.
func (r *Renderer) ociChart(ctx context.Context, chartRef, version string) (*chart.Chart, error) {
	if version == "" {
		return nil, fmt.Errorf("chart %s: a version is required", chartRef)
	}
	tag, pin, err := ociVersion(version)
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", chartRef, err)
	}
	repoRef := strings.TrimPrefix(chartRef, OCIScheme)
	parsed, err := orasregistry.ParseReference(repoRef)
	if err != nil || parsed.Reference != "" {
		return nil, fmt.Errorf("chart %s: want oci://HOST/PATH/NAME with the version in `version` (%v)", chartRef, err)
	}
	exact := false
	if _, err := semver.StrictNewVersion(strings.TrimPrefix(tag, "v")); err == nil {
		exact = true
		if chrt, ok := r.cached(chartRef, "", version); ok {
			return chrt, nil
		}
	}

	if r.cacheOnly {
		return nil, fmt.Errorf("%w: %s %s", ErrNotCached, chartRef, version)
	}
	client, err := r.registryClient(parsed.Registry)
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", chartRef, err)
	}
	if !exact {
		tags, err := client.Tags(repoRef)
		if err != nil {
			return nil, fmt.Errorf("chart %s: listing its versions: %w", chartRef, err)
		}
		if tag, err = registry.GetTagMatchingVersionOrConstraint(tags, tag); err != nil {
			return nil, fmt.Errorf("chart %s: no version matches %q (the registry has %s)", chartRef, version, strings.Join(firstN(tags, 10), ", "))
		}
	}
	ref := repoRef + ":" + tag
	if pin != "" {
		ref = repoRef + "@" + pin
	}
	type pulled struct {
		res *registry.PullResult
		err error
	}
	// Helm's client takes no context: the pull is abandoned when ctx ends
	// (the render's timeout), and its requests end with the HTTP client's
	// timeout.
	done := make(chan pulled, 1)
	go func() {
		res, err := client.Pull(ref, registry.PullOptWithChart(true))
		done <- pulled{res, err}
	}()
	var p pulled
	select {
	case p = <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("chart %s %s: %w", chartRef, version, context.Cause(ctx))
	}
	if p.err != nil {
		hint := ""
		if msg := p.err.Error(); strings.Contains(msg, "credential not found") || strings.Contains(msg, "401") {
			hint = " (the registry wants credentials: give a --registry-config file with an `auths` entry for " + parsed.Registry + ")"
		}
		return nil, fmt.Errorf("chart %s %s: %w%s", chartRef, version, p.err, hint)
	}
	if pin != "" && p.res.Manifest.Digest != pin {
		return nil, fmt.Errorf("%w: %s: pinned %s, registry gave %s", ErrOCIDigest, chartRef, pin, p.res.Manifest.Digest)
	}
	data := p.res.Chart.Data
	if want := "sha256:" + digestOf(data); p.res.Chart.Digest != want {
		return nil, fmt.Errorf("chart %s %s: the chart layer is %s, not %s", chartRef, version, want, p.res.Chart.Digest)
	}
	chrt, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("chart %s %s: %w", chartRef, version, err)
	}
	if got := chrt.Metadata.Version; strings.TrimPrefix(got, "v") != strings.TrimPrefix(strings.ReplaceAll(tag, "_", "+"), "v") {
		if pin != "" {
			return nil, fmt.Errorf("%w: %s: %s is chart version %s, not %s", ErrOCIDigest, chartRef, pin, got, tag)
		}
		return nil, fmt.Errorf("chart %s %s: the pulled chart is version %s", chartRef, version, got)
	}
	if want := filepathBase(repoRef); chrt.Name() != want {
		return nil, fmt.Errorf("chart %s %s: the pulled chart is named %q, not %q", chartRef, version, chrt.Name(), want)
	}
	if exact {
		if err := r.store(chartRef, "", version, data); err != nil {
			return nil, err
		}
	}
	return chrt, nil
}

// registryClient is Helm's registry client with only the credentials of
// the renderer's registry config (Docker's config.json format): not the
// user's Docker or Helm credentials, and no credential helper programs.
func (r *Renderer) registryClient(host string) (*registry.Client, error) {
	var credential auth.CredentialFunc // anonymous
	if r.registryConfig != "" {
		// A missing file would read as no credentials at all.
		if _, err := os.Stat(r.registryConfig); err != nil {
			return nil, fmt.Errorf("registry config: %w", err)
		}
		store, err := credentials.NewFileStore(r.registryConfig)
		if err != nil {
			return nil, fmt.Errorf("registry config %s: %w", r.registryConfig, err)
		}
		credential = credentials.Credential(store)
	}
	authorizer := &auth.Client{Client: r.client, Credential: credential, Cache: auth.NewCache()}
	authorizer.SetUserAgent("flotilla")
	opts := []registry.ClientOption{
		registry.ClientOptHTTPClient(r.client),
		registry.ClientOptAuthorizer(*authorizer),
		// Helm reads this file when it makes its client (Pull never uses
		// it: the authorizer above answers); it must not be the user's.
		registry.ClientOptCredentialsFile(filepath.Join(r.cacheDir, "no-registry-config.json")),
	}
	if slices.Contains(r.plainHTTP, host) {
		opts = append(opts, registry.ClientOptPlainHTTP())
	}
	return registry.NewClient(opts...)
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], "…")
	}
	return s
}

func filepathBase(ref string) string {
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		return ref[i+1:]
	}
	return ref
}
