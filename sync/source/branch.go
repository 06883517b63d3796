package source

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"
)

// Branch writing: what the status reporter, the rollout approvals and the
// hydrated branch share. Each builds its own commit (a status file, the
// approvals file, a hydrated tree and its note); the objects are stored,
// the refs pushed under a lease and the attempts retried here, one way.
// Nothing is checked out: commits are built from objects in the
// repository's store (in memory for the status and approvals branches).

// ErrLeaseLost is wrapped when a push is refused because the branch moved
// since the writer read it (another writer pushed first): read the new
// tip, build on it, and try again.
var ErrLeaseLost = errors.New("the branch moved since it was read")

// GitError is a failed fetch or push: Git unreachable, slow, or a lease
// lost. Retryable says which are worth another attempt.
type GitError struct {
	Op  string // "fetch" or "push"
	Err error
}

func (e *GitError) Error() string { return e.Op + ": " + e.Err.Error() }
func (e *GitError) Unwrap() error { return e.Err }

// PushFailed wraps a push's error as a GitError, marking a refused update
// of a ref that moved (go-git and Git servers say it only in words:
// "non-fast-forward", "fetch first", "stale info") with ErrLeaseLost. It
// is the one place those words are read.
func PushFailed(err error) error {
	msg := err.Error()
	if errors.Is(err, git.ErrNonFastForwardUpdate) || strings.Contains(msg, "non-fast-forward") ||
		strings.Contains(msg, "fetch first") || strings.Contains(msg, "stale info") {
		err = fmt.Errorf("%w: %w", ErrLeaseLost, err)
	}
	return &GitError{Op: "push", Err: err}
}

// Retryable reports a failure worth another attempt: a GitError other
// than refused credentials or an ended context. A lease lost is retryable.
func Retryable(err error) bool {
	var ge *GitError
	return errors.As(err, &ge) &&
		!errors.Is(err, transport.ErrAuthenticationRequired) &&
		!errors.Is(err, transport.ErrAuthorizationFailed) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// RetryOptions bound the attempts of a branch write.
type RetryOptions struct {
	// Attempts is the most attempts (at least one).
	Attempts int
	// Timeout bounds each attempt (none when zero).
	Timeout time.Duration
	// Backoff is the wait before the second attempt, doubled for each
	// one after (up to 64 times), jittered by half; zero: no wait.
	Backoff time.Duration
	// Stop, when set, says an error is final even though Retryable says
	// otherwise (a legacy branch in the way).
	Stop func(error) bool
}

// Retry runs attempt until it succeeds, fails with an error that is not
// Retryable, the attempts are spent or ctx ends. An attempt that runs out
// of its Timeout ends the retries, with the timeout as cause: a remote that
// did not answer in time is not asked again at once.
func Retry(ctx context.Context, opts RetryOptions, attempt func(context.Context) error) error {
	var err error
	for i := range max(opts.Attempts, 1) {
		if i > 0 && opts.Backoff > 0 {
			backoff := time.Duration(1<<min(i-1, 6)) * opts.Backoff
			select {
			case <-ctx.Done():
				return errors.Join(err, context.Cause(ctx))
			case <-time.After(backoff/2 + rand.N(backoff)):
			}
		}
		attemptCtx, cancel := ctx, context.CancelFunc(func() {})
		if opts.Timeout > 0 {
			attemptCtx, cancel = context.WithTimeoutCause(ctx, opts.Timeout, fmt.Errorf("no answer from the remote within %s", opts.Timeout))
		}
		err = attempt(attemptCtx)
		if err != nil && attemptCtx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w (%w)", context.Cause(attemptCtx), err)
			cancel()
			return err
		}
		cancel()
		if err == nil || !Retryable(err) || (opts.Stop != nil && opts.Stop(err)) {
			return err
		}
	}
	return err
}

// MemoryRepository is an empty repository in memory whose remote origin
// is url: where a branch writer fetches a tip and builds on it.
func MemoryRepository(url string) (*git.Repository, error) {
	repo, err := git.Init(memory.NewStorage(), nil)
	if err != nil {
		return nil, err
	}
	if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{url}}); err != nil {
		return nil, err
	}
	return repo, nil
}

// PushLeased pushes the local ref to the same ref of remote as a
// compare-and-swap: a new branch (lease zero) is created only if it still
// does not exist; an existing one is replaced only if its tip is still
// lease. A refused swap wraps ErrLeaseLost; every failure is a GitError.
func PushLeased(ctx context.Context, repo *git.Repository, remote string, auth transport.AuthMethod, ref plumbing.ReferenceName, lease plumbing.Hash) error {
	push := &git.PushOptions{RemoteName: remote, Auth: auth,
		RefSpecs: []config.RefSpec{config.RefSpec(ref.String() + ":" + ref.String())}}
	if !lease.IsZero() {
		push.RefSpecs = []config.RefSpec{config.RefSpec("+" + ref.String() + ":" + ref.String())}
		push.ForceWithLease = &git.ForceWithLease{RefName: ref, Hash: lease}
	}
	if err := repo.PushContext(ctx, push); err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return PushFailed(err)
	}
	return nil
}

// StoreBlob stores data as a blob, unless the store has it already.
func StoreBlob(s storer.EncodedObjectStorer, data []byte) (plumbing.Hash, error) {
	h := plumbing.ComputeHash(plumbing.BlobObject, data)
	if s.HasEncodedObject(h) == nil {
		return h, nil
	}
	obj := s.NewEncodedObject()
	obj.SetType(plumbing.BlobObject)
	w, err := obj.Writer()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if _, err := w.Write(data); err != nil {
		return plumbing.ZeroHash, err
	}
	if err := w.Close(); err != nil {
		return plumbing.ZeroHash, err
	}
	return s.SetEncodedObject(obj)
}

// StoreTree stores files (slash-separated path → content) as blobs and
// trees, and returns the root tree.
func StoreTree(s storer.EncodedObjectStorer, files map[string][]byte) (plumbing.Hash, error) {
	hashes := make(map[string]plumbing.Hash, len(files))
	for p, data := range files {
		h, err := StoreBlob(s, data)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		hashes[p] = h
	}
	return StoreTreeOf(s, hashes)
}

// StoreTreeOf stores the trees holding blobs already stored (path → blob)
// and returns the root tree.
func StoreTreeOf(s storer.EncodedObjectStorer, blobs map[string]plumbing.Hash) (plumbing.Hash, error) {
	type dir struct {
		files map[string]plumbing.Hash
		dirs  map[string]*dir
	}
	newDir := func() *dir { return &dir{files: map[string]plumbing.Hash{}, dirs: map[string]*dir{}} }
	root := newDir()
	for p, h := range blobs {
		d := root
		parts := strings.Split(p, "/")
		for _, name := range parts[:len(parts)-1] {
			next, ok := d.dirs[name]
			if !ok {
				next = newDir()
				d.dirs[name] = next
			}
			d = next
		}
		d.files[parts[len(parts)-1]] = h
	}
	var store func(d *dir) (plumbing.Hash, error)
	store = func(d *dir) (plumbing.Hash, error) {
		var entries []object.TreeEntry
		for name, h := range d.files {
			entries = append(entries, object.TreeEntry{Name: name, Mode: filemode.Regular, Hash: h})
		}
		for name, sub := range d.dirs {
			h, err := store(sub)
			if err != nil {
				return plumbing.ZeroHash, err
			}
			entries = append(entries, object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: h})
		}
		sortTreeEntries(entries)
		return StoreObject(s, &object.Tree{Entries: entries})
	}
	return store(root)
}

// sortTreeEntries orders entries as Git does: by name, a folder's name
// compared as if it ended with "/".
func sortTreeEntries(entries []object.TreeEntry) {
	key := func(e object.TreeEntry) string {
		if e.Mode == filemode.Dir {
			return e.Name + "/"
		}
		return e.Name
	}
	sort.Slice(entries, func(i, j int) bool { return key(entries[i]) < key(entries[j]) })
}

// StoreObject encodes a tree or commit into the store.
func StoreObject(s storer.EncodedObjectStorer, o interface {
	Encode(plumbing.EncodedObject) error
}) (plumbing.Hash, error) {
	obj := s.NewEncodedObject()
	if err := o.Encode(obj); err != nil {
		return plumbing.ZeroHash, err
	}
	return s.SetEncodedObject(obj)
}

// CommitFiles stores files as the whole tree of a new commit with the
// given parents, message, author and committer, and returns the commit.
func CommitFiles(s storer.EncodedObjectStorer, files map[string][]byte, parents []plumbing.Hash, message string, who object.Signature) (plumbing.Hash, error) {
	tree, err := StoreTree(s, files)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	return StoreObject(s, &object.Commit{Author: who, Committer: who, Message: message, TreeHash: tree, ParentHashes: parents})
}
