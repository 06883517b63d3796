package kustomize

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/flotilla-gitops/flotilla/render"
)

// repoFS is the file system kustomize builds in: the repository, read-only
// through os.Root (so `..` and symlinks cannot leave it), mounted at
// repoMount, plus an in-memory area for the kustomizations Flotilla
// generates. Nothing is copied and nothing is written to the checkout.
type repoFS struct {
	root *os.Root
	mem  filesys.FileSystem
	// secrets reads the repository's SOPS-encrypted files (nil: as they
	// are).
	secrets render.Secrets
	// ctx is the render's, which records what secrets decrypts.
	ctx context.Context //nolint:containedctx // a kustomize file system has no context of its own
}

var _ filesys.FileSystem = (*repoFS)(nil)

// errReadOnly is returned for writes to the repository.
var errReadOnly = errors.New("the fleet repository is read-only")

func newRepoFS(ctx context.Context, root *os.Root, secrets render.Secrets) *repoFS {
	return &repoFS{root: root, mem: filesys.MakeFsInMemory(), secrets: secrets, ctx: ctx}
}

// inRepo maps an absolute path to a path of the repository (".", "a/b").
func inRepo(p string) (string, bool) {
	p = path.Clean("/" + filepath.ToSlash(p))
	if p == repoMount {
		return ".", true
	}
	rel, ok := strings.CutPrefix(p, repoMount+"/")
	return rel, ok
}

func (r *repoFS) Create(p string) (filesys.File, error) {
	if _, ok := inRepo(p); ok {
		return nil, fmt.Errorf("%s: %w", p, errReadOnly)
	}
	return r.mem.Create(p)
}

func (r *repoFS) Mkdir(p string) error {
	if _, ok := inRepo(p); ok {
		return fmt.Errorf("%s: %w", p, errReadOnly)
	}
	return r.mem.Mkdir(p)
}

func (r *repoFS) MkdirAll(p string) error {
	if _, ok := inRepo(p); ok {
		return fmt.Errorf("%s: %w", p, errReadOnly)
	}
	return r.mem.MkdirAll(p)
}

func (r *repoFS) RemoveAll(p string) error {
	if _, ok := inRepo(p); ok {
		return fmt.Errorf("%s: %w", p, errReadOnly)
	}
	return r.mem.RemoveAll(p)
}

func (r *repoFS) WriteFile(p string, data []byte) error {
	if _, ok := inRepo(p); ok {
		return fmt.Errorf("%s: %w", p, errReadOnly)
	}
	return r.mem.WriteFile(p, data)
}

func (r *repoFS) Open(p string) (filesys.File, error) {
	if rel, ok := inRepo(p); ok {
		if r.secrets == nil {
			return r.root.Open(rel)
		}
		// What is read of an encrypted file is what Secrets gives:
		// served from memory.
		data, err := r.ReadFile(p)
		if err != nil {
			return nil, err
		}
		mem := filesys.MakeFsInMemory()
		if err := mem.WriteFile(p, data); err != nil {
			return nil, err
		}
		return mem.Open(p)
	}
	return r.mem.Open(p)
}

func (r *repoFS) ReadFile(p string) ([]byte, error) {
	if rel, ok := inRepo(p); ok {
		data, err := fs.ReadFile(r.root.FS(), rel)
		if err != nil {
			return nil, err
		}
		return render.ReadSecrets(r.ctx, r.secrets, rel, data)
	}
	return r.mem.ReadFile(p)
}

func (r *repoFS) IsDir(p string) bool {
	if rel, ok := inRepo(p); ok {
		st, err := r.root.Stat(rel)
		return err == nil && st.IsDir()
	}
	if path.Clean("/"+p) == "/" {
		return true
	}
	return r.mem.IsDir(p)
}

func (r *repoFS) Exists(p string) bool {
	if rel, ok := inRepo(p); ok {
		_, err := r.root.Stat(rel)
		return err == nil
	}
	return path.Clean("/"+p) == "/" || r.mem.Exists(p)
}

func (r *repoFS) ReadDir(p string) ([]string, error) {
	if rel, ok := inRepo(p); ok {
		entries, err := fs.ReadDir(r.root.FS(), rel)
		if err != nil {
			return nil, err
		}
		names := make([]string, len(entries))
		for i, e := range entries {
			names[i] = e.Name()
		}
		return names, nil
	}
	return r.mem.ReadDir(p)
}

// CleanedAbs splits a path into a confirmed folder and a file name, as the
// disk file system does (without following symlinks: os.Root does).
func (r *repoFS) CleanedAbs(p string) (filesys.ConfirmedDir, string, error) {
	abs := path.Clean("/" + filepath.ToSlash(p))
	if r.IsDir(abs) {
		return filesys.ConfirmedDir(abs), "", nil
	}
	dir, file := path.Split(abs)
	dir = path.Clean(dir)
	if !r.IsDir(dir) {
		return "", "", fmt.Errorf("%s: no such folder", dir)
	}
	return filesys.ConfirmedDir(dir), file, nil
}

func (r *repoFS) Glob(pattern string) ([]string, error) {
	rel, ok := inRepo(pattern)
	if !ok {
		return r.mem.Glob(pattern)
	}
	matches, err := fs.Glob(r.root.FS(), rel)
	if err != nil {
		return nil, err
	}
	for i, m := range matches {
		matches[i] = path.Join(repoMount, m)
	}
	return matches, nil
}

func (r *repoFS) Walk(p string, walkFn filepath.WalkFunc) error {
	rel, ok := inRepo(p)
	if !ok {
		return r.mem.Walk(p, walkFn)
	}
	return fs.WalkDir(r.root.FS(), rel, func(q string, d fs.DirEntry, err error) error {
		abs := path.Join(repoMount, q)
		if err != nil {
			return walkFn(abs, nil, err)
		}
		info, err := d.Info()
		return walkFn(abs, info, err)
	})
}
