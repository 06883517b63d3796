package render

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

// ErrSourceMissing is wrapped when a bundle's source names a path the
// fleet repository does not have, or not of the kind the source needs.
var ErrSourceMissing = errors.New("not in the fleet repository")

// kustomizationFiles are the names kustomize reads in a folder.
var kustomizationFiles = []string{"kustomization.yaml", "kustomization.yml", "Kustomization"}

// CheckSource checks, without rendering and without network, that what a
// bundle's source names is in the repository at repoDir and of the right
// kind: a local chart's folder and its Chart.yaml, its values files, a
// kustomization's folder and its kustomization file, its components'
// folders, a manifests folder. Paths are read through the repository root
// (nothing outside it is looked at). Charts of chart repositories and OCI
// registries are not checked here.
func CheckSource(repoDir string, src spec.Source) error {
	root, err := os.OpenRoot(repoDir)
	if err != nil {
		return err
	}
	defer root.Close()
	c := sourceCheck{root: root, repoDir: repoDir}
	switch src.Kind {
	case spec.KindHelm:
		if h := src.Helm; h != nil {
			if h.InRepository() {
				c.dir("helm.chart", h.Chart, "Chart.yaml")
			}
			for _, f := range h.ValuesFiles {
				c.file("helm.valuesFiles", f)
			}
		}
	case spec.KindKustomize:
		if k := src.Kustomize; k != nil {
			c.dir("kustomize.path", k.Path, kustomizationFiles...)
			for _, comp := range k.Components {
				c.dir("kustomize.components", comp, kustomizationFiles...)
			}
		}
	case spec.KindManifests:
		if m := src.Manifests; m != nil {
			c.dir("manifests.path", m.Path)
		}
	}
	return errors.Join(c.errs...)
}

// sourceCheck collects what a source lacks.
type sourceCheck struct {
	root    *os.Root
	repoDir string
	errs    []error
}

// stat looks rel up through the root; nil (the problem noted) when it is
// not there or not inside the repository.
func (c *sourceCheck) stat(field, rel string) fs.FileInfo {
	if rel == "" || !filepath.IsLocal(filepath.FromSlash(rel)) {
		c.errs = append(c.errs, fmt.Errorf("%s %q: %w: %q must be a relative path inside the repository", field, rel, ErrPathEscapes, rel))
		return nil
	}
	st, err := c.root.Stat(filepath.FromSlash(rel))
	switch {
	case errors.Is(err, fs.ErrNotExist) && !outside(c.repoDir, filepath.FromSlash(rel)):
		c.errs = append(c.errs, fmt.Errorf("%s %q: %w%s", field, rel, ErrSourceMissing, similar(c.root, rel)))
		return nil
	case err != nil:
		c.errs = append(c.errs, fmt.Errorf("%s %q: %w", field, rel, pathError(c.repoDir, filepath.FromSlash(rel), err)))
		return nil
	}
	return st
}

// dir checks that rel is a folder holding one of files (any, when none).
func (c *sourceCheck) dir(field, rel string, files ...string) {
	st := c.stat(field, rel)
	if st == nil {
		return
	}
	if !st.IsDir() {
		c.errs = append(c.errs, fmt.Errorf("%s %q: %w as a folder (it is a file)", field, rel, ErrSourceMissing))
		return
	}
	if len(files) == 0 {
		return
	}
	for _, f := range files {
		if st, err := c.root.Stat(filepath.Join(filepath.FromSlash(rel), f)); err == nil && st.Mode().IsRegular() {
			return
		}
	}
	c.errs = append(c.errs, fmt.Errorf("%s %q: %w: the folder has no %s", field, rel, ErrSourceMissing, strings.Join(files, " or ")))
}

// file checks that rel is a regular file.
func (c *sourceCheck) file(field, rel string) {
	if st := c.stat(field, rel); st != nil && !st.Mode().IsRegular() {
		c.errs = append(c.errs, fmt.Errorf("%s %q: %w as a file", field, rel, ErrSourceMissing))
	}
}

// Similar is an entry of the folder of rel (a path of the repository at
// repoDir) whose name differs from rel's by little (a typo: "wbe" for
// "web"), as a path of the repository, or "".
func Similar(repoDir, rel string) string {
	root, err := os.OpenRoot(repoDir)
	if err != nil {
		return ""
	}
	defer root.Close()
	return similarPath(root, rel)
}

// similar is Similar as " (did you mean …?)", or "".
func similar(root *os.Root, rel string) string {
	if near := similarPath(root, rel); near != "" {
		return fmt.Sprintf(" (did you mean %q?)", near)
	}
	return ""
}

func similarPath(root *os.Root, rel string) string {
	dir, name := filepath.Split(filepath.FromSlash(rel))
	if dir == "" {
		dir = "."
	}
	entries, err := fs.ReadDir(root.FS(), filepath.ToSlash(filepath.Clean(dir)))
	if err != nil {
		return ""
	}
	for _, e := range entries {
		if nearName(e.Name(), name) {
			return filepath.ToSlash(filepath.Join(filepath.Clean(dir), e.Name()))
		}
	}
	return ""
}

// nearName reports whether a and b differ by one edit or one swap of
// neighbouring letters.
func nearName(a, b string) bool {
	if a == b || len(a) < 3 || len(b) < 3 {
		return false
	}
	if len(a) == len(b) {
		var diff []int
		for i := range len(a) {
			if a[i] != b[i] {
				diff = append(diff, i)
			}
		}
		return len(diff) == 1 || (len(diff) == 2 && diff[1] == diff[0]+1 && a[diff[0]] == b[diff[1]] && a[diff[1]] == b[diff[0]])
	}
	if len(a) < len(b) {
		a, b = b, a
	}
	if len(a) != len(b)+1 {
		return false
	}
	for i := range len(b) {
		if a[i] != b[i] {
			return a[i+1:] == b[i:]
		}
	}
	return true
}
