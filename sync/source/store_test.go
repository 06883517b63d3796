package source_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// packBytes is the size of the packs in the cache's object store.
func packBytes(t *testing.T, cache string) int64 {
	t.Helper()
	packs, _ := filepath.Glob(filepath.Join(cache, ".objects", "objects", "pack", "*.pack"))
	var n int64
	for _, p := range packs {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// TestFetchWritesWhatChanged, against git http-backend: the next tip's
// fetch brings only what changed (its pack a small fraction of the
// first), and its folder links the files it shares with the last tip's
// rather than writing them again; changed, added, removed and executable
// files come out as Git checks them out.
func TestFetchWritesWhatChanged(t *testing.T) {
	repo := gittest.New(t)
	files := map[string]string{}
	for i := range 300 {
		var b strings.Builder
		for j := range 60 { // content that does not compress to nothing
			fmt.Fprintf(&b, "app-%d-key-%d: %x\n", i, j, (i+1)*(j+7919)*2654435761)
		}
		files[fmt.Sprintf("apps/app-%03d/config.yaml", i)] = b.String()
	}
	files["run.sh"] = "#!/bin/sh\n"
	repo.Commit(files)
	if err := os.Chmod(filepath.Join(repo.Work, "run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	gittest.Git(t, repo.Work, "update-index", "--chmod=+x", "run.sh")
	gittest.Git(t, repo.Work, "commit", "-m", "executable")
	gittest.Git(t, repo.Work, "push", "origin", "main")
	rev1 := gittest.Git(t, repo.Work, "rev-parse", "HEAD")
	url, _ := repo.ServeBackend()
	cache := t.TempDir()
	src, err := source.New(source.Options{URL: url, CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	co1, err := src.Fetch(context.Background(), rev1)
	if err != nil {
		t.Fatal(err)
	}
	first := packBytes(t, cache)

	gittest.Git(t, repo.Work, "rm", "-q", "apps/app-299/config.yaml")
	rev2 := repo.Commit(map[string]string{"apps/app-007/config.yaml": "changed\n", "apps/new/config.yaml": "new\n"})
	co2, err := src.Fetch(context.Background(), rev2)
	if err != nil {
		t.Fatal(err)
	}
	if second := packBytes(t, cache) - first; second <= 0 || second*20 > first {
		t.Errorf("the second fetch brought %d bytes, the first %d: want at most a twentieth", second, first)
	}
	read := func(name string) string {
		data, _ := os.ReadFile(filepath.Join(co2.Dir, name))
		return string(data)
	}
	if read("apps/app-007/config.yaml") != "changed\n" || read("apps/new/config.yaml") != "new\n" || read("apps/app-008/config.yaml") != files["apps/app-008/config.yaml"] {
		t.Error("the second checkout's files are not the revision's")
	}
	if _, err := os.Lstat(filepath.Join(co2.Dir, "apps/app-299/config.yaml")); !os.IsNotExist(err) {
		t.Errorf("a removed file is still there: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(co2.Dir, "run.sh")); err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Errorf("run.sh lost its executable bit: %v", fi)
	}
	same := func(name string) bool {
		a, err1 := os.Stat(filepath.Join(co1.Dir, name))
		b, err2 := os.Stat(filepath.Join(co2.Dir, name))
		return err1 == nil && err2 == nil && os.SameFile(a, b)
	}
	if !same("apps/app-008/config.yaml") || !same("run.sh") {
		t.Error("an unchanged file was written again, not linked")
	}
	if same("apps/app-007/config.yaml") {
		t.Error("a changed file is linked to its old content")
	}
	if co2.Repository == nil {
		t.Fatal("no repository for the checkout")
	}
	if c, err := co2.Repository.CommitObject(plumbing.NewHash(rev2)); err != nil || c.Hash.String() != rev2 {
		t.Errorf("the checkout's repository lacks its commit: %v", err)
	}
	if err := src.Prune(rev2); err != nil {
		t.Fatal(err)
	}
	if read("apps/app-008/config.yaml") != files["apps/app-008/config.yaml"] {
		t.Error("pruning the old checkout took the linked file's content")
	}
	// A new Source on the same cache (an agent restarted) reuses the
	// folder and the store.
	again, err := source.New(source.Options{URL: url, CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	if co, err := again.Fetch(context.Background(), rev2); err != nil || co.Dir != co2.Dir || co.Repository == nil {
		t.Errorf("after a restart: %v, %+v", err, co)
	}
}

// TestFetchRefusesHostileTrees: a tip whose tree holds a path Git would
// not check out ("..", ".git"), or a symlink to a folder outside beside a
// file under the same name, is refused, and nothing is written outside
// the cache (the tree writer is WriteTree's, TestWriteTreeStaysInItsFolder).
func TestFetchRefusesHostileTrees(t *testing.T) {
	outside := t.TempDir()
	canary := filepath.Join(outside, "canary")
	if err := os.WriteFile(canary, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, entries := range map[string]treeEntries{
		"dot-dot": func(blob func(string) plumbing.Hash, tree func(...object.TreeEntry) plumbing.Hash) []object.TreeEntry {
			return []object.TreeEntry{{Name: "..", Mode: filemode.Dir, Hash: tree(object.TreeEntry{Name: "canary", Mode: filemode.Regular, Hash: blob("overwritten")})}}
		},
		"dot-git": func(blob func(string) plumbing.Hash, tree func(...object.TreeEntry) plumbing.Hash) []object.TreeEntry {
			return []object.TreeEntry{{Name: ".git", Mode: filemode.Dir, Hash: tree(object.TreeEntry{Name: "config", Mode: filemode.Regular, Hash: blob("[core]\n")})}}
		},
		"symlink-and-folder": func(blob func(string) plumbing.Hash, tree func(...object.TreeEntry) plumbing.Hash) []object.TreeEntry {
			return []object.TreeEntry{
				{Name: "a", Mode: filemode.Symlink, Hash: blob(outside)},
				{Name: "a", Mode: filemode.Dir, Hash: tree(object.TreeEntry{Name: "canary", Mode: filemode.Regular, Hash: blob("overwritten")})},
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			repo := gittest.New(t)
			repo.Commit(map[string]string{"fleet.cue": "package fleet\n"})
			rev := pushHostile(t, repo.Bare, entries)
			url, _ := repo.ServeBackend()
			src, err := source.New(source.Options{URL: url, CacheDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := src.Fetch(context.Background(), rev); err == nil {
				t.Error("a hostile tree was checked out")
			}
			if data, err := os.ReadFile(canary); err != nil || string(data) != "untouched" {
				t.Fatalf("the canary outside the cache: %q %v", data, err)
			}
			if list, _ := os.ReadDir(outside); len(list) != 1 {
				t.Errorf("%d entries outside, want the canary alone", len(list))
			}
		})
	}
}

// pushHostile stores a commit on main of the bare repository whose tree
// holds the entries made (storeCommit), and returns it.
func pushHostile(t *testing.T, bare string, entries treeEntries) string {
	t.Helper()
	r, err := git.PlainOpen(bare)
	if err != nil {
		t.Fatal(err)
	}
	head, err := r.Reference(plumbing.NewBranchReferenceName("main"), true)
	if err != nil {
		t.Fatal(err)
	}
	commit := storeCommit(t, r, entries, head.Hash())
	if err := r.Storer.SetReference(plumbing.NewHashReference(plumbing.NewBranchReferenceName("main"), commit)); err != nil {
		t.Fatal(err)
	}
	return commit.String()
}

// TestFetchATipOlderThanTheStore: the branch force-pushed back to a commit
// older than the store's first tip (beyond its shallow boundary: the
// remote, told the store has its descendant, sends nothing), then to a new
// history: each is fetched and checked out (the store starts again).
func TestFetchATipOlderThanTheStore(t *testing.T) {
	repo := gittest.New(t)
	a := repo.Commit(map[string]string{"fleet.cue": "a\n"})
	repo.Commit(map[string]string{"fleet.cue": "b\n"})
	c := repo.Commit(map[string]string{"fleet.cue": "c\n", "more.yaml": "x\n"})
	url, _ := repo.ServeBackend()
	src, err := source.New(source.Options{URL: url, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(rev, want string) {
		t.Helper()
		co, err := src.Fetch(context.Background(), rev)
		if err != nil {
			t.Fatalf("fetching %s: %v", rev, err)
		}
		if data, _ := os.ReadFile(filepath.Join(co.Dir, "fleet.cue")); string(data) != want {
			t.Errorf("%s holds %q, want %q", rev, data, want)
		}
		if err := src.Prune(rev); err != nil {
			t.Fatal(err)
		}
	}
	fetch(c, "c\n")
	gittest.Git(t, repo.Work, "reset", "-q", "--hard", a)
	gittest.Git(t, repo.Work, "push", "-q", "--force", "origin", "main")
	fetch(a, "a\n")
	gittest.Git(t, repo.Work, "checkout", "-q", "--orphan", "other")
	gittest.Git(t, repo.Work, "rm", "-rfq", ".")
	d := repo.Commit(map[string]string{"fleet.cue": "d\n"}) // on the orphan branch (main is pushed as it is)
	gittest.Git(t, repo.Work, "push", "-q", "--force", "origin", "other:main")
	fetch(d, "d\n")
}
