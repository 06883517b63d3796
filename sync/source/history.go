package source

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"

	"github.com/flotilla-gitops/flotilla/internal/gitrev"
)

// History is the followed reference's commit graph: what says whether one
// revision came before another (`flotilla status` checks an invariant's
// withinOneRevisionOf with it). Its last HistoryDepth commits are fetched
// into memory (go-git has no partial clone, so their files come too), and
// fetched again only when the reference moved; a local repository is
// read in place.
type History struct {
	s    *Source
	repo *git.Repository
	tip  string
}

// HistoryDepth bounds how many commits of a remote reference's history
// are fetched (into memory): a revision older than that is not in it.
const HistoryDepth = 500

// NewHistory starts the reference's history; the first IsAncestor fetches
// it.
func (s *Source) NewHistory() *History { return &History{s: s} }

// Update fetches the history up to tip, when it is not there yet.
func (h *History) Update(ctx context.Context, tip string) error {
	if h.repo != nil && h.tip == tip {
		return nil
	}
	ctx, cancel := h.s.bounded(ctx, "fetching the fleet's history")
	defer cancel()
	if dir, ok := localDir(h.s.opts.URL); ok {
		repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true, EnableDotGitCommonDir: true})
		if err != nil {
			return err
		}
		h.repo, h.tip = repo, tip
		return nil
	}
	if h.repo == nil {
		repo, err := MemoryRepository(h.s.opts.URL)
		if err != nil {
			return err
		}
		h.repo = repo
	}
	err := h.repo.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", Auth: h.s.auth, Tags: git.NoTags, Depth: HistoryDepth,
		RefSpecs: []config.RefSpec{config.RefSpec("+" + h.s.ref().String() + ":refs/remotes/origin/tip")}})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return h.s.explain(timedOut(ctx, err))
	}
	h.tip = tip
	return nil
}

// IsAncestor reports whether revision a is revision b or one of its
// ancestors. A revision the history does not have is an error.
func (h *History) IsAncestor(a, b string) (bool, error) {
	if h.repo == nil {
		return false, errors.New("the history is not fetched")
	}
	if a == b {
		return true, nil
	}
	ca, err := h.repo.CommitObject(plumbing.NewHash(a))
	if err != nil {
		return false, fmt.Errorf("revision %s: %w", gitrev.Short(a), err)
	}
	cb, err := h.repo.CommitObject(plumbing.NewHash(b))
	if err != nil {
		return false, fmt.Errorf("revision %s: %w", gitrev.Short(b), err)
	}
	return ca.IsAncestor(cb)
}

// localDir is the folder of a local repository URL (a path, or file://).
func localDir(url string) (string, bool) {
	dir := strings.TrimPrefix(url, "file://")
	return dir, isDir(dir)
}
