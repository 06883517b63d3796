package report

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"
	"sigs.k8s.io/yaml"
)

// DefaultBranch is the status branch when none is configured.
const DefaultBranch = "flotilla/status"

// Options configure a Reporter.
type Options struct {
	// URL of the repository the status branch lives in (the fleet
	// repository or another one).
	URL    string
	Branch string
	Auth   transport.AuthMethod
	// Heartbeat commits an unchanged status this often, so a silent
	// cluster can be told from a healthy one. Default 10 minutes.
	Heartbeat time.Duration
	// Attempts bounds the retries of a rejected push. Default 20.
	Attempts int
}

// Reporter writes one cluster's status file.
type Reporter struct {
	opts Options
	// last is what was last pushed, without its time; lastPush when.
	last     []byte
	lastPush time.Time
	attempts int // pushes the last Publish needed
}

// Attempts is how many pushes the last Publish needed (1 when nobody else
// pushed meanwhile).
func (r *Reporter) Attempts() int { return r.attempts }

// New returns a Reporter.
func New(opts Options) (*Reporter, error) {
	if opts.URL == "" {
		return nil, errors.New("a status repository URL is required")
	}
	if opts.Branch == "" {
		opts.Branch = DefaultBranch
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 10 * time.Minute
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 20
	}
	return &Reporter{opts: opts}, nil
}

// Path is the status file of a cluster on the branch.
func Path(cluster string) string { return "clusters/" + cluster + ".yaml" }

// Publish commits st when it differs from what was last pushed, or when
// the heartbeat is due, and pushes it. It reports whether it pushed. A
// failure never blocks applying: the caller publishes again next pass.
func (r *Reporter) Publish(ctx context.Context, st *Status, now time.Time) (bool, error) {
	st.APIVersion, st.Kind = APIVersion, Kind
	st.Cluster = st.Cluster.Normalized() // empty lists, not nulls (#Status)
	content, err := encode(st, time.Time{})
	if err != nil {
		return false, err
	}
	if bytes.Equal(content, r.last) && now.Sub(r.lastPush) < r.opts.Heartbeat {
		return false, nil
	}
	data, err := encode(st, now)
	if err != nil {
		return false, err
	}
	msg := fmt.Sprintf("status(%s): %s at %s", st.Cluster.Name, st.Phase, short(st.AppliedRevision))
	if err := r.push(ctx, Path(st.Cluster.Name), data, msg); err != nil {
		return false, err
	}
	r.last, r.lastPush = content, now
	return true, nil
}

// encode is the file's YAML with the report time set.
func encode(st *Status, at time.Time) ([]byte, error) {
	c := *st
	c.ReportedAt = at
	return yaml.Marshal(c)
}

// push commits one file on the tip of the branch and pushes, retrying on
// the new tip (with back-off and jitter) when another writer got there
// first. The branch is created when missing.
func (r *Reporter) push(ctx context.Context, path string, data []byte, msg string) error {
	var err error
	for attempt := 0; attempt < r.opts.Attempts; attempt++ {
		if attempt > 0 {
			backoff := time.Duration(min(1<<attempt, 64)) * 25 * time.Millisecond
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff/2 + time.Duration(rand.Int64N(int64(backoff)))):
			}
		}
		r.attempts = attempt + 1
		err = r.tryPush(ctx, path, data, msg)
		if err == nil || !retryable(err) {
			return err
		}
	}
	return fmt.Errorf("status push kept being rejected after %d attempts: %w", r.opts.Attempts, err)
}

// tryPush clones the branch tip in memory, writes the file, commits and
// pushes once.
func (r *Reporter) tryPush(ctx context.Context, path string, data []byte, msg string) error {
	ref := plumbing.NewBranchReferenceName(r.opts.Branch)
	fs := memfs.New()
	repo, err := git.CloneContext(ctx, memory.NewStorage(), fs, &git.CloneOptions{
		URL: r.opts.URL, Auth: r.opts.Auth, ReferenceName: ref, SingleBranch: true, Depth: 1, Tags: git.NoTags,
	})
	var parents []plumbing.Hash
	switch {
	case err == nil:
		head, err := repo.Head()
		if err != nil {
			return err
		}
		parents = []plumbing.Hash{head.Hash()}
	case isMissingBranch(err):
		// First report to this repository: start the branch.
		fs = memfs.New()
		if repo, err = git.Init(memory.NewStorage(), fs); err != nil {
			return err
		}
		if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{r.opts.URL}}); err != nil {
			return err
		}
	default:
		return fmt.Errorf("clone: %w", err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		return err
	}
	if err := fs.MkdirAll("clusters", 0o755); err != nil {
		return err
	}
	f, err := fs.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if _, err := wt.Add(path); err != nil {
		return err
	}
	who := &object.Signature{Name: "flotilla", Email: "flotilla@flotilla.dev", When: time.Now()}
	hash, err := wt.Commit(msg, &git.CommitOptions{Author: who, Committer: who, Parents: parents, AllowEmptyCommits: false})
	if err != nil {
		if errors.Is(err, git.ErrEmptyCommit) {
			return nil // the branch already says this
		}
		return err
	}
	spec := config.RefSpec(hash.String() + ":" + ref.String())
	if err := repo.PushContext(ctx, &git.PushOptions{RemoteName: "origin", Auth: r.opts.Auth, RefSpecs: []config.RefSpec{spec}}); err != nil {
		return &pushError{err}
	}
	return nil
}

// pushError is a failed push: the branch moved under us, most often.
type pushError struct{ err error }

func (e *pushError) Error() string { return "push: " + e.err.Error() }
func (e *pushError) Unwrap() error { return e.err }

// retryable reports a failed push worth trying again on the new tip. When
// another cluster pushed first, go-git says so in many ways (a
// non-fast-forward update, "object not found" for a tip the shallow clone
// lacks, a server's rejection, a malformed report from some servers), so
// every push failure is retried — a push is only our file on the current
// tip — except refused credentials and an ended context.
func retryable(err error) bool {
	var pe *pushError
	return errors.As(err, &pe) &&
		!errors.Is(err, transport.ErrAuthenticationRequired) &&
		!errors.Is(err, transport.ErrAuthorizationFailed) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// isMissingBranch reports a clone that failed because the branch does not
// exist yet (or the repository is empty).
func isMissingBranch(err error) bool {
	return errors.Is(err, plumbing.ErrReferenceNotFound) || errors.Is(err, transport.ErrEmptyRemoteRepository) ||
		errors.Is(err, git.NoMatchingRefSpecError{})
}

func short(rev string) string {
	if len(rev) > 7 {
		return rev[:7]
	}
	if rev == "" {
		return "no revision"
	}
	return rev
}
