package image_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/x509"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/flotilla-gitops/flotilla/internal/checkout"
	"github.com/flotilla-gitops/flotilla/internal/image"
	"github.com/flotilla-gitops/flotilla/internal/registrytest"
)

// built reads the image `make image` wrote into this checkout (make test
// builds it first). A test of the image fails without it.
func built(t *testing.T) (*image.Built, string, string) {
	t.Helper()
	root, err := checkout.Root()
	if err != nil {
		t.Fatal(err)
	}
	b, tag, err := image.FromCheckout(root)
	if err != nil {
		t.Fatal(err)
	}
	return b, tag, root
}

func annotations(t *testing.T, idx v1.ImageIndex) map[string]string {
	t.Helper()
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	return im.Annotations
}

// The same commit gives the same digest: the binaries built again from
// this checkout and assembled again give the index `make image` wrote, byte
// for byte, SBOMs included.
func TestImageRebuildsToTheSameDigest(t *testing.T) {
	b, tag, root := built(t)
	ann := annotations(t, b.Index)
	created, err := time.Parse(time.RFC3339, ann["org.opencontainers.image.created"])
	if err != nil {
		t.Fatal(err)
	}
	m := image.Metadata{Version: tag, Revision: ann["org.opencontainers.image.revision"],
		Source: ann["org.opencontainers.image.source"], Created: created}
	im, err := b.Index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != len(image.Platforms) {
		t.Fatalf("the index has %d images, want one per platform %v", len(im.Manifests), image.Platforms)
	}
	var bins []image.Binary
	dir := t.TempDir()
	for _, desc := range im.Manifests {
		p := *desc.Platform
		path := image.BinaryName(dir, p)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := image.BuildBinary(context.Background(), root, path, p, image.LDFlags(m.Version, m.Revision)); err != nil {
			t.Fatal(err)
		}
		bins = append(bins, image.Binary{Platform: p, Path: path})
	}
	again, err := image.Assemble(bins, m)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := b.Index.Digest()
	got, _ := again.Index.Digest()
	if got != want {
		t.Errorf("rebuilt index %s, make image wrote %s: the build is not reproducible", got, want)
	}
	for i := range again.SBOMs {
		w, _ := b.SBOMs[i].Digest()
		g, _ := again.SBOMs[i].Digest()
		if g != w {
			t.Errorf("rebuilt SBOM %d is %s, make image wrote %s", i, g, w)
		}
	}
	// And a different commit time gives a different digest: the time is
	// really in the image, not ignored.
	m.Created = m.Created.Add(time.Second)
	later, err := image.Assemble(bins, m)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := later.Index.Digest(); d == want {
		t.Error("a different creation time gave the same digest")
	}
}

// Each platform's image: the static binary for its architecture, CA
// certificates, user 65532, no shell, the OCI annotations and labels.
func TestImageContents(t *testing.T) {
	b, tag, _ := built(t)
	ann := annotations(t, b.Index)
	for _, k := range []string{"source", "revision", "version", "created"} {
		if ann["org.opencontainers.image."+k] == "" {
			t.Errorf("the index has no org.opencontainers.image.%s annotation: %v", k, ann)
		}
	}
	if ann["org.opencontainers.image.version"] != tag {
		t.Errorf("version annotation %q, tag %q", ann["org.opencontainers.image.version"], tag)
	}
	im, err := b.Index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	for _, desc := range im.Manifests {
		p := desc.Platform.OS + "/" + desc.Platform.Architecture
		img, err := b.Index.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Config.User != "65532:65532" || len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != image.Entrypoint {
			t.Errorf("%s: user %q entrypoint %q", p, cf.Config.User, cf.Config.Entrypoint)
		}
		if cf.Architecture != desc.Platform.Architecture || cf.OS != "linux" {
			t.Errorf("%s: the configuration says %s/%s", p, cf.OS, cf.Architecture)
		}
		if cf.Config.Labels["org.opencontainers.image.revision"] != ann["org.opencontainers.image.revision"] {
			t.Errorf("%s: labels %v", p, cf.Config.Labels)
		}
		if got := cf.Created.UTC().Format(time.RFC3339); got != ann["org.opencontainers.image.created"] {
			t.Errorf("%s: created %s, the commit's time is %s", p, got, ann["org.opencontainers.image.created"])
		}
		files := extract(t, img)
		bin := files[image.Entrypoint]
		if bin == nil || bin.Mode&0o111 == 0 {
			t.Fatalf("%s: no executable %s", p, image.Entrypoint)
		}
		ef, err := elf.NewFile(bytes.NewReader(bin.data))
		if err != nil {
			t.Fatal(err)
		}
		if ef.Machine != machines[desc.Platform.Architecture] {
			t.Errorf("%s: the binary is for %s", p, ef.Machine)
		}
		for _, prog := range ef.Progs {
			if prog.Type == elf.PT_INTERP {
				t.Errorf("%s: the binary is dynamically linked", p)
			}
		}
		for _, shell := range []string{"/bin/sh", "/bin/bash", "/bin/busybox"} {
			if files[shell] != nil {
				t.Errorf("%s: the image has a shell, %s", p, shell)
			}
		}
		if !strings.Contains(string(files["/etc/passwd"].data), "nonroot:x:65532:65532:") {
			t.Errorf("%s: /etc/passwd does not name user 65532:\n%s", p, files["/etc/passwd"].data)
		}
		if tmp := files["/tmp"]; tmp == nil || tmp.Mode&0o1777 != 0o1777 {
			t.Errorf("%s: /tmp is not world-writable with the sticky bit", p)
		}
		if c := files[image.CacheDir]; c == nil || c.Uid != image.UID {
			t.Errorf("%s: %s is not owned by %d", p, image.CacheDir, image.UID)
		}
		pool, n := x509.NewCertPool(), 0
		for rest := files[image.CACertificates].data; ; n++ {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				break
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			pool.AddCert(c)
		}
		if n < 100 {
			t.Errorf("%s: %d CA certificates", p, n)
		}
	}
}

type entry struct {
	*tar.Header
	data []byte
}

// extract reads an image's flattened file system.
func extract(t *testing.T, img v1.Image) map[string]*entry {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	files := map[string]*entry{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files["/"+strings.TrimSuffix(h.Name, "/")] = &entry{Header: h, data: data}
	}
}

// Each image's SBOM refers to it and lists every Go module linked into its
// binary, as the binary's own build information does.
func TestImageSBOMListsEveryModule(t *testing.T) {
	b, tag, _ := built(t)
	im, err := b.Index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(b.SBOMs) != len(im.Manifests) {
		t.Fatalf("%d SBOMs for %d images", len(b.SBOMs), len(im.Manifests))
	}
	for i, desc := range im.Manifests {
		m, err := b.SBOMs[i].Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject == nil || m.Subject.Digest != desc.Digest || m.ArtifactType != image.SBOMMediaType {
			t.Fatalf("SBOM %d: subject %v artifactType %q, want %s", i, m.Subject, m.ArtifactType, desc.Digest)
		}
		layers, err := b.SBOMs[i].Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("SBOM %d: %d layers, %v", i, len(layers), err)
		}
		rc, err := layers[0].Compressed()
		if err != nil {
			t.Fatal(err)
		}
		var bom cdx.BOM
		err = cdx.NewBOMDecoder(rc, cdx.BOMFileFormatJSON).Decode(&bom)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		img, err := b.Index.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(t.TempDir(), "flotilla")
		if err := os.WriteFile(bin, extract(t, img)[image.Entrypoint].data, 0o755); err != nil {
			t.Fatal(err)
		}
		bi, err := buildinfo.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		listed := map[string]bool{}
		for _, c := range *bom.Components {
			listed[c.Name+"@"+c.Version] = true
		}
		for _, d := range bi.Deps {
			if d.Replace != nil {
				d = d.Replace
			}
			if !listed[d.Path+"@"+d.Version] {
				t.Errorf("SBOM of %s lacks %s@%s", desc.Platform, d.Path, d.Version)
			}
		}
		if len(*bom.Components) != len(bi.Deps) || len(bi.Deps) < 100 {
			t.Errorf("SBOM lists %d modules, the binary links %d", len(*bom.Components), len(bi.Deps))
		}
		if !listed["helm.sh/helm/v3@v3.22.0"] || bom.Metadata.Component.Version != tag {
			t.Errorf("SBOM: helm missing or main component version %q (tag %q)", bom.Metadata.Component.Version, tag)
		}
	}
}

// IMAGE=REF pushes the index, its images and their SBOMs to a real
// registry (CNCF Distribution, with authentication from a Docker config);
// what comes back is the same digest, its SBOMs are found as referrers, and
// the pulled binary prints the tag as its version.
func TestImagePushesToARegistry(t *testing.T) {
	b, tag, _ := built(t)
	reg := registrytest.Start(t, true)
	t.Setenv("DOCKER_CONFIG", filepath.Dir(reg.ConfigFile(t)))
	ctx := context.Background()

	before := reg.Requests.Load()
	if _, err := image.Push(ctx, reg.Host+"/flotilla:not-the-version", b, tag); err == nil ||
		!strings.Contains(err.Error(), "the tag must be the version") {
		t.Fatalf("a tag other than the version was not refused: %v", err)
	}
	if reg.Requests.Load() != before {
		t.Error("the refused push reached the registry")
	}

	d, err := image.Push(ctx, reg.Host+"/flotilla", b, tag)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := b.Index.Digest()
	if d.DigestStr() != want.String() {
		t.Errorf("pushed %s, built %s", d.DigestStr(), want)
	}
	tagged, err := name.ParseReference(reg.Host + "/flotilla:" + tag)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(tagged, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := idx.Digest(); got != want {
		t.Errorf("the registry serves %s for the tag, built %s", got, want)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, desc := range im.Manifests {
		refs, err := remote.Referrers(tagged.Context().Digest(desc.Digest.String()), remote.WithAuthFromKeychain(authn.DefaultKeychain))
		if err != nil {
			t.Fatal(err)
		}
		rm, err := refs.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(rm.Manifests) != 1 || rm.Manifests[0].ArtifactType != image.SBOMMediaType {
			t.Errorf("referrers of %s: %+v", desc.Platform, rm.Manifests)
		}
		if desc.Platform.Architecture != runtime.GOARCH {
			continue
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(t.TempDir(), "flotilla")
		if err := os.WriteFile(bin, extract(t, img)[image.Entrypoint].data, 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "version", "-o", "json").Output()
		if err != nil {
			t.Fatal(err)
		}
		var v struct{ Version string }
		if err := json.Unmarshal(out, &v); err != nil || v.Version != tag {
			t.Errorf("the pulled binary says version %q (%v), the tag is %q", v.Version, err, tag)
		}
	}
}
