package helm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/registry"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	orasregistry "oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
)

// OCIScheme prefixes a chart kept in an OCI registry.
const OCIScheme = spec.OCIScheme

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

// ociChart pulls a chart from an OCI registry as `helm pull oci://…` does
// (Helm's media types, its `+` → `_` tag convention), with oras-go, the
// library Helm's own registry client is built on: with the credentials of
// the renderer's registry config only, bounded in size, and stopped when
// ctx ends. An exact version is looked up in the cache first; a range asks
// the registry's tags. With a pinned digest the manifest is fetched by
// digest (the registry cannot substitute another chart under the tag), and
// the chart's own version must be the one asked for.
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
	switch {
	case err != nil:
		return nil, fmt.Errorf("chart %s: want oci://HOST/PATH/NAME with the version in `version` (%w)", chartRef, err)
	case parsed.Reference != "":
		return nil, fmt.Errorf("chart %s: want oci://HOST/PATH/NAME with the version in `version` (%v)", chartRef, parsed.Reference)
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

	repo, err := r.registryRepository(repoRef, parsed.Registry)
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", chartRef, err)
	}
	fail := func(err error) error {
		hint := ""
		if msg := err.Error(); strings.Contains(msg, "credential not found") || strings.Contains(msg, "401") {
			hint = " (the registry wants credentials: give a --registry-config file with an `auths` entry for " + parsed.Registry + ")"
		}
		return fmt.Errorf("chart %s %s: %w%s", chartRef, version, err, hint)
	}
	if !exact {
		tags, err := semverTags(ctx, repo)
		if err != nil {
			return nil, fail(fmt.Errorf("listing its versions: %w", err))
		}
		if tag, err = registry.GetTagMatchingVersionOrConstraint(tags, tag); err != nil {
			return nil, fmt.Errorf("chart %s: no version matches %q (the registry has %s)", chartRef, version, orNone(firstN(tags, 10)))
		}
	}
	ref := strings.ReplaceAll(tag, "+", "_")
	if pin != "" {
		ref = pin
	}
	data, manifestDigest, err := pullChartLayer(ctx, repo, ref)
	if err != nil {
		return nil, notThere(ctx, repo, chartRef, version, pin, fail(err))
	}
	if pin != "" && manifestDigest != pin {
		return nil, fmt.Errorf("%w: %s: pinned %s, registry gave %s", ErrOCIDigest, chartRef, pin, manifestDigest)
	}
	chrt, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("chart %s %s: %w", chartRef, version, err)
	}
	if got := chrt.Metadata.Version; strings.TrimPrefix(got, "v") != strings.TrimPrefix(tag, "v") {
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

// pullChartLayer fetches the manifest at ref (a tag or a digest) and the
// chart archive it names, each checked against its digest and size.
func pullChartLayer(ctx context.Context, repo *remote.Repository, ref string) (data []byte, manifestDigest string, err error) {
	desc, rc, err := repo.FetchReference(ctx, ref)
	if err != nil {
		return nil, "", err
	}
	defer rc.Close()
	if desc.Size > maxManifest {
		return nil, "", fmt.Errorf("manifest of %d bytes, more than %d", desc.Size, maxManifest)
	}
	raw, err := content.ReadAll(rc, desc)
	if err != nil {
		return nil, "", err
	}
	var manifest ocispec.Manifest
	if err := json.Unmarshal(raw, &manifest); err != nil {
		return nil, "", fmt.Errorf("manifest: %w", err)
	}
	if manifest.Config.MediaType != registry.ConfigMediaType {
		return nil, "", fmt.Errorf("not a Helm chart: its config is %q, not %q", manifest.Config.MediaType, registry.ConfigMediaType)
	}
	i := slices.IndexFunc(manifest.Layers, func(l ocispec.Descriptor) bool {
		return l.MediaType == registry.ChartLayerMediaType || l.MediaType == registry.LegacyChartLayerMediaType
	})
	if i < 0 {
		return nil, "", fmt.Errorf("the manifest has no layer of media type %s", registry.ChartLayerMediaType)
	}
	layer := manifest.Layers[i]
	if layer.Size > maxDownload {
		return nil, "", fmt.Errorf("chart archive of %d bytes, more than %d", layer.Size, maxDownload)
	}
	if data, err = content.FetchAll(ctx, repo, layer); err != nil {
		return nil, "", err
	}
	return data, desc.Digest.String(), nil
}

// maxManifest bounds an OCI manifest.
const maxManifest = 4 << 20

// semverTags lists the repository's tags that are chart versions, newest
// first, with Helm's `_` read back as `+`.
func semverTags(ctx context.Context, repo *remote.Repository) ([]string, error) {
	var versions []*semver.Version
	err := repo.Tags(ctx, "", func(tags []string) error {
		for _, t := range tags {
			if v, err := semver.StrictNewVersion(strings.ReplaceAll(t, "_", "+")); err == nil {
				versions = append(versions, v)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(versions, func(a, b *semver.Version) int { return b.Compare(a) })
	out := make([]string, len(versions))
	for i, v := range versions {
		out[i] = v.String()
	}
	return out, nil
}

// registryRepository is a registry repository reached with only the
// credentials of the renderer's registry config (Docker's config.json
// format): not the user's Docker or Helm credentials, and no credential
// helper programs.
func (r *Renderer) registryRepository(repoRef, host string) (*remote.Repository, error) {
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
		read, config := credentials.Credential(store), r.registryConfig
		credential = func(ctx context.Context, hostport string) (auth.Credential, error) {
			c, err := read(ctx, hostport)
			if err != nil {
				// The reader's error quotes a malformed auth entry decoded:
				// a token, in a message that reaches logs and status.
				return auth.EmptyCredential, fmt.Errorf("registry config %s: the credentials for %s cannot be read: an auths entry holds \"auth\": base64 of \"user:password\"", config, hostport)
			}
			return c, nil
		}
	}
	repo, err := remote.NewRepository(repoRef)
	if err != nil {
		return nil, err
	}
	client := &auth.Client{Client: r.client, Credential: credential, Cache: auth.NewCache()}
	client.SetUserAgent("flotilla")
	repo.Client = client
	repo.PlainHTTP = slices.Contains(r.plainHTTP, host)
	return repo, nil
}

// notThere says, for a version the registry does not have, which it has
// (as for a range); other errors are as they are.
func notThere(ctx context.Context, repo *remote.Repository, chartRef, version, pin string, err error) error {
	if errors.Is(err, errdef.ErrNotFound) && pin == "" {
		if tags, terr := semverTags(ctx, repo); terr == nil {
			return fmt.Errorf("chart %s: no version %s (the registry has %s)", chartRef, version, orNone(firstN(tags, 10)))
		}
	}
	return err
}

// orNone lists versions, or says there are none.
func orNone(versions []string) string {
	if len(versions) == 0 {
		return "no chart versions"
	}
	return strings.Join(versions, ", ")
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
