package sops

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

// File is a SOPS-encrypted file of the repository and the recipients it
// is encrypted to.
type File struct {
	Path       string
	Recipients []string
}

// maxScanned bounds a file read to find out whether it is encrypted.
const maxScanned = 16 << 20

// EncryptedFiles lists the SOPS-encrypted files a source gives a cluster,
// with their recipients, reading only their SOPS metadata: a manifests
// folder's YAML and JSON files; a kustomization's folder and, following
// the resources, bases and components its kustomization files name, the
// repository's folders those lead to; a Helm bundle's values files. Every
// file is read through the repository root.
func EncryptedFiles(repoDir string, src spec.Source) ([]File, error) {
	root, err := os.OpenRoot(repoDir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	var paths []string
	switch {
	case src.Manifests != nil:
		paths, err = walk(root, path.Clean(filepath.ToSlash(src.Manifests.Path)), src.Manifests.Recursive)
	case src.Kustomize != nil:
		// The bundle's own components are read as its kustomization is.
		seen := map[string]bool{}
		for _, dir := range append([]string{src.Kustomize.Path}, src.Kustomize.Components...) {
			more, werr := kustomizationFiles(root, path.Clean(filepath.ToSlash(dir)), seen)
			paths, err = append(paths, more...), errors.Join(err, werr)
		}
	case src.Helm != nil:
		for _, f := range src.Helm.ValuesFiles {
			paths = append(paths, path.Clean(filepath.ToSlash(f)))
		}
	}
	if err != nil {
		return nil, err
	}
	slices.Sort(paths)
	paths = slices.Compact(paths)
	var out []File
	for _, p := range paths {
		if _, ok := store(p); !ok {
			continue
		}
		data, err := render.ReadBounded(root, p, maxScanned)
		if err != nil {
			continue // rendering reports a file it cannot read
		}
		if !Encrypted(p, data) {
			continue
		}
		rs, err := Recipients(p, data)
		if err != nil {
			return nil, err
		}
		out = append(out, File{Path: p, Recipients: rs})
	}
	return out, nil
}

// walk lists the files of dir (and its sub-folders when recursive).
func walk(root *os.Root, dir string, recursive bool) ([]string, error) {
	var out []string
	err := fs.WalkDir(root.FS(), dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && !recursive {
				return fs.SkipDir
			}
			return nil
		}
		out = append(out, p)
		return nil
	})
	return out, err
}

// kustomizationFiles lists every file under dir and under the local
// folders its kustomization files refer to, recursively.
func kustomizationFiles(root *os.Root, dir string, seen map[string]bool) ([]string, error) {
	if seen[dir] {
		return nil, nil
	}
	seen[dir] = true
	files, err := walk(root, dir, true)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		switch path.Base(f) {
		case "kustomization.yaml", "kustomization.yml", "Kustomization":
		default:
			continue
		}
		data, err := render.ReadBounded(root, f, maxScanned)
		if err != nil {
			continue
		}
		var k struct {
			Resources  []string `json:"resources"`
			Bases      []string `json:"bases"`
			Components []string `json:"components"`
		}
		if yaml.Unmarshal(data, &k) != nil {
			continue
		}
		for _, ref := range slices.Concat(k.Resources, k.Bases, k.Components) {
			if strings.Contains(ref, "://") || strings.HasPrefix(ref, "github.com/") {
				continue // remote: not the repository's files
			}
			target := path.Join(path.Dir(f), ref)
			if !filepath.IsLocal(filepath.FromSlash(target)) {
				continue // outside the repository: rendering refuses it
			}
			if fi, err := root.Stat(target); err != nil || !fi.IsDir() || strings.HasPrefix(target+"/", dir+"/") {
				continue
			}
			more, err := kustomizationFiles(root, target, seen)
			if err != nil {
				return nil, err
			}
			files = append(files, more...)
		}
	}
	return files, nil
}
