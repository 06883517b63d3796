package source

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// maxTreeBytes bounds what one revision's fleet folder may hold when
// written out (a fleet repository is attacker-supplied: a pull request can
// hold anything).
const maxTreeBytes = 2 << 30

// OpenLocal opens the Git repository holding dir, and says where dir
// is inside it (slash-separated, "" for its root).
func OpenLocal(dir string) (*git.Repository, string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, "", err
	}
	// EnableDotGitCommonDir: a `git worktree` keeps its refs (HEAD aside)
	// in the main repository's .git.
	repo, err := git.PlainOpenWithOptions(abs, &git.PlainOpenOptions{DetectDotGit: true, EnableDotGitCommonDir: true})
	if err != nil {
		return nil, "", fmt.Errorf("%s is not in a Git repository: %w", dir, err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		return nil, "", fmt.Errorf("%s: reading a fleet revision needs a repository with a work tree: %w", dir, err)
	}
	root, err := filepath.EvalSymlinks(wt.Filesystem.Root())
	if err != nil {
		return nil, "", err
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, "", err
	}
	rel, err := filepath.Rel(root, abs)
	if err != nil || strings.HasPrefix(rel, "..") {
		return nil, "", fmt.Errorf("%s is outside its repository %s", dir, root)
	}
	if rel == "." {
		rel = ""
	}
	return repo, filepath.ToSlash(rel), nil
}

// ResolveCommit finds the commit a revision (branch, tag, hash, HEAD~2 …) names.
func ResolveCommit(repo *git.Repository, ref string) (*object.Commit, error) {
	hash, err := repo.ResolveRevision(plumbing.Revision(ref))
	if err != nil {
		return nil, fmt.Errorf("revision %q: %w", ref, err)
	}
	c, err := repo.CommitObject(*hash)
	if err != nil {
		return nil, fmt.Errorf("revision %q: %w", ref, err)
	}
	return c, nil
}

// WriteTree writes the folder sub of a commit into dest (which exists and
// is empty), as a checkout would lay it out — regular files and symbolic
// links (which the renderers then refuse when they leave the folder, as in
// a checkout) — without touching the repository's work tree or index.
//
// The commit is untrusted (a pull request's): everything is written
// through an os.Root of dest, so no name and no link leads out of it;
// links are made last, so no file is written through one (a tree with a
// link "a" to a folder elsewhere and an entry "a/x" — which git's fsck
// flags and hosts accept — fails instead of writing there); an entry
// named twice, a name that is not one path element, or a ".git", fails.
func WriteTree(c *object.Commit, sub, dest string) error {
	_, err := writeTree(c, sub, dest, nil)
	return err
}

// writeTree is WriteTree that, given prev (a folder it wrote beside dest,
// in the same parent folder), hard-links each regular file prev holds
// with the same content and mode instead of writing it again; it returns
// what it wrote, for the next one.
func writeTree(c *object.Commit, sub, dest string, prev *written) (*written, error) {
	tree, err := c.Tree()
	if err != nil {
		return nil, err
	}
	if sub != "" {
		if tree, err = tree.Tree(sub); err != nil {
			if errors.Is(err, object.ErrDirectoryNotFound) {
				return nil, fmt.Errorf("commit %s has no folder %s", gitrev.Short(c.Hash.String()), sub)
			}
			return nil, err
		}
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	w := &treeWriter{root: root, tree: tree, commit: gitrev.Short(c.Hash.String()), seen: map[string]bool{},
		out: &written{dir: dest, files: map[string]fileID{}}}
	if prev != nil && filepath.Dir(prev.dir) == filepath.Dir(dest) && isDir(prev.dir) {
		// Links go through a root of the parent folder: neither name can
		// lead out of it.
		if w.parent, err = os.OpenRoot(filepath.Dir(dest)); err != nil {
			return nil, err
		}
		defer w.parent.Close()
		w.prev = prev
	}
	walker := object.NewTreeWalker(tree, true, nil)
	defer walker.Close()
	for {
		name, entry, err := walker.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := w.entry(name, entry); err != nil {
			return nil, err
		}
	}
	for _, l := range w.links {
		if err := root.Symlink(l.target, l.name); err != nil {
			return nil, fmt.Errorf("commit %s: tree entry %q: %w", w.commit, l.name, err)
		}
	}
	return w.out, nil
}

// treeWriter writes one tree's entries under a root; links wait.
type treeWriter struct {
	root    *os.Root
	tree    *object.Tree
	commit  string
	written int64
	seen    map[string]bool
	links   []treeLink
	// prev and parent, when set, let a file prev holds be linked (see
	// writeTree); out is what was written.
	prev   *written
	parent *os.Root
	out    *written
}

type treeLink struct{ name, target string }

func (w *treeWriter) entry(name string, entry object.TreeEntry) error {
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." || strings.ContainsRune(part, '\\') || strings.EqualFold(part, ".git") {
			return fmt.Errorf("commit %s: tree entry %q is not a path inside the folder", w.commit, name)
		}
	}
	if w.seen[name] {
		return fmt.Errorf("commit %s: tree entry %q is there twice (git fsck refuses such a tree)", w.commit, name)
	}
	w.seen[name] = true
	path := filepath.FromSlash(name)
	switch entry.Mode {
	case filemode.Dir:
		return w.root.MkdirAll(path, 0o755)
	case filemode.Regular, filemode.Executable, filemode.Deprecated:
		id := fileID{hash: entry.Hash, mode: entry.Mode}
		w.out.files[name] = id
		if w.prev != nil && w.prev.files[name] == id {
			rel := func(dir string) string { return filepath.Join(filepath.Base(dir), path) }
			if w.parent.Link(rel(w.prev.dir), rel(w.out.dir)) == nil {
				return nil
			}
		}
		f, err := w.tree.TreeEntryFile(&object.TreeEntry{Name: name, Mode: entry.Mode, Hash: entry.Hash})
		if err != nil {
			return err
		}
		if w.written += f.Size; w.written > maxTreeBytes {
			return fmt.Errorf("the fleet folder at %s holds more than %d bytes", w.commit, maxTreeBytes)
		}
		return writeBlob(f, w.root, path)
	case filemode.Symlink:
		f, err := w.tree.TreeEntryFile(&object.TreeEntry{Name: name, Mode: entry.Mode, Hash: entry.Hash})
		if err != nil {
			return err
		}
		target, err := f.Contents()
		if err != nil {
			return err
		}
		w.links = append(w.links, treeLink{name: path, target: target})
	}
	return nil // submodules: not part of the fleet
}

func writeBlob(f *object.File, root *os.Root, path string) error {
	r, err := f.Reader()
	if err != nil {
		return err
	}
	defer r.Close()
	perm := os.FileMode(0o644)
	if f.Mode == filemode.Executable {
		perm = 0o755 // as Git checks it out
	}
	out, err := root.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
