package source

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"

	"github.com/flotilla-gitops/flotilla/internal/gitrev"
)

// Fetching in proportion to the change (issue 39). A new tip used to be a
// shallow clone of its own: every file fetched and written again for a
// commit that changed one. Now the cache keeps one object store (a bare
// repository, storeDir, shallow at the first tip it fetched) that each
// tip is fetched into: the remote sends the commits since the store's tip
// and only the objects they add (the tip is offered as a have). The fetch
// does not ask for depth 1: with go-git's one-request negotiation over
// HTTP, git upload-pack then sends the whole tree again, haves or not
// (measured against git http-backend; git's own client, negotiating in
// two requests, gets the 5 objects). The price: a tip on another history
// (a force-push to a rewrite) brings that history once; a tip older than
// the store's first (a force-push back), which the remote then does not
// send, starts the store again, shallow (TestFetchATipOlderThanTheStore).
// The tip's folder is then written from the store, and each file
// the previous tip's folder holds with the same content and mode is a
// hard link to it, not a copy: a commit that changes 10 of 5,000 files
// writes 10. Checkout folders are never written to once complete (renders
// only read them), so sharing their files is safe.
//
// Everything in the tree is the remote's: the folder is written by
// WriteTree (through an os.Root, links last, no ".." or ".git"), as a pull
// request's tree is for a preview.

// storeDir is the object store's folder in the cache (Prune keeps it).
const storeDir = ".objects"

// maxStorePacks bounds the store: past it (one pack per fetch), the store
// starts again with the next fetch, a full one.
const maxStorePacks = 64

// tipRef is where the store keeps the fetched tip.
const tipRef = plumbing.ReferenceName("refs/flotilla/tip")

// written is a folder writeTree wrote, and its regular files' contents
// and modes, by slash path: the next tip links what it shares.
type written struct {
	dir   string
	files map[string]fileID
}

type fileID struct {
	hash plumbing.Hash
	mode filemode.FileMode
}

// fetchTip fetches the followed reference's tip into the store (only what
// it lacks; afresh, a new store) and checks it is revision; it returns
// the store.
func (s *Source) fetchTip(ctx context.Context, revision string, afresh bool) (*git.Repository, error) {
	dir := filepath.Join(s.opts.CacheDir, storeDir)
	repo, err := git.PlainOpen(dir)
	depth := 0 // the commits since the store's tip, with what they add
	if err != nil || afresh || packs(dir) > maxStorePacks {
		depth = 1 // a new store: the tip alone
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
		if repo, err = git.PlainInit(dir, true); err != nil {
			return nil, err
		}
		if _, err = repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{s.opts.URL}}); err != nil {
			return nil, err
		}
	}
	err = repo.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", Auth: s.auth, Depth: depth, Tags: git.NoTags, Force: true,
		RefSpecs: []config.RefSpec{config.RefSpec(fmt.Sprintf("+%s:%s", s.ref(), tipRef))}})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil, s.explain(timedOut(ctx, err))
	}
	tip, err := repo.Reference(tipRef, true)
	if err != nil {
		return nil, err
	}
	if got := tip.Hash().String(); got != revision {
		return nil, fmt.Errorf("%s moved while fetching: asked for %s, got %s; the next poll takes the new tip", s.ref().Short(), gitrev.Short(revision), gitrev.Short(got))
	}
	return repo, nil
}

// packs counts the store's pack files.
func packs(dir string) int {
	entries, _ := os.ReadDir(filepath.Join(dir, "objects", "pack"))
	n := 0
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".pack") {
			n++
		}
	}
	return n
}
