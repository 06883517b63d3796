// Package cue renders the objects a bundle writes in CUE (`resources`):
// the fleet has already evaluated them to concrete JSON, so this renderer
// decodes and checks them.
package cue

import (
	"context"
	"fmt"

	"github.com/flotilla-gitops/flotilla/render"
)

// Renderer turns `resources` into objects. It has no state.
type Renderer struct{}

var _ render.Renderer = Renderer{}

// Render decodes req.Source.Resources, a JSON list of objects (List kinds
// are expanded).
func (Renderer) Render(_ context.Context, req *render.Request) (*render.Output, error) {
	if len(req.Source.Resources) == 0 {
		return &render.Output{}, nil
	}
	objs, err := render.DecodeObjects(req.Source.Resources, "resources")
	if err != nil {
		return nil, fmt.Errorf("resources: %w", err)
	}
	return &render.Output{Objects: objs}, nil
}
