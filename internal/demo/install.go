package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/flotilla-gitops/flotilla/internal/image"
	"github.com/flotilla-gitops/flotilla/internal/registrytest"
)

// installAgents publishes the agent's image (bin/image/oci, from `make
// image`) to a local registry, pulls this platform's binary back out of it
// — the agents run from the image's binary — and installs the agent into
// each cluster with `flotilla bootstrap`, which waits until its
// Deployment is available (kwok runs its pods). The agents themselves run
// as local processes: the clusters' nodes are kwok's and run nothing.
func (d *demo) installAgents(ctx context.Context) error {
	built, tag, err := image.ReadLayout(image.LayoutDir(d.root))
	if err != nil {
		return err
	}
	reg, stop := registrytest.Serve()
	d.stopRegistry = stop
	pushed, err := image.Push(ctx, reg.Host+"/flotilla", built, tag)
	if err != nil {
		return err
	}
	ref := reg.Host + "/flotilla:" + tag
	fmt.Printf("    pushed %s\n      %s\n", ref, pushed.DigestStr())
	if d.agentBinary, err = pullBinary(ctx, ref, filepath.Join(d.dir, "image")); err != nil {
		return err
	}
	fmt.Printf("    the agents run %s, pulled from it\n", d.agentBinary)
	for _, c := range fleetClusters {
		args := []string{"bootstrap", "--kubeconfig", c.env.Kubeconfig, "--repo", d.url, "--cluster", c.name,
			"--region", c.region, "--image", ref, "--rbac", "cluster-admin", "--timeout", "2m"}
		for _, l := range c.labels {
			args = append(args, "--label", l)
		}
		if err := d.flotillaCmd(ctx, []string{"the agent is available", "flotilla status --repo"}, args...); err != nil {
			return err
		}
	}
	return nil
}

// pullBinary pulls ref's image for this platform and writes its
// entrypoint into dir.
func pullBinary(ctx context.Context, ref, dir string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", err
	}
	img, err := remote.Image(r, remote.WithContext(ctx), remote.WithPlatform(v1Platform()))
	if err != nil {
		return "", fmt.Errorf("pulling %s: %w", ref, err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	want := strings.TrimPrefix(image.Entrypoint, "/")
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("%s has no %s", ref, image.Entrypoint)
		}
		if err != nil {
			return "", err
		}
		if h.Name != want {
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		path := filepath.Join(dir, "flotilla")
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
		if err != nil {
			return "", err
		}
		if _, err := io.Copy(f, tr); err != nil {
			f.Close()
			return "", err
		}
		return path, f.Close()
	}
}

func v1Platform() v1.Platform { return v1.Platform{OS: "linux", Architecture: runtime.GOARCH} }
