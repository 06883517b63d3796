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
// --allow-chart-downloads. A chart that is not what the bundle asks for
// (a version its repository does not have, a local chart of another
// version, dependencies neither vendored nor locked) is a problem of the
// bundle, and so is a schema vet cannot read, unless
// --allow-unchecked-schemas. What vet cannot know offline (a chart or a
// dependency not in the cache) is noted.
type chartSchemas struct {
	ctx            context.Context
	repoDir        string
	helm           *helm.Renderer
	allowUnchecked bool

	mu    sync.Mutex
	read  map[string]*schemaRead
	notes []string
}

type schemaRead struct {
	once   sync.Once
	schema *fleet.ChartSchema
	err    error
}

func newChartSchemas(ctx context.Context, repoDir string, s planrender.Sources, allowUnchecked bool) *chartSchemas {
	return &chartSchemas{
		ctx:            ctx,
		repoDir:        repoDir,
		allowUnchecked: allowUnchecked,
		helm: helm.New(helm.Options{
			CacheDir: s.ChartCacheDir, RegistryConfig: s.RegistryConfig, PlainHTTPRegistries: s.PlainHTTPRegistries,
			CacheOnly: !s.AllowChartDownloads, AllowDownloads: s.AllowChartDownloads,
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
	if !h.InRepository() {
		chart = fmt.Sprintf("%s %s", chart, h.Version)
	}
	name, schema, err := c.helm.ValuesSchema(c.ctx, c.repoDir, &spec.Helm{Chart: h.Chart, Repo: h.Repo, Version: h.Version})
	switch {
	case errors.Is(err, helm.ErrNotVendored):
		c.note(fmt.Sprintf("chart %s: values not checked against its values.schema.json: %v", chart, err))
		return nil, nil
	case errors.Is(err, helm.ErrNotCached):
		c.note(fmt.Sprintf("chart %s is not in the chart cache: values not checked against its values.schema.json (--allow-chart-downloads fetches it)", chart))
		return nil, nil
	case err != nil:
		return nil, err // what rendering would fail on, or a version that is not there
	case schema == nil:
		return nil, nil
	}
	cs := &fleet.ChartSchema{Name: name, JSON: schema}
	if err := fleet.CompileValuesSchema(cs); err != nil {
		if !c.allowUnchecked {
			return nil, fmt.Errorf("vet cannot check values against the chart's values.schema.json: %w (--allow-unchecked-schemas lets it pass unchecked; Helm checks the values when it renders)", err)
		}
		c.note(fmt.Sprintf("values not checked against the chart's values.schema.json: %v (--allow-unchecked-schemas; Helm checks them when it renders)", err))
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
