package companion

import (
	"bytes"
	"encoding/json"
	"strconv"

	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/fleet"
)

// Params are a cluster's bundle as Argo CD ApplicationSet parameters: one
// set per cluster and bundle, the same in the Git files generator's files
// (clusters/<cluster>/argocd/<bundle>.json) and from the plugin generator.
//
//	cluster, bundle, namespace  names
//	hydratedPath                the bundle's hydrated folder (not "path":
//	                            Argo CD's Git files generator sets its own
//	                            "path" map over a parameter of that name)
//	wave, waveIndex             the cluster's rollout wave for the bundle
//	                            ("" and "0" without waves), for progressive
//	                            sync steps (strings: labels are strings)
//	region, labels, facts       the cluster's identity
//	dependsOn, prune, serviceAccountName
//	                            the bundle's apply options
//	source                      what the bundle renders, for teams that let
//	                            Argo CD render: kind (helm, kustomize,
//	                            manifests, resources), path (chart or folder
//	                            in the fleet repository), chart, repoURL,
//	                            version, releaseName, and values (Helm
//	                            values as YAML); every key is there for
//	                            every kind, "" where it does not apply, so
//	                            one template with missingkey=error serves
//	                            every bundle
func Params(p *fleet.Plan, b *fleet.Bundle, hydratedPath string) map[string]any {
	w := wave(p, b)
	waveName, waveIndex := "", 0
	if w != nil {
		waveName, waveIndex = w.Wave, w.WaveIndex
	}
	c := p.Cluster.Normalized()
	deps := b.DependsOn
	if deps == nil {
		deps = []string{}
	}
	return map[string]any{
		"cluster":            c.Name,
		"bundle":             b.Name,
		"namespace":          b.Namespace,
		"hydratedPath":       hydratedPath,
		"wave":               waveName,
		"waveIndex":          strconv.Itoa(waveIndex),
		"region":             c.Region,
		"labels":             c.Labels,
		"facts":              c.Facts,
		"dependsOn":          deps,
		"prune":              b.Apply.Prune,
		"serviceAccountName": b.Apply.ServiceAccountName,
		"source":             sourceParams(b),
	}
}

func sourceParams(b *fleet.Bundle) map[string]any {
	s := map[string]any{"kind": b.Source.Kind, "path": "", "chart": "", "repoURL": "", "version": "", "releaseName": "", "values": ""}
	switch {
	case b.Source.Helm != nil:
		h := b.Source.Helm
		release := h.ReleaseName
		if release == "" {
			release = b.Name
		}
		s["releaseName"] = release
		if h.Repo != "" {
			s["repoURL"], s["chart"], s["version"] = h.Repo, h.Chart, h.Version
		} else {
			s["path"] = h.Chart
		}
		values := "{}\n"
		if len(b.Values) > 0 {
			if y, err := yaml.JSONToYAML(b.Values); err == nil {
				values = string(y)
			}
		}
		s["values"] = values
	case b.Source.Kustomize != nil:
		s["path"] = b.Source.Kustomize.Path
	case b.Source.Manifests != nil:
		s["path"] = b.Source.Manifests.Path
	}
	return s
}

// jsonIndent is v as indented JSON with a final newline, HTML characters
// as they are.
func jsonIndent(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
