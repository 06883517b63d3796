package render

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrPathEscapes is wrapped when a path from the fleet repository is
// absolute, climbs out with `..`, or reaches outside through a symlink.
var ErrPathEscapes = errors.New("path leaves the fleet repository")

// RepoPath checks that rel, a path the fleet gives, names something inside
// the repository at repoDir, and that no symlink under it leads outside.
// It returns the absolute path.
func RepoPath(repoDir, rel string) (string, error) {
	if rel == "" {
		return "", fmt.Errorf("empty path")
	}
	if !filepath.IsLocal(filepath.FromSlash(rel)) {
		return "", fmt.Errorf("%w: %q must be a relative path inside the repository", ErrPathEscapes, rel)
	}
	root, err := os.OpenRoot(repoDir)
	if err != nil {
		return "", err
	}
	defer root.Close()
	rel = filepath.FromSlash(rel)
	st, err := root.Stat(rel)
	if err != nil {
		return "", pathError(repoDir, rel, err)
	}
	if st.IsDir() {
		// Every symlink below must resolve inside the repository: os.Root
		// refuses to follow one that does not.
		err := fs.WalkDir(root.FS(), filepath.ToSlash(rel), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type()&fs.ModeSymlink != 0 {
				if _, err := root.Stat(filepath.FromSlash(p)); err != nil {
					return pathError(repoDir, p, err)
				}
			}
			return nil
		})
		if err != nil {
			return "", err
		}
	}
	abs, err := filepath.Abs(filepath.Join(repoDir, rel))
	if err != nil {
		return "", err
	}
	return abs, nil
}

// pathError explains why os.Root refused a path: most often a symlink
// that leads outside the repository (os.Root has no exported error for
// that, so the link is resolved to tell).
func pathError(repoDir, rel string, err error) error {
	if outside(repoDir, rel) {
		return fmt.Errorf("%w: %s is a symlink to outside the repository", ErrPathEscapes, filepath.ToSlash(rel))
	}
	if errors.Is(err, fs.ErrNotExist) {
		return notInRepo(filepath.ToSlash(rel))
	}
	return fmt.Errorf("%s: %w", filepath.ToSlash(rel), err)
}

// notInRepo is a path the repository does not have; it is fs.ErrNotExist.
type notInRepo string

func (e notInRepo) Error() string { return string(e) + " does not exist in the fleet repository" }
func (e notInRepo) Unwrap() error { return fs.ErrNotExist }

// outside reports whether rel resolves, through symlinks, to a place
// outside repoDir.
func outside(repoDir, rel string) bool {
	repo, err := filepath.EvalSymlinks(repoDir)
	if err != nil {
		return false
	}
	target, err := filepath.EvalSymlinks(filepath.Join(repoDir, rel))
	if err != nil {
		// A dangling link: where does it point?
		link, lerr := os.Readlink(filepath.Join(repoDir, rel))
		if lerr != nil {
			return false
		}
		if !filepath.IsAbs(link) {
			link = filepath.Join(filepath.Dir(filepath.Join(repo, rel)), link)
		}
		target = filepath.Clean(link)
	}
	r, err := filepath.Rel(repo, target)
	return err != nil || !filepath.IsLocal(r)
}

// ReadBounded reads a regular file of the repository through root (so no
// symlink leads out of it), refusing one larger than max bytes before
// reading it all.
func ReadBounded(root *os.Root, rel string, max int64) ([]byte, error) {
	f, err := root.Open(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", rel)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", rel, max)
	}
	return data, nil
}
