// Package manifests renders a folder of plain YAML or JSON files of the
// fleet repository: every object of every file, multi-document files and
// `List` kinds included.
package manifests

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/flotilla-gitops/flotilla/render"
)

// Renderer reads manifests. It has no state.
type Renderer struct {
	// MaxFileSize bounds one manifest file; 0 means DefaultMaxFileSize. A
	// larger file fails the bundle before it is read.
	MaxFileSize int64
	// Secrets reads SOPS-encrypted files; nil reads them as they are.
	Secrets render.Secrets
}

// DefaultMaxFileSize bounds a manifest file: far above any real manifest,
// far below what would exhaust memory when decoded.
const DefaultMaxFileSize = 16 << 20

var _ render.Renderer = Renderer{}

// extensions are the files read; others (README.md, …) are ignored.
var extensions = []string{".yaml", ".yml", ".json"}

// Render reads the files of req.Source.Manifests.Path, in name order; with
// Recursive, of its sub-folders too.
func (r Renderer) Render(ctx context.Context, req *render.Request) (*render.Output, error) {
	limit := r.MaxFileSize
	if limit <= 0 {
		limit = DefaultMaxFileSize
	}
	src := req.Source.Manifests
	if src == nil {
		return nil, fmt.Errorf("no manifests source")
	}
	if _, err := render.RepoPath(req.RepoDir, src.Path); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(req.RepoDir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	dir := path.Clean(filepath.ToSlash(src.Path))

	var files []string
	err = fs.WalkDir(root.FS(), dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && !src.Recursive {
				return fs.SkipDir
			}
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 && src.Recursive {
			// A link to a folder is not walked: skipped silently, its
			// objects would be missing, and pruned from the cluster.
			if st, err := fs.Stat(root.FS(), p); err == nil && st.IsDir() {
				return fmt.Errorf("%s is a link to a folder, which a recursive manifests path does not follow (its objects would be missing, and pruned): link the files, or name the folder in a bundle of its own", p)
			}
		}
		if slices.Contains(extensions, strings.ToLower(path.Ext(p))) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s has no .yaml, .yml or .json files", dir)
	}
	out := &render.Output{}
	for _, f := range files {
		if info, err := fs.Stat(root.FS(), f); err != nil {
			return nil, err
		} else if info.Size() > limit {
			return nil, fmt.Errorf("%s is %d bytes, more than the %d a manifest file may have (--max-manifest-size)", f, info.Size(), limit)
		}
		data, err := fs.ReadFile(root.FS(), f)
		if err != nil {
			return nil, err
		}
		if data, err = render.ReadSecrets(ctx, r.Secrets, f, data); err != nil {
			return nil, err
		}
		objs, err := render.DecodeObjects(data, f)
		if err != nil {
			return nil, err
		}
		out.Objects = append(out.Objects, objs...)
	}
	return out, nil
}
