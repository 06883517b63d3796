package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/helm"
	"github.com/flotilla-gitops/flotilla/render/sops"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
)

// chartSchemas gives vet the values schemas of the fleet's charts, each
// read once: charts of the repository always (through its root), charts
// of chart repositories and registries from the cache, or fetched with
// --allow-chart-downloads. What could not be checked (a chart not cached,
// not found, or a schema CUE cannot read) is noted, not failed: rendering
// reports a chart it cannot load, and Helm checks the values again when it
// renders.
type chartSchemas struct {
	ctx     context.Context
	repoDir string
	helm    *helm.Renderer

	mu    sync.Mutex
	read  map[string]*schemaRead
	notes []string
}

type schemaRead struct {
	once   sync.Once
	schema *fleet.ChartSchema
	err    error
}

func newChartSchemas(ctx context.Context, repoDir string, s planrender.Sources) *chartSchemas {
	return &chartSchemas{
		ctx:     ctx,
		repoDir: repoDir,
		helm: helm.New(helm.Options{
			CacheDir: s.ChartCacheDir, RegistryConfig: s.RegistryConfig, PlainHTTPRegistries: s.PlainHTTPRegistries,
			CacheOnly: !s.AllowChartDownloads,
		}),
		read: map[string]*schemaRead{},
	}
}

// source is the fleet.SchemaSource.
func (c *chartSchemas) source(h *spec.Helm) (*fleet.ChartSchema, error) {
	key := h.Repo + "\x00" + h.Chart + "\x00" + h.Version
	c.mu.Lock()
	r, ok := c.read[key]
	if !ok {
		r = &schemaRead{}
		c.read[key] = r
	}
	c.mu.Unlock()
	r.once.Do(func() { r.schema, r.err = c.load(h) })
	return r.schema, r.err
}

func (c *chartSchemas) load(h *spec.Helm) (*fleet.ChartSchema, error) {
	local := spec.Source{Kind: spec.KindHelm, Helm: &spec.Helm{Chart: h.Chart, Repo: h.Repo}}
	if err := render.CheckSource(c.repoDir, local); err != nil {
		return nil, nil // a chart that is not there: vet reports it as a problem of the bundle
	}
	chart := h.Chart
	if h.Repo != "" || helm.IsOCI(h.Chart) {
		chart = fmt.Sprintf("%s %s", chart, h.Version)
	}
	name, schema, err := c.helm.ValuesSchema(c.ctx, c.repoDir, &spec.Helm{Chart: h.Chart, Repo: h.Repo, Version: h.Version})
	switch {
	case errors.Is(err, helm.ErrNotCached):
		c.note(fmt.Sprintf("chart %s is not in the chart cache: values not checked against its values.schema.json (--allow-chart-downloads fetches it)", chart))
		return nil, nil
	case err != nil:
		// Rendering reports it, positioned at the bundle; vet checks the
		// fleet's CUE and values.
		c.note(fmt.Sprintf("chart %s: values not checked against its values.schema.json: %v", chart, err))
		return nil, nil
	case schema == nil:
		return nil, nil
	}
	cs := &fleet.ChartSchema{Name: name, JSON: schema}
	if err := fleet.CompileValuesSchema(cs); err != nil {
		c.note(fmt.Sprintf("values not checked against %v (Helm checks them when it renders)", err))
		return nil, nil
	}
	return cs, nil
}

func (c *chartSchemas) note(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Contains(c.notes, s) {
		c.notes = append(c.notes, s)
	}
}

// Notes are what could not be checked, sorted.
func (c *chartSchemas) Notes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(slices.Values(c.notes))
}

// encryptedFiles lists, for the secrets policy, the SOPS-encrypted files a
// bundle gives its cluster, each bundle source read once.
func encryptedFiles(repoDir string) func(*fleet.Bundle) ([]fleet.EncryptedFile, error) {
	type read struct {
		files []fleet.EncryptedFile
		err   error
	}
	cache := map[string]read{}
	return func(b *fleet.Bundle) ([]fleet.EncryptedFile, error) {
		data, err := json.Marshal(b.Source)
		if err != nil {
			return nil, err
		}
		if r, ok := cache[string(data)]; ok {
			return r.files, r.err
		}
		var r read
		files, err := sops.EncryptedFiles(repoDir, b.Source)
		for _, f := range files {
			r.files = append(r.files, fleet.EncryptedFile{Path: f.Path, Recipients: f.Recipients})
		}
		r.err = err
		cache[string(data)] = r
		return r.files, r.err
	}
}
