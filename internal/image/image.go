// Package image builds the agent's OCI image without Docker, with
// go-containerregistry (the library under ko): the static flotilla binary on
// an empty base with CA certificates and a non-root user, one image per
// platform in an image index, reproducible (the same commit gives the same
// digest), labelled with the OCI annotations, and a CycloneDX SBOM of every
// Go module in each binary attached as an OCI 1.1 referrer.
//
// `make image` runs it through ./internal/image/build; tests assemble and
// unpack images with it.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// Paths and the user inside the image.
const (
	// Entrypoint is where the binary lives; the image's entrypoint.
	Entrypoint = "/usr/local/bin/flotilla"
	// CACertificates is the bundle Go's crypto/x509 reads on Linux.
	CACertificates = "/etc/ssl/certs/ca-certificates.crt"
	// UID and GID of the image's user ("nonroot", as in distroless).
	UID = 65532
	GID = 65532
	// CacheDir is where deploy/ mounts the agent's cache volume.
	CacheDir = "/var/cache/flotilla"
)

// Metadata labels the image: OCI annotations on the index and on every
// image, and labels in each image's configuration.
type Metadata struct {
	// Version is the release (git describe); also the image's tag.
	Version string
	// Revision is the full commit hash.
	Revision string
	// Source is the repository's URL.
	Source string
	// Created is the commit's time: every timestamp in the image, so the
	// same commit gives the same digest.
	Created time.Time
}

// Annotations returns the OCI annotations (image-spec annotations.md).
func (m Metadata) Annotations() map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "flotilla",
		"org.opencontainers.image.description": "Flotilla's GitOps agent and CLI",
		"org.opencontainers.image.source":      m.Source,
		"org.opencontainers.image.url":         m.Source,
		"org.opencontainers.image.revision":    m.Revision,
		"org.opencontainers.image.version":     m.Version,
		"org.opencontainers.image.created":     m.Created.UTC().Format(time.RFC3339),
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
}

// Binary is one platform's flotilla binary.
type Binary struct {
	Platform v1.Platform
	Path     string
}

// BuildBinary compiles ./cmd/flotilla of the module at dir for one
// platform the way the image ships it: static (no cgo), -trimpath,
// stripped, with the version stamped. Go builds are reproducible, so the
// same commit and toolchain give the same bytes. The version and commit
// are stamped by ldflags, not by Go's VCS stamping (-buildvcs=false),
// which a git worktree or an exported tree does not get, and which would
// make the digest depend on how the source was checked out.
func BuildBinary(ctx context.Context, dir, out string, p v1.Platform, ldflags string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", strings.TrimSpace("-s -w -buildid= "+ldflags), "-o", out, "./cmd/flotilla")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture, "GOFLAGS=-mod=readonly")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build for %s/%s: %w\n%s", p.OS, p.Architecture, err, stderr.String())
	}
	return nil
}

// Index assembles the multi-platform image index from built binaries.
// Nothing in it depends on the machine or the clock: file times, the
// configuration's dates and the tar headers all come from m.Created.
func Index(bins []Binary, m Metadata) (v1.ImageIndex, error) {
	base, err := baseLayer(m.Created)
	if err != nil {
		return nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var adds []mutate.IndexAddendum
	for _, b := range bins {
		img, err := platformImage(base, b, m)
		if err != nil {
			return nil, err
		}
		p := b.Platform
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	idx = mutate.AppendManifests(idx, adds...)
	annotated, ok := mutate.Annotations(idx, m.Annotations()).(v1.ImageIndex)
	if !ok {
		return nil, fmt.Errorf("annotating the index: unexpected type")
	}
	return annotated, nil
}

func platformImage(base v1.Layer, b Binary, m Metadata) (v1.Image, error) {
	bin, err := os.ReadFile(b.Path)
	if err != nil {
		return nil, err
	}
	app, err := layer(m.Created, []file{{name: Entrypoint, mode: 0o755, data: bin}})
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	created := v1.Time{Time: m.Created}
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, History: v1.History{Created: created, CreatedBy: "flotilla image: CA certificates, user 65532, /tmp", Comment: "base"}},
		mutate.Addendum{Layer: app, History: v1.History{Created: created, CreatedBy: "flotilla image: " + Entrypoint, Comment: "binary"}},
	)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = created
	cf.OS, cf.Architecture, cf.Variant = b.Platform.OS, b.Platform.Architecture, b.Platform.Variant
	cf.Author = "Flotilla"
	cf.Config = v1.Config{
		Entrypoint:   []string{Entrypoint},
		User:         fmt.Sprintf("%d:%d", UID, GID),
		WorkingDir:   "/",
		Env:          []string{"PATH=/usr/local/bin"},
		Labels:       m.Annotations(),
		ExposedPorts: map[string]struct{}{"8080/tcp": {}},
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	annotated, ok := mutate.Annotations(img, m.Annotations()).(v1.Image)
	if !ok {
		return nil, fmt.Errorf("annotating the image: unexpected type")
	}
	return annotated, nil
}

// file is one entry of a layer; a nil data with a directory mode is a
// directory.
type file struct {
	name     string
	mode     int64
	uid, gid int
	dir      bool
	data     []byte
}

// baseLayer holds what a static Go binary needs from a root file system:
// CA certificates (Mozilla's, from golang.org/x/crypto/x509roots/fallback,
// so the bundle is pinned by go.sum, not by the build machine), a passwd
// and group naming user 65532, /tmp and the cache directory. No shell.
func baseLayer(created time.Time) (v1.Layer, error) {
	var certs bytes.Buffer
	for root := range bundle.Roots() {
		// Roots Mozilla distrusts for certificates issued after a date
		// carry a constraint a PEM file cannot express: leave them out,
		// as Go's own fallback does when it cannot apply one.
		if root.Constraint != nil {
			continue
		}
		if err := pem.Encode(&certs, &pem.Block{Type: "CERTIFICATE", Bytes: root.Certificate}); err != nil {
			return nil, err
		}
	}
	passwd := "root:x:0:0:root:/root:/sbin/nologin\n" +
		fmt.Sprintf("nonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", UID, GID)
	group := "root:x:0:\n" + fmt.Sprintf("nonroot:x:%d:\n", GID)
	return layer(created, []file{
		{name: "/etc", dir: true, mode: 0o755},
		{name: "/etc/group", mode: 0o644, data: []byte(group)},
		{name: "/etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "/etc/ssl", dir: true, mode: 0o755},
		{name: "/etc/ssl/certs", dir: true, mode: 0o755},
		{name: CACertificates, mode: 0o644, data: certs.Bytes()},
		{name: "/home", dir: true, mode: 0o755},
		{name: "/home/nonroot", dir: true, mode: 0o700, uid: UID, gid: GID},
		{name: "/tmp", dir: true, mode: 0o1777},
		{name: "/usr", dir: true, mode: 0o755},
		{name: "/usr/local", dir: true, mode: 0o755},
		{name: "/usr/local/bin", dir: true, mode: 0o755},
		{name: "/var", dir: true, mode: 0o755},
		{name: "/var/cache", dir: true, mode: 0o755},
		{name: CacheDir, dir: true, mode: 0o755, uid: UID, gid: GID},
	})
}

// layer writes files into a gzip'd OCI layer, in name order, every header
// dated created and owned numerically (no user names), so the bytes depend
// on the contents alone.
func layer(created time.Time, files []file) (v1.Layer, error) {
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{
			Name:    strings.TrimPrefix(f.name, "/"),
			Mode:    f.mode,
			Uid:     f.uid,
			Gid:     f.gid,
			ModTime: created.UTC().Truncate(time.Second),
			Format:  tar.FormatPAX,
		}
		if f.dir {
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer),
		// The smallest download (go-containerregistry's default is the
		// fastest compression): 29.3 MB instead of 33.5 for amd64.
		tarball.WithCompressionLevel(gzip.BestCompression))
}

// Platforms are the platforms `make image` builds.
var Platforms = []v1.Platform{
	{OS: "linux", Architecture: "amd64"},
	{OS: "linux", Architecture: "arm64"},
}

// BinaryName is where a platform's binary is written under a directory.
func BinaryName(dir string, p v1.Platform) string {
	return filepath.Join(dir, p.OS+"-"+p.Architecture, "flotilla")
}
