// Package source fetches the fleet repository with go-git: it asks the
// remote for the branch tip without fetching (so an unchanged remote costs
// one small request), and checks a revision out shallowly into a folder of
// its own, with HTTPS basic or token auth and SSH keys with known_hosts
// checking, credentials read from files.
package source

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"
)

// Errors callers branch on.
var (
	// ErrRefNotFound: the remote has no such branch or tag.
	ErrRefNotFound = errors.New("reference not found on the remote")
	// ErrAuth: the remote refused the credentials (or asked for some).
	ErrAuth = errors.New("the git remote refused authentication")
)

// Options say what to fetch and how.
type Options struct {
	// URL of the fleet repository: https://, http://, ssh://, git@host:path
	// or file://.
	URL string
	// Branch to follow; default "main". Tag, when set, is followed instead;
	// Commit, when set, pins one revision (nothing is followed).
	Branch string
	Tag    string
	Commit string
	// CacheDir keeps the checkouts, one folder per revision; default a new
	// temporary folder.
	CacheDir string
	// Auth are the credentials, if the remote needs any.
	Auth Auth
	// Timeout bounds each exchange with the remote (asking for the tip,
	// fetching a revision); default DefaultTimeout. A server that accepts
	// the connection and never answers fails the pass instead of hanging
	// the agent.
	Timeout time.Duration
	// Watch are other branches whose tips Head notes from the same ref
	// advertisement (Seen): the agent learns whether the approvals branch
	// moved with no request of its own.
	Watch []string
}

// DefaultTimeout bounds an exchange with a Git remote.
const DefaultTimeout = 2 * time.Minute

// Source follows one branch or tag of a remote repository.
type Source struct {
	opts Options
	auth transport.AuthMethod
	// seen are the Watch branches' tips at the last Head.
	mu   sync.Mutex
	seen map[string]string
	// oci, for an oci:// URL, follows a fleet artifact instead.
	oci *ociSource
	// storeMu serialises the object store's fetches; last is the tip
	// folder it last wrote (store.go).
	storeMu sync.Mutex
	last    *written
}

// New validates the options and reads the credentials.
func New(opts Options) (*Source, error) {
	if opts.URL == "" {
		return nil, errors.New("a repository URL is required")
	}
	if opts.Commit != "" && !plumbing.IsHash(opts.Commit) {
		return nil, fmt.Errorf("commit %q is not a full 40-character hash", opts.Commit)
	}
	if opts.Branch == "" && opts.Tag == "" {
		opts.Branch = "main"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.CacheDir == "" {
		dir, err := os.MkdirTemp("", "flotilla-source-")
		if err != nil {
			return nil, err
		}
		opts.CacheDir = dir
	}
	if IsOCI(opts.URL) {
		oci, err := newOCI(opts)
		if err != nil {
			return nil, err
		}
		return &Source{opts: opts, oci: oci}, nil
	}
	auth, err := opts.Auth.Method(opts.URL)
	if err != nil {
		return nil, err
	}
	return &Source{opts: opts, auth: auth}, nil
}

// bounded limits one exchange with the remote to the source's Timeout.
func (s *Source) bounded(ctx context.Context, what string) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, s.opts.Timeout, fmt.Errorf("%s: no answer from the remote within %s", what, s.opts.Timeout))
}

// timedOut replaces an error by the exchange's bound when that is what
// ended it ("context deadline exceeded" says nothing of what waited).
func timedOut(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		if cause := context.Cause(ctx); cause != nil {
			return fmt.Errorf("%w (%w)", cause, err)
		}
	}
	return err
}

// ref is the reference the source follows.
func (s *Source) ref() plumbing.ReferenceName {
	if s.opts.Tag != "" {
		return plumbing.NewTagReferenceName(s.opts.Tag)
	}
	return plumbing.NewBranchReferenceName(s.opts.Branch)
}

// Head asks the remote which commit the followed reference points at,
// without fetching anything else.
func (s *Source) Head(ctx context.Context) (string, error) {
	if s.opts.Commit != "" {
		return s.opts.Commit, nil
	}
	ctx, cancel := s.bounded(ctx, "asking for the tip")
	defer cancel()
	if s.oci != nil {
		rev, err := s.oci.head(ctx)
		return rev, timedOut(ctx, err)
	}
	remote := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{s.opts.URL}})
	refs, err := remote.ListContext(ctx, &git.ListOptions{Auth: s.auth, PeelingOption: git.AppendPeeled})
	if err != nil {
		return "", s.explain(timedOut(ctx, err))
	}
	want := s.ref()
	var hash plumbing.Hash
	s.noteWatched(refs)
	for _, r := range refs {
		switch r.Name() {
		case want:
			if hash.IsZero() {
				hash = r.Hash()
			}
		case want + "^{}": // an annotated tag, peeled to its commit
			hash = r.Hash()
		}
	}
	if hash.IsZero() {
		return "", fmt.Errorf("%w: %s has no %s", ErrRefNotFound, RedactURL(s.opts.URL), want.Short())
	}
	return hash.String(), nil
}

// noteWatched keeps the tips of the Watch branches an advertisement has.
func (s *Source) noteWatched(refs []*plumbing.Reference) {
	if len(s.opts.Watch) == 0 {
		return
	}
	seen := map[string]string{}
	for _, r := range refs {
		if r.Name().IsBranch() && slices.Contains(s.opts.Watch, r.Name().Short()) {
			seen[r.Name().Short()] = r.Hash().String()
		}
	}
	s.mu.Lock()
	s.seen = seen
	s.mu.Unlock()
}

// Seen is the tip of a Watch branch at the last Head, and whether the
// repository had the branch then (false too before any Head).
func (s *Source) Seen(branch string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tip, ok := s.seen[branch]
	return tip, ok
}

// HeadTime is when the followed reference's tip (hash, from Head) was
// committed: a local repository is read in place; a remote's tip is
// fetched one commit deep into memory (its tree comes with it).
func (s *Source) HeadTime(ctx context.Context, hash string) (time.Time, error) {
	if s.oci != nil {
		s.oci.mu.Lock()
		defer s.oci.mu.Unlock()
		if s.oci.meta.revision != hash {
			return time.Time{}, fmt.Errorf("the tip %s moved while it was read", gitrev.Short(hash))
		}
		return s.oci.meta.committed, nil
	}
	ctx, cancel := s.bounded(ctx, "reading the tip's commit")
	defer cancel()
	// A local repository (a path, or a file:// URL as commands make of
	// one) is read in place.
	if dir, ok := localDir(s.opts.URL); ok {
		repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true, EnableDotGitCommonDir: true})
		if err == nil {
			if c, err := repo.CommitObject(plumbing.NewHash(hash)); err == nil {
				return c.Committer.When, nil
			}
		}
	}
	repo, err := MemoryRepository(s.opts.URL)
	if err != nil {
		return time.Time{}, err
	}
	err = repo.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", Auth: s.auth, Depth: 1, Tags: git.NoTags,
		RefSpecs: []config.RefSpec{config.RefSpec("+" + s.ref().String() + ":refs/remotes/origin/tip")}})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return time.Time{}, s.explain(timedOut(ctx, err))
	}
	c, err := repo.CommitObject(plumbing.NewHash(hash))
	if err != nil {
		return time.Time{}, fmt.Errorf("the tip %s moved while it was read: %w", gitrev.Short(hash), err)
	}
	return c.Committer.When, nil
}

// isDir says whether path is a folder.
func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// Checkout is one revision of the repository on disk.
type Checkout struct {
	// Dir holds the files of the revision.
	Dir      string
	Revision string
	// Repository is the opened repository, for signature checks; nil for
	// a fleet pulled from an OCI registry, whose commit's time and message
	// are Committed and Message.
	Repository *git.Repository
	Committed  time.Time
	Message    string
	// Commit is the commit object an OCI artifact carries (its files were
	// checked against its tree), Signature the publisher's signature of
	// it: Verifier.Verify checks them.
	Commit    *object.Commit
	RawCommit []byte
	Signature string
}

// Fetch checks the followed reference's tip out into a folder of the
// cache named after the revision, and returns it; a revision already
// there is reused. The tip is fetched into the cache's object store
// (shallow at its first tip), which brings only what changed since the
// last tip, and its folder
// shares the files it did not change with the last tip's (store.go). The
// revision must be the reference's tip (from Head): it is checked after
// the fetch, so a push in between is noticed. A pinned commit is cloned.
func (s *Source) Fetch(ctx context.Context, revision string) (*Checkout, error) {
	if s.oci != nil {
		return s.checkoutOCI(ctx, revision)
	}
	if s.opts.Commit != "" {
		return s.checkout(ctx, revision, func(ctx context.Context, tmp string) (*git.Repository, error) {
			if _, err := s.clone(ctx, tmp); err != nil {
				return nil, s.explain(timedOut(ctx, err))
			}
			return nil, nil
		})
	}
	s.storeMu.Lock()
	defer s.storeMu.Unlock()
	return s.checkout(ctx, revision, func(ctx context.Context, tmp string) (*git.Repository, error) {
		repo, err := s.storeTip(ctx, revision, tmp, false)
		if errors.Is(err, plumbing.ErrObjectNotFound) {
			// A tip older than the store's first (a force-push back): the
			// remote, told the store has a descendant, sent nothing. The
			// store starts again from this tip.
			if err := os.RemoveAll(tmp); err != nil {
				return nil, err
			}
			repo, err = s.storeTip(ctx, revision, tmp, true)
		}
		return repo, err
	})
}

// storeTip fetches the tip into the store (afresh: a new one) and writes
// its folder tmp, linking what the last tip's folder shares.
func (s *Source) storeTip(ctx context.Context, revision, tmp string, afresh bool) (*git.Repository, error) {
	repo, err := s.fetchTip(ctx, revision, afresh)
	if err != nil {
		return nil, err
	}
	commit, err := repo.CommitObject(plumbing.NewHash(revision))
	if err != nil {
		return nil, err
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return nil, err
	}
	w, err := writeTree(commit, "", tmp, s.last)
	if err != nil {
		return nil, err
	}
	w.dir = strings.TrimSuffix(tmp, ".partial") // renamed so once complete
	s.last = w
	return repo, nil
}

// FetchRevision checks out an older revision of the followed reference
// (one an agent keeps applied while the tip waits in a rollout) into the
// cache, reusing it when there. It clones the reference's history to find
// the commit: a revision no longer in it (a force-push) is an error.
func (s *Source) FetchRevision(ctx context.Context, revision string) (*Checkout, error) {
	if s.oci != nil {
		return s.checkoutOCI(ctx, revision)
	}
	return s.checkout(ctx, revision, func(ctx context.Context, tmp string) (*git.Repository, error) {
		repo, err := git.PlainCloneContext(ctx, tmp, false, &git.CloneOptions{
			URL: s.opts.URL, Auth: s.auth, ReferenceName: s.ref(), SingleBranch: true, Tags: git.NoTags, NoCheckout: true})
		if err == nil {
			var wt *git.Worktree
			if wt, err = repo.Worktree(); err == nil {
				if err = wt.Checkout(&git.CheckoutOptions{Hash: plumbing.NewHash(revision)}); err != nil {
					err = fmt.Errorf("revision %s is not in the history of %s: %w", gitrev.Short(revision), s.ref().Short(), err)
				}
			}
		}
		if err != nil {
			return nil, s.explain(timedOut(ctx, err))
		}
		return nil, nil
	})
}

// checkout returns the cache's folder of a revision, made by get in a
// temporary folder (bounded by the Git timeout) and renamed into place
// once complete; a folder already holding the revision is reused. get
// returns the repository holding the revision, or nil when it cloned it
// into the folder.
func (s *Source) checkout(ctx context.Context, revision string, get func(ctx context.Context, tmp string) (*git.Repository, error)) (*Checkout, error) {
	dir := filepath.Join(s.opts.CacheDir, revision)
	if co := s.cached(dir, revision); co != nil {
		return co, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	tmp := dir + ".partial"
	_ = os.RemoveAll(tmp)
	ctx, cancel := s.bounded(ctx, "fetching "+revision)
	defer cancel()
	repo, err := get(ctx, tmp)
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	if repo == nil {
		if repo, err = git.PlainOpen(dir); err != nil {
			return nil, err
		}
	}
	return &Checkout{Dir: dir, Revision: revision, Repository: repo}, nil
}

// cached is the cache's folder of a revision when complete: a clone at
// the revision, or a folder the store wrote (renamed into place only once
// complete) whose commit the store holds.
func (s *Source) cached(dir, revision string) *Checkout {
	if repo, err := git.PlainOpen(dir); err == nil {
		if head, err := repo.Head(); err == nil && head.Hash().String() == revision {
			return &Checkout{Dir: dir, Revision: revision, Repository: repo}
		}
		return nil
	}
	if !isDir(dir) {
		return nil
	}
	store, err := git.PlainOpen(filepath.Join(s.opts.CacheDir, storeDir))
	if err != nil {
		return nil
	}
	if _, err := store.CommitObject(plumbing.NewHash(revision)); err != nil {
		return nil
	}
	return &Checkout{Dir: dir, Revision: revision, Repository: store}
}

// clone clones the followed reference shallowly, or for a pinned commit
// the whole repository, checked out at the commit.
func (s *Source) clone(ctx context.Context, dir string) (*git.Repository, error) {
	if s.opts.Commit == "" {
		return git.PlainCloneContext(ctx, dir, false, &git.CloneOptions{
			URL:           s.opts.URL,
			Auth:          s.auth,
			ReferenceName: s.ref(),
			SingleBranch:  true,
			Depth:         1,
			Tags:          git.NoTags,
		})
	}
	repo, err := git.PlainCloneContext(ctx, dir, false, &git.CloneOptions{URL: s.opts.URL, Auth: s.auth, NoCheckout: true})
	if err != nil {
		return nil, err
	}
	wt, err := repo.Worktree()
	if err != nil {
		return nil, err
	}
	if err := wt.Checkout(&git.CheckoutOptions{Hash: plumbing.NewHash(s.opts.Commit)}); err != nil {
		return nil, fmt.Errorf("commit %s: %w", gitrev.Short(s.opts.Commit), err)
	}
	return repo, nil
}

// Prune removes the cached checkouts except the given revisions.
func (s *Source) Prune(keep ...string) error {
	entries, err := os.ReadDir(s.opts.CacheDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if e.Name() == storeDir {
			continue
		}
		partial := strings.HasSuffix(e.Name(), ".partial")
		name := strings.TrimSuffix(strings.TrimSuffix(e.Name(), ".partial"), ".oci.json")
		if !slices.Contains(keep, name) || partial {
			errs = append(errs, os.RemoveAll(filepath.Join(s.opts.CacheDir, e.Name())))
		}
	}
	return errors.Join(errs...)
}

// explain turns go-git's errors into ones a user can act on, without the
// credentials.
func (s *Source) explain(err error) error {
	url := RedactURL(s.opts.URL)
	switch {
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed):
		err = fmt.Errorf("%w: %s: %w", ErrAuth, url, err)
	case errors.Is(err, plumbing.ErrReferenceNotFound), errors.Is(err, git.NoMatchingRefSpecError{}):
		err = fmt.Errorf("%w: %s has no %s", ErrRefNotFound, url, s.ref().Short())
	default:
		err = fmt.Errorf("%s: %w", url, err)
	}
	return RedactError(err, s.opts.URL)
}
