// Command build is `make image`: it compiles flotilla for each platform,
// assembles the agent's OCI image index with internal/image, writes it as
// an OCI layout (bin/image/oci) and, given -image REF, pushes it.
//
//	go run ./internal/image/build -version v0.4.0 [-image registry.example.com/flotilla]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/flotilla-gitops/flotilla/internal/image"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "make image:", err)
		os.Exit(1)
	}
}

func run() error {
	out := flag.String("out", "bin/image", "directory for the binaries (OS-ARCH/flotilla) and the OCI layout (oci/)")
	ref := flag.String("image", os.Getenv("IMAGE"), "push to this repository (tagged with -version); empty: only the layout")
	version := flag.String("version", "", "the release, stamped into the binary and used as the tag (required)")
	source := flag.String("source", "https://github.com/flotilla-gitops/flotilla", "org.opencontainers.image.source")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "comma-separated OS/ARCH list")
	flag.Parse()
	if *version == "" {
		return fmt.Errorf("-version is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	m, err := metadata(ctx, *version, *source)
	if err != nil {
		return err
	}
	var bins []image.Binary
	for _, p := range strings.Split(*platforms, ",") {
		os_, arch, ok := strings.Cut(strings.TrimSpace(p), "/")
		if !ok {
			return fmt.Errorf("-platforms: %q is not OS/ARCH", p)
		}
		plat := v1.Platform{OS: os_, Architecture: arch}
		path := image.BinaryName(*out, plat)
		start := time.Now()
		fmt.Printf("make image: building %s (a first build of a platform takes minutes)\n", p)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := image.BuildBinary(ctx, ".", path, plat, image.LDFlags(m.Version, m.Revision)); err != nil {
			return err
		}
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		fmt.Printf("make image: %s: %.1f MB in %s\n", path, float64(fi.Size())/1e6, time.Since(start).Round(time.Second))
		bins = append(bins, image.Binary{Platform: plat, Path: path})
	}
	built, err := image.Assemble(bins, m)
	if err != nil {
		return err
	}
	dir := filepath.Join(*out, "oci")
	if err := image.WriteLayout(dir, built, m.Version); err != nil {
		return err
	}
	if err := report(built, dir, m); err != nil {
		return err
	}
	if *ref != "" {
		d, err := image.Push(ctx, *ref, built, m.Version)
		if err != nil {
			return err
		}
		fmt.Printf("make image: pushed %s:%s\n  %s\n", d.Context(), m.Version, d)
	}
	return nil
}

// metadata reads the commit: its hash, and its time for every timestamp
// (SOURCE_DATE_EPOCH, the reproducible-builds convention, overrides it).
func metadata(ctx context.Context, version, source string) (image.Metadata, error) {
	rev, err := git(ctx, "rev-parse", "HEAD")
	if err != nil {
		return image.Metadata{}, err
	}
	epoch := os.Getenv("SOURCE_DATE_EPOCH")
	if epoch == "" {
		if epoch, err = git(ctx, "log", "-1", "--format=%ct"); err != nil {
			return image.Metadata{}, err
		}
	}
	secs, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return image.Metadata{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", epoch, err)
	}
	return image.Metadata{Version: version, Revision: rev, Source: source, Created: time.Unix(secs, 0).UTC()}, nil
}

func git(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "git", args...).Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// report prints the index's digest and each image's compressed size.
func report(b *image.Built, dir string, m image.Metadata) error {
	d, err := b.Index.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("make image: %s (tag %s)\n  index %s\n", dir, m.Version, d)
	im, err := b.Index.IndexManifest()
	if err != nil {
		return err
	}
	for _, desc := range im.Manifests {
		img, err := b.Index.Image(desc.Digest)
		if err != nil {
			return err
		}
		layers, err := img.Layers()
		if err != nil {
			return err
		}
		var size int64
		for _, l := range layers {
			s, err := l.Size()
			if err != nil {
				return err
			}
			size += s
		}
		fmt.Printf("  %s/%s %s, %.1f MB compressed\n", desc.Platform.OS, desc.Platform.Architecture, desc.Digest, float64(size)/1e6)
	}
	return nil
}
