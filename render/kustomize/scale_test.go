package kustomize_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/kustomize"
	"github.com/flotilla-gitops/flotilla/render/manifests"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

// BenchmarkRenderScale renders a folder of N ConfigMaps, one file each
// (the workload of bench/flux.sh), at 1,000 and 5,000: as a kustomization
// listing them (krusty, whether the build grows faster than the objects,
// issue 39) and as plain manifests (Flotilla's manifests renderer, the
// same objects without a kustomization.yaml).
func BenchmarkRenderScale(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		repo := b.TempDir()
		writeConfigMaps(b, repo, n)
		for _, c := range []struct {
			name   string
			r      render.Renderer
			source spec.Source
		}{
			{"kustomize", kustomize.New(kustomize.Options{}), spec.Source{Kind: spec.KindKustomize, Kustomize: &spec.Kustomize{Path: "apps"}}},
			{"manifests", manifests.Renderer{}, spec.Source{Kind: spec.KindManifests, Manifests: &spec.Manifests{Path: "plain"}}},
		} {
			b.Run(fmt.Sprintf("%s/%d", c.name, n), func(b *testing.B) {
				req := &render.Request{Bundle: "cms", Namespace: "cms", Cluster: "c", RepoDir: repo, Source: c.source}
				for b.Loop() {
					out, err := c.r.Render(context.Background(), req)
					if err != nil {
						b.Fatal(err)
					}
					if len(out.Objects) != n {
						b.Fatalf("%d objects, want %d", len(out.Objects), n)
					}
				}
			})
		}
	}
}

// writeConfigMaps writes n ConfigMaps, one file each, into apps (with a
// kustomization.yaml listing them) and into plain (without).
func writeConfigMaps(b *testing.B, repo string, n int) {
	b.Helper()
	var k strings.Builder
	k.WriteString("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n")
	for _, dir := range []string{"apps", "plain"} {
		if err := os.MkdirAll(filepath.Join(repo, dir), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	for i := range n {
		name := fmt.Sprintf("cm-%05d.yaml", i)
		fmt.Fprintf(&k, "- %s\n", name)
		body := fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%05d\ndata:\n  i: %q\n", i, fmt.Sprint(i))
		for _, dir := range []string{"apps", "plain"} {
			if err := os.WriteFile(filepath.Join(repo, dir, name), []byte(body), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(repo, "apps", "kustomization.yaml"), []byte(k.String()), 0o644); err != nil {
		b.Fatal(err)
	}
}
