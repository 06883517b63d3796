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
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

// BenchmarkRenderScale renders a kustomization of N ConfigMaps, one file
// each (the workload of bench/flux.sh), at 1,000 and 5,000: whether the
// build grows faster than the objects (issue 39).
func BenchmarkRenderScale(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			repo := b.TempDir()
			dir := filepath.Join(repo, "apps")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				b.Fatal(err)
			}
			var k strings.Builder
			k.WriteString("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n")
			for i := range n {
				name := fmt.Sprintf("cm-%05d.yaml", i)
				fmt.Fprintf(&k, "- %s\n", name)
				body := fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%05d\ndata:\n  i: %q\n", i, fmt.Sprint(i))
				if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
					b.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k.String()), 0o644); err != nil {
				b.Fatal(err)
			}
			r := kustomize.New(kustomize.Options{})
			req := &render.Request{Bundle: "cms", Namespace: "cms", Cluster: "c", RepoDir: repo,
				Source: spec.Source{Kind: spec.KindKustomize, Kustomize: &spec.Kustomize{Path: "apps"}}}
			for b.Loop() {
				out, err := r.Render(context.Background(), req)
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
