package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"

	"github.com/flotilla-gitops/flotilla/internal/procfs"
	"github.com/flotilla-gitops/flotilla/internal/registrytest"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// registryChildEnv makes this program a registry: the CNCF Distribution
// registry the tests use, in a process of its own, so that its CPU is
// read apart from the simulated agents' (/proc/<pid>/stat).
const registryChildEnv = "FLOTILLA_GITHOST_REGISTRY"

// serveRegistry serves a registry, prints its host, and stops when its
// standard input closes.
func serveRegistry() {
	reg, stop := registrytest.Serve()
	defer stop()
	fmt.Println(reg.Host)
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
}

// comparePolls has n agents poll once each, idle (each polled before):
// the fleet repository on git http-backend (status in a repository of its
// own), then the fleet published to a registry. It prints the server's
// CPU per poll, and the Git requests' bytes.
func comparePolls(gitPath string, n, bundles int) error {
	root, err := os.MkdirTemp("", "flotilla-githost-oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	fmt.Fprintf(os.Stderr, "%d agents, Git against OCI: writing the repositories\n", n)
	if err := writeRepos(gitPath, root, n, bundles, "status.git"); err != nil {
		return err
	}
	h, err := startHost(gitPath, root)
	if err != nil {
		return err
	}
	defer h.close()
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), registryChildEnv+"=1")
	stdin, err := child.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return err
	}
	defer func() { _ = stdin.Close(); _ = child.Wait() }()
	host, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return fmt.Errorf("the registry did not start: %w", err)
	}
	repo, err := git.PlainOpen(filepath.Join(root, "work"))
	if err != nil {
		return err
	}
	ref := "oci://" + strings.TrimSpace(host) + "/platform/fleet:main"
	ctx := context.Background()
	if _, err := source.Publish(ctx, source.PublishOptions{Repo: repo, To: ref}); err != nil {
		return err
	}
	gitCPU, gitBytes, gitWall, err := pollAll(ctx, n, h.url+"/fleet.git", root, func() (time.Duration, int64) {
		s := h.snapshot()
		var out int64
		for _, k := range s {
			out += k.out
		}
		return childCPU(), out
	})
	if err != nil {
		return err
	}
	ociCPU, _, ociWall, err := pollAll(ctx, n, ref, root, func() (time.Duration, int64) { return procfs.CPU(child.Process.Pid), 0 })
	if err != nil {
		return err
	}
	fmt.Printf("\n%d agents poll once each, idle (server CPU per poll; the registry's at /proc's 10 ms resolution over all polls):\n", n)
	fmt.Printf("  Git (git http-backend, status apart)  %6.2f ms   %s out   %.1f ms wall\n", ms64(gitCPU, n), size(float64(gitBytes)/float64(n)), ms64(gitWall, n))
	fmt.Printf("  OCI (Distribution registry, HEAD)     %6.2f ms              %.1f ms wall\n", ms64(ociCPU, n), ms64(ociWall, n))
	return nil
}

// pollAll makes n sources of url, polls each once unmeasured (an agent's
// first poll), then once more each, measured by read (the server's CPU
// and bytes out so far) before and after.
func pollAll(ctx context.Context, n int, url, root string, read func() (time.Duration, int64)) (time.Duration, int64, time.Duration, error) {
	srcs := make([]*source.Source, n)
	for i := range srcs {
		s, err := source.New(source.Options{URL: url, CacheDir: filepath.Join(root, "poll-cache")})
		if err != nil {
			return 0, 0, 0, err
		}
		if _, err := s.Head(ctx); err != nil {
			return 0, 0, 0, err
		}
		srcs[i] = s
	}
	cpu0, out0 := read()
	start := time.Now()
	for _, s := range srcs {
		if _, err := s.Head(ctx); err != nil {
			return 0, 0, 0, err
		}
	}
	wall := time.Since(start)
	cpu1, out1 := read()
	return cpu1 - cpu0, out1 - out0, wall, nil
}

func ms64(d time.Duration, n int) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
