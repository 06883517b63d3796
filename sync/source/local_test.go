package source_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/flotilla-gitops/flotilla/sync/source"
)

// hostileCommit stores a commit whose tree is entries, as given (git's
// fsck would refuse some of them; hosts accept them by default).
func hostileCommit(t *testing.T, entries treeEntries) *object.Commit {
	t.Helper()
	repo, err := git.PlainInit(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	c, err := repo.CommitObject(storeCommit(t, repo, entries))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// treeEntries make a tree's entries with the blobs and trees they store.
type treeEntries = func(blob func(string) plumbing.Hash, tree func(...object.TreeEntry) plumbing.Hash) []object.TreeEntry

// storeCommit stores, with go-git's object store (which checks nothing),
// a commit of the given parents whose tree is entries.
func storeCommit(t *testing.T, repo *git.Repository, entries treeEntries, parents ...plumbing.Hash) plumbing.Hash {
	t.Helper()
	store := func(o interface {
		Encode(plumbing.EncodedObject) error
	}, typ plumbing.ObjectType) plumbing.Hash {
		obj := repo.Storer.NewEncodedObject()
		obj.SetType(typ)
		if err := o.Encode(obj); err != nil {
			t.Fatal(err)
		}
		h, err := repo.Storer.SetEncodedObject(obj)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	blob := func(content string) plumbing.Hash {
		obj := repo.Storer.NewEncodedObject()
		obj.SetType(plumbing.BlobObject)
		w, err := obj.Writer()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
		w.Close()
		h, err := repo.Storer.SetEncodedObject(obj)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	tree := func(es ...object.TreeEntry) plumbing.Hash {
		return store(&object.Tree{Entries: es}, plumbing.TreeObject)
	}
	root := tree(entries(blob, tree)...)
	sig := object.Signature{Name: "t", Email: "t@example.com", When: time.Now()}
	return store(&object.Commit{Author: sig, Committer: sig, Message: "hostile", TreeHash: root, ParentHashes: parents}, plumbing.CommitObject)
}

// TestWriteTreeStaysInItsFolder: a commit's tree is untrusted (a pull
// request previewed in CI): a link "a" to a folder elsewhere beside an
// entry "a/x", a link to elsewhere named twice, a name that climbs out —
// none writes outside the destination (a canary folder stays empty and
// the file there unchanged), each fails naming the entry; a plain tree
// with a link inside is written as a checkout would.
func TestWriteTreeStaysInItsFolder(t *testing.T) {
	outside := t.TempDir()
	canary := filepath.Join(outside, "canary")
	if err := os.WriteFile(canary, []byte("CANARY"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[string]treeEntries{
		"a link and a folder of one name": func(blob func(string) plumbing.Hash, tree func(...object.TreeEntry) plumbing.Hash) []object.TreeEntry {
			return []object.TreeEntry{
				{Name: "a", Mode: filemode.Symlink, Hash: blob(outside)},
				{Name: "a", Mode: filemode.Dir, Hash: tree(object.TreeEntry{Name: "planted", Mode: filemode.Regular, Hash: blob("PLANTED")})},
			}
		},
		"a link, then a file of its name": func(blob func(string) plumbing.Hash, tree func(...object.TreeEntry) plumbing.Hash) []object.TreeEntry {
			return []object.TreeEntry{
				{Name: "b", Mode: filemode.Symlink, Hash: blob(canary)},
				{Name: "b", Mode: filemode.Regular, Hash: blob("OVERWRITTEN")},
			}
		},
		"a name that climbs out": func(blob func(string) plumbing.Hash, _ func(...object.TreeEntry) plumbing.Hash) []object.TreeEntry {
			return []object.TreeEntry{{Name: "..", Mode: filemode.Dir, Hash: blob("x")}}
		},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			dest := t.TempDir()
			err := source.WriteTree(hostileCommit(t, entries), "", dest)
			if err == nil {
				t.Error("no error")
			}
			if data, _ := os.ReadFile(canary); string(data) != "CANARY" {
				t.Errorf("the file outside now holds %q", data)
			}
			if list, _ := os.ReadDir(outside); len(list) != 1 {
				t.Errorf("%d entries outside, want the canary alone", len(list))
			}
		})
	}

	// A plain tree: files, a folder, and a link inside it.
	c := hostileCommit(t, func(blob func(string) plumbing.Hash, tree func(...object.TreeEntry) plumbing.Hash) []object.TreeEntry {
		return []object.TreeEntry{
			{Name: "charts", Mode: filemode.Dir, Hash: tree(object.TreeEntry{Name: "Chart.yaml", Mode: filemode.Regular, Hash: blob("name: web\n")})},
			{Name: "fleet.cue", Mode: filemode.Regular, Hash: blob("package fleet\n")},
			{Name: "web", Mode: filemode.Symlink, Hash: blob("charts")},
		}
	})
	dest := t.TempDir()
	if err := source.WriteTree(c, "", dest); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(dest, "web", "Chart.yaml")); err != nil || !strings.Contains(string(data), "name: web") {
		t.Errorf("through the link inside: %q, %v", data, err)
	}
}
