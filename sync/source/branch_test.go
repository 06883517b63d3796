package source_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// TestPushLeased: the branch writer's compare-and-swap on a real bare
// repository. A first push creates the branch; a push leased on the tip
// replaces it; a push leased on a tip that moved is refused with
// ErrLeaseLost, retryable, and the branch keeps the other writer's commit.
func TestPushLeased(t *testing.T) {
	repo := gittest.New(t)
	ref := plumbing.NewBranchReferenceName("flotilla/status/c1")
	who := object.Signature{Name: "flotilla", Email: "flotilla@flotilla.dev", When: time.Unix(1, 0)}
	write := func(content string, parent, lease plumbing.Hash) (plumbing.Hash, error) {
		t.Helper()
		mem, err := source.MemoryRepository(repo.URL)
		if err != nil {
			t.Fatal(err)
		}
		var parents []plumbing.Hash
		if !parent.IsZero() {
			// The parent must be at hand for the push to know what to send.
			if err := mem.FetchContext(context.Background(), fetchBranch(ref)); err != nil {
				t.Fatal(err)
			}
			parents = []plumbing.Hash{parent}
		}
		h, err := source.CommitFiles(mem.Storer, map[string][]byte{"clusters/c1.yaml": []byte(content)}, parents, content, who)
		if err != nil {
			t.Fatal(err)
		}
		if err := mem.Storer.SetReference(plumbing.NewHashReference(ref, h)); err != nil {
			t.Fatal(err)
		}
		return h, source.PushLeased(context.Background(), mem, "origin", nil, ref, lease)
	}
	first, err := write("one", plumbing.ZeroHash, plumbing.ZeroHash)
	if err != nil {
		t.Fatal(err)
	}
	// Creating it again (lease zero: "must not exist") is refused.
	if _, err := write("other first", plumbing.ZeroHash, plumbing.ZeroHash); !errors.Is(err, source.ErrLeaseLost) {
		t.Fatalf("a second first commit: %v, want the lease lost", err)
	}
	second, err := write("two", first, first)
	if err != nil {
		t.Fatal(err)
	}
	_, err = write("three", first, first) // leased on a tip that moved
	if !errors.Is(err, source.ErrLeaseLost) || !source.Retryable(err) {
		t.Fatalf("a stale lease: %v (lease lost %t, retryable %t)", err, errors.Is(err, source.ErrLeaseLost), source.Retryable(err))
	}
	if tip := strings.TrimSpace(gittest.Git(t, repo.Bare, "rev-parse", ref.String())); tip != second.String() {
		t.Errorf("the branch is at %s, want the second writer's %s", tip, second)
	}
	if files := gittest.Git(t, repo.Bare, "ls-tree", "-r", "--name-only", ref.String()); strings.TrimSpace(files) != "clusters/c1.yaml" {
		t.Errorf("the commit holds %q", files)
	}
}

// TestRetry: attempts go on while the error is retryable and not stopped,
// end at once on anything else, and an attempt past its own timeout ends
// them with the timeout as cause.
func TestRetry(t *testing.T) {
	ctx := context.Background()
	lost := &source.GitError{Op: "push", Err: source.ErrLeaseLost}
	tries := 0
	err := source.Retry(ctx, source.RetryOptions{Attempts: 3}, func(context.Context) error { tries++; return lost })
	if tries != 3 || !errors.Is(err, source.ErrLeaseLost) {
		t.Errorf("retryable: %d tries, %v; want 3", tries, err)
	}
	tries = 0
	err = source.Retry(ctx, source.RetryOptions{Attempts: 3}, func(context.Context) error {
		tries++
		return &source.GitError{Op: "fetch", Err: transport.ErrAuthenticationRequired}
	})
	if tries != 1 || err == nil {
		t.Errorf("refused credentials: %d tries, %v; want 1", tries, err)
	}
	tries = 0
	stop := errors.New("in the way")
	_ = source.Retry(ctx, source.RetryOptions{Attempts: 3, Stop: func(err error) bool { return errors.Is(err, stop) }},
		func(context.Context) error { tries++; return &source.GitError{Op: "push", Err: stop} })
	if tries != 1 {
		t.Errorf("stopped: %d tries, want 1", tries)
	}
	tries = 0
	err = source.Retry(ctx, source.RetryOptions{Attempts: 3, Timeout: 10 * time.Millisecond}, func(ctx context.Context) error {
		tries++
		<-ctx.Done()
		return &source.GitError{Op: "fetch", Err: ctx.Err()}
	})
	if tries != 1 || err == nil || !strings.Contains(err.Error(), "no answer from the remote within 10ms") {
		t.Errorf("timed out: %d tries, %v", tries, err)
	}
	tries = 0
	if err := source.Retry(ctx, source.RetryOptions{Attempts: 3, Backoff: time.Millisecond}, func(context.Context) error {
		tries++
		if tries < 2 {
			return lost
		}
		return nil
	}); err != nil || tries != 2 {
		t.Errorf("second attempt succeeds: %d tries, %v", tries, err)
	}
}

func fetchBranch(ref plumbing.ReferenceName) *git.FetchOptions {
	return &git.FetchOptions{RemoteName: "origin", Tags: git.NoTags,
		RefSpecs: []config.RefSpec{config.RefSpec("+" + ref.String() + ":refs/remotes/origin/" + ref.Short())}}
}
