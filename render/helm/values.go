package helm

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/render"
)

// maxValuesFile bounds a values file read from the fleet repository.
const maxValuesFile = 16 << 20

// ValuesFile is a values file of the fleet repository, read.
type ValuesFile struct {
	// Path is the file's path from the repository root, as the bundle
	// names it.
	Path   string
	Values map[string]any
}

// ReadValuesFiles reads the values files of a bundle through the
// repository root: a path that leaves the repository (`..`, an absolute
// path, a symlink at any depth) is refused with render.ErrPathEscapes.
// Each file is a YAML (or JSON) mapping; an empty file is an empty map.
func ReadValuesFiles(ctx context.Context, repoDir string, files []string, secrets render.Secrets) ([]ValuesFile, error) {
	if len(files) == 0 {
		return nil, nil
	}
	root, err := os.OpenRoot(repoDir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	out := make([]ValuesFile, 0, len(files))
	for _, name := range files {
		rel, err := valuesPath(name)
		if err != nil {
			return nil, err
		}
		data, err := render.ReadBounded(root, rel, maxValuesFile)
		if err != nil {
			if _, perr := render.RepoPath(repoDir, rel); perr != nil {
				return nil, fmt.Errorf("values file %s: %w", name, perr)
			}
			return nil, fmt.Errorf("values file %s: %w", name, err)
		}
		if data, err = render.ReadSecrets(ctx, secrets, rel, data); err != nil {
			return nil, fmt.Errorf("values file %s: %w", name, err)
		}
		values := map[string]any{}
		if err := yaml.Unmarshal(data, &values); err != nil {
			return nil, fmt.Errorf("values file %s: %w", name, err)
		}
		if values == nil {
			values = map[string]any{}
		}
		out = append(out, ValuesFile{Path: name, Values: values})
	}
	return out, nil
}

// valuesPath checks a values file's path as the bundle gives it: relative
// to the repository root, inside it.
func valuesPath(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("values file: empty path")
	}
	slashed := filepath.ToSlash(name)
	if path.IsAbs(slashed) || filepath.IsAbs(name) || !filepath.IsLocal(name) {
		return "", fmt.Errorf("values file %s: %w: paths are relative to the fleet repository's root and stay inside it", name, render.ErrPathEscapes)
	}
	return path.Clean(slashed), nil
}

// mergeValues merges src over dst as Helm merges `-f` files and `--set`
// values: maps merge key by key, at any depth; anything else in src
// replaces what dst has. dst is not modified.
func mergeValues(dst, src map[string]any) map[string]any {
	out := maps.Clone(dst)
	if out == nil {
		out = map[string]any{}
	}
	for k, v := range src {
		if vm, ok := v.(map[string]any); ok {
			if dm, ok := out[k].(map[string]any); ok {
				out[k] = mergeValues(dm, vm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// bundleValues are the values a chart is rendered with: the values files
// in order, then the bundle's own values over them.
func (r *Renderer) bundleValues(ctx context.Context, req *render.Request) (map[string]any, error) {
	values := map[string]any{}
	files, err := ReadValuesFiles(ctx, req.RepoDir, req.Source.Helm.ValuesFiles, r.secrets)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		values = mergeValues(values, f.Values)
	}
	if len(req.Values) > 0 {
		own := map[string]any{}
		if err := json.Unmarshal(req.Values, &own); err != nil {
			return nil, fmt.Errorf("values: %w", err)
		}
		values = mergeValues(values, own)
	}
	return values, nil
}

// Overrides lists, for each values file, the keys (dotted paths, sorted)
// that a later file or the bundle's own values replace: what `plan` says
// so that nobody wonders why a values file's setting has no effect.
// values is the bundle's values as JSON.
func Overrides(files []ValuesFile, values json.RawMessage) (map[string][]string, error) {
	own := map[string]any{}
	if len(values) > 0 {
		if err := json.Unmarshal(values, &own); err != nil {
			return nil, err
		}
	}
	out := map[string][]string{}
	for i, f := range files {
		var later []map[string]any
		for _, g := range files[i+1:] {
			later = append(later, g.Values)
		}
		later = append(later, own)
		var keys []string
		leaves(f.Values, "", func(p []string, dotted string) {
			for _, l := range later {
				if setAt(l, p) {
					keys = append(keys, dotted)
					return
				}
			}
		})
		if len(keys) > 0 {
			slices.Sort(keys)
			out[f.Path] = keys
		}
	}
	return out, nil
}

// leaves calls fn with the path of every value of m that is not a
// non-empty map.
func leaves(m map[string]any, prefix string, fn func(p []string, dotted string)) {
	var walk func(m map[string]any, p []string)
	walk = func(m map[string]any, p []string) {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			q := append(slices.Clone(p), k)
			if sub, ok := m[k].(map[string]any); ok && len(sub) > 0 {
				walk(sub, q)
				continue
			}
			fn(q, prefix+strings.Join(q, "."))
		}
	}
	walk(m, nil)
}

// setAt reports whether m sets a value at p, or a non-map value on the way
// to it (which replaces the whole subtree).
func setAt(m map[string]any, p []string) bool {
	cur := m
	for i, k := range p {
		v, ok := cur[k]
		if !ok {
			return false
		}
		sub, isMap := v.(map[string]any)
		if !isMap || i == len(p)-1 {
			return true
		}
		cur = sub
	}
	return false
}
