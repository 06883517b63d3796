package sandbox_test

import (
	"context"
	"testing"

	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
	"github.com/flotilla-gitops/flotilla/sync/sandbox"
)

// BenchmarkRender renders one chart in a warm sandbox worker and in this
// process (the peer): the worker's cost is the JSON round trip of the
// request and the objects through a pipe. bench/RESULTS.md.
func BenchmarkRender(b *testing.B) {
	dir := repo(b)
	pool, err := sandbox.New(sandbox.Options{Workers: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	for _, tc := range []struct {
		name      string
		renderers map[spec.Kind]render.Renderer
	}{
		{"sandbox", pool.Renderers()},
		{"in-process", planrender.InProcess(planrender.Options{})},
	} {
		b.Run(tc.name, func(b *testing.B) {
			engine := render.NewEngine(tc.renderers, nil)
			for b.Loop() {
				if _, err := engine.Render(context.Background(), helmRequest(dir, "good")); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
