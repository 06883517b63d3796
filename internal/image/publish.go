package image

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Built is an image index and the SBOM referrers of its images.
type Built struct {
	Index v1.ImageIndex
	// SBOMs point at the index's images, one per platform.
	SBOMs []v1.Image
}

// Assemble builds the index from the binaries and attaches each image's
// SBOM.
func Assemble(bins []Binary, m Metadata) (*Built, error) {
	idx, err := Index(bins, m)
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	b := &Built{Index: idx}
	for i, desc := range im.Manifests {
		sbom, err := SBOM(bins[i].Path, m)
		if err != nil {
			return nil, err
		}
		subject := v1.Descriptor{MediaType: desc.MediaType, Size: desc.Size, Digest: desc.Digest}
		ref, err := Referrer(subject, SBOMMediaType, sbom, map[string]string{
			"org.opencontainers.image.created": m.Created.UTC().Format("2006-01-02T15:04:05Z"),
			"org.opencontainers.image.title":   fmt.Sprintf("SBOM of flotilla %s %s", m.Version, desc.Platform),
		})
		if err != nil {
			return nil, err
		}
		b.SBOMs = append(b.SBOMs, ref)
	}
	return b, nil
}

// WriteLayout writes b as an OCI image layout at dir (replacing what was
// there): the index tagged tag (org.opencontainers.image.ref.name) and the
// SBOM artifacts beside it.
func WriteLayout(dir string, b *Built, tag string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(b.Index, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag,
	})); err != nil {
		return fmt.Errorf("writing the image layout at %s: %w", dir, err)
	}
	for _, s := range b.SBOMs {
		if err := p.AppendImage(s); err != nil {
			return fmt.Errorf("writing an SBOM into %s: %w", dir, err)
		}
	}
	return nil
}

// Push writes b to the registry: the index as repository:tag (ref names
// the repository, with the tag or without it; a tag that is not the
// version is refused, since `flotilla version` must print the tag), then
// the SBOMs by digest. Credentials come from the Docker configuration
// ($DOCKER_CONFIG or ~/.docker/config.json), as every registry client
// reads them. It returns the index's reference by digest.
func Push(ctx context.Context, ref string, b *Built, version string, opts ...remote.Option) (name.Digest, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return name.Digest{}, fmt.Errorf("IMAGE=%s: %w", ref, err)
	}
	tag := r.Context().Tag(version)
	if t, ok := r.(name.Tag); ok && hasExplicitTag(ref) && t.TagStr() != version {
		return name.Digest{}, fmt.Errorf("IMAGE=%s: the tag must be the version this build prints (%s); name the repository alone to tag it so", ref, version)
	}
	if _, ok := r.(name.Digest); ok {
		return name.Digest{}, fmt.Errorf("IMAGE=%s: name a repository (optionally with the tag %s), not a digest", ref, version)
	}
	opts = append([]remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}, opts...)
	if err := remote.WriteIndex(tag, b.Index, opts...); err != nil {
		return name.Digest{}, fmt.Errorf("pushing %s: %w", tag, err)
	}
	d, err := b.Index.Digest()
	if err != nil {
		return name.Digest{}, err
	}
	for _, s := range b.SBOMs {
		sd, err := s.Digest()
		if err != nil {
			return name.Digest{}, err
		}
		if err := remote.Write(r.Context().Digest(sd.String()), s, opts...); err != nil {
			return name.Digest{}, fmt.Errorf("pushing the SBOM %s: %w", sd, err)
		}
	}
	return r.Context().Digest(d.String()), nil
}

// hasExplicitTag tells whether ref spells a tag (name.ParseReference adds
// "latest" to a bare repository): a colon after the last slash.
func hasExplicitTag(ref string) bool {
	return strings.Contains(ref[strings.LastIndex(ref, "/")+1:], ":")
}

// ReadLayout reads an OCI layout WriteLayout wrote: the tagged index, its
// tag, and the SBOM artifacts beside it.
func ReadLayout(dir string) (*Built, string, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, "", fmt.Errorf("%s is not an image layout (make image writes it): %w", dir, err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		return nil, "", err
	}
	im, err := top.IndexManifest()
	if err != nil {
		return nil, "", err
	}
	b := &Built{}
	tag := ""
	for _, desc := range im.Manifests {
		switch desc.MediaType {
		case types.OCIImageIndex:
			if b.Index, err = top.ImageIndex(desc.Digest); err != nil {
				return nil, "", err
			}
			tag = desc.Annotations["org.opencontainers.image.ref.name"]
		case types.OCIManifestSchema1:
			s, err := top.Image(desc.Digest)
			if err != nil {
				return nil, "", err
			}
			b.SBOMs = append(b.SBOMs, s)
		}
	}
	if b.Index == nil || tag == "" {
		return nil, "", fmt.Errorf("%s holds no tagged image index", dir)
	}
	return b, tag, nil
}

// LDFlags stamps the version and commit `flotilla version` prints.
func LDFlags(version, commit string) string {
	const pkg = "github.com/flotilla-gitops/flotilla/internal/version"
	return fmt.Sprintf("-X %s.version=%s -X %s.commit=%s", pkg, version, pkg, commit)
}

// FromCheckout reads the layout `make image` wrote into the checkout at
// root, and refuses it when it was built from another commit than the
// checkout's HEAD (tests of the image would test other code).
func FromCheckout(root string) (*Built, string, error) {
	b, tag, err := ReadLayout(LayoutDir(root))
	if err != nil {
		return nil, "", fmt.Errorf("%w\nrun `make image` first (make test does)", err)
	}
	im, err := b.Index.IndexManifest()
	if err != nil {
		return nil, "", err
	}
	head, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		return nil, "", fmt.Errorf("git rev-parse HEAD in %s: %w", root, err)
	}
	if rev := im.Annotations["org.opencontainers.image.revision"]; rev != strings.TrimSpace(string(head)) {
		return nil, "", fmt.Errorf("bin/image/oci was built from %s, the checkout is at %s: run `make image`", rev, strings.TrimSpace(string(head)))
	}
	return b, tag, nil
}

// LayoutDir is where `make image` writes the layout in a checkout.
func LayoutDir(root string) string { return filepath.Join(root, "bin", "image", "oci") }
