// Package deploy holds the agent's install: the kustomize tree of this
// folder (kubectl apply -k deploy/) and the Helm chart
// chart/flotilla-agent, which a test keeps equal to it, so the two are one
// install. The chart is embedded in the binary: `flotilla bootstrap`
// renders it with Helm's own template engine, as `helm template` does, and
// applies the result.
package deploy

import (
	"embed"
	"fmt"
	"io/fs"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"

	"github.com/flotilla-gitops/flotilla/render"
)

//go:embed all:chart/flotilla-agent
var chartFS embed.FS

// ChartDir is the chart's folder in the repository (and in the embedded
// files).
const ChartDir = "chart/flotilla-agent"

// Chart loads the embedded chart.
func Chart() (*chart.Chart, error) {
	var files []*loader.BufferedFile
	err := fs.WalkDir(chartFS, ChartDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := chartFS.ReadFile(path)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: strings.TrimPrefix(path, ChartDir+"/"), Data: data})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return loader.LoadFiles(files)
}

// Render renders the chart with values over its defaults, as `helm
// template` does (the values schema checked, NOTES.txt left out), and
// decodes the objects.
func Render(values map[string]any) ([]render.Object, error) {
	c, err := Chart()
	if err != nil {
		return nil, fmt.Errorf("loading the agent's chart: %w", err)
	}
	install := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	install.DryRun, install.DryRunOption = true, "client"
	install.ClientOnly, install.Replace = true, true
	install.ReleaseName = "flotilla-agent"
	install.Namespace = "flotilla-system"
	install.DisableHooks = true
	rel, err := install.Run(c, values)
	if err != nil {
		return nil, fmt.Errorf("rendering the agent's chart: %w", err)
	}
	return render.DecodeObjects([]byte(rel.Manifest), "chart/flotilla-agent")
}
