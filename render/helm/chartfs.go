package helm

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/ignore"

	"github.com/flotilla-gitops/flotilla/render"
)

// Bounds of a chart folder read from the fleet repository: symlinks inside
// the repository may make a cycle (templates -> .), and a hostile fleet may
// try to make the loader read forever.
const (
	maxChartDepth = 32
	maxChartFiles = 10000
)

// utf8BOM is stripped from every chart file, as Helm's loader does.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// loadRepoChart loads the chart folder dir of the fleet repository the way
// Helm's loader.LoadDir does (.helmignore, its default rules, BOMs,
// regular files only, Helm's size limit), but reading every file through
// the repository root (os.Root): a symlink anywhere in the chart, its
// templates, files or subcharts may lead elsewhere inside the repository,
// never out of it. Helm itself only sees the files in memory
// (loader.LoadFiles), so it never touches the host file system.
func loadRepoChart(repoDir, dir string) (*chart.Chart, error) {
	root, err := os.OpenRoot(repoDir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	dir = path.Clean(filepath.ToSlash(dir))
	fsys := root.FS()

	rules := ignore.Empty()
	if data, err := fs.ReadFile(fsys, path.Join(dir, ignore.HelmIgnore)); err == nil {
		if rules, err = ignore.Parse(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("%s: %w", path.Join(dir, ignore.HelmIgnore), err)
		}
	}
	rules.AddDefaults()

	var files []*loader.BufferedFile
	var walk func(rel string, depth int) error
	walk = func(rel string, depth int) error {
		if depth > maxChartDepth {
			return fmt.Errorf("chart %s: folders nest deeper than %d (a symlink cycle?)", dir, maxChartDepth)
		}
		entries, err := fs.ReadDir(fsys, path.Join(dir, rel))
		if err != nil {
			return explain(repoDir, path.Join(dir, rel), err)
		}
		for _, e := range entries {
			name := path.Join(rel, e.Name())
			full := path.Join(dir, name)
			// Stat follows symlinks, only inside the repository.
			fi, err := fs.Stat(fsys, full)
			if err != nil {
				return explain(repoDir, full, err)
			}
			if rules.Ignore(name, fi) {
				continue
			}
			if fi.IsDir() {
				if err := walk(name, depth+1); err != nil {
					return err
				}
				continue
			}
			if !fi.Mode().IsRegular() {
				return fmt.Errorf("cannot load irregular file %s as it has file mode type bits set", full)
			}
			if fi.Size() > loader.MaxDecompressedFileSize {
				return fmt.Errorf("chart file %q is larger than the maximum file size %d", full, loader.MaxDecompressedFileSize)
			}
			if len(files) >= maxChartFiles {
				return fmt.Errorf("chart %s has more than %d files", dir, maxChartFiles)
			}
			data, err := fs.ReadFile(fsys, full)
			if err != nil {
				return explain(repoDir, full, err)
			}
			files = append(files, &loader.BufferedFile{Name: name, Data: bytes.TrimPrefix(data, utf8BOM)})
		}
		return nil
	}
	if err := walk("", 0); err != nil {
		return nil, err
	}
	chrt, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("loading chart %s: %w", dir, err)
	}
	return chrt, nil
}

// explain says why the repository root refused a path: most often a
// symlink leading outside the repository (render.RepoPath tells which).
func explain(repoDir, rel string, err error) error {
	if _, perr := render.RepoPath(repoDir, rel); perr != nil {
		return perr
	}
	return fmt.Errorf("%s: %w", rel, err)
}
