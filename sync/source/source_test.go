package source_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// TestHeadAndFetch follows a branch of a bare repository over file://.
func TestHeadAndFetch(t *testing.T) {
	repo := gittest.New(t)
	rev1 := repo.Commit(map[string]string{"fleet.cue": "package fleet\n"})
	src, err := source.New(source.Options{URL: repo.URL, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	head, err := src.Head(context.Background())
	if err != nil || head != rev1 {
		t.Fatalf("head %s, %v; want %s", head, err, rev1)
	}
	co, err := src.Fetch(context.Background(), head)
	if err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(co.Dir, "fleet.cue")); err != nil || string(data) != "package fleet\n" {
		t.Fatalf("checkout: %q %v", data, err)
	}
	// The same revision again is the folder already there.
	again, err := src.Fetch(context.Background(), head)
	if err != nil || again.Dir != co.Dir {
		t.Fatalf("refetch: %v %s", err, again.Dir)
	}

	rev2 := repo.Commit(map[string]string{"fleet.cue": "package fleet\n// two\n"})
	if head, _ = src.Head(context.Background()); head != rev2 {
		t.Fatalf("head after a push %s, want %s", head, rev2)
	}
	co2, err := src.Fetch(context.Background(), rev2)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Prune(rev2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(co.Dir); !os.IsNotExist(err) {
		t.Error("pruned checkout still there")
	}
	if _, err := os.Stat(co2.Dir); err != nil {
		t.Error("kept checkout gone")
	}

	// Asking for a revision that is no longer the tip is refused.
	repo.Commit(map[string]string{"other.txt": "x"})
	if _, err := src.Fetch(context.Background(), rev1); err == nil || !strings.Contains(err.Error(), "moved while fetching") {
		t.Errorf("stale revision: %v", err)
	}
}

// TestPinnedCommit checks out one commit, older than the tip.
func TestPinnedCommit(t *testing.T) {
	repo := gittest.New(t)
	old := repo.Commit(map[string]string{"fleet.cue": "package fleet\n// old\n"})
	repo.Commit(map[string]string{"fleet.cue": "package fleet\n// new\n"})
	src, err := source.New(source.Options{URL: repo.URL, Commit: old, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	head, err := src.Head(context.Background())
	if err != nil || head != old {
		t.Fatalf("head %s %v", head, err)
	}
	co, err := src.Fetch(context.Background(), head)
	if err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(co.Dir, "fleet.cue")); !strings.Contains(string(data), "old") {
		t.Errorf("checked out %q", data)
	}
	if _, err := source.New(source.Options{URL: repo.URL, Commit: "abc"}); err == nil {
		t.Error("a short commit was accepted")
	}
}

// TestMissingReference names the branch the remote lacks.
func TestMissingReference(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": "package fleet\n"})
	src, err := source.New(source.Options{URL: repo.URL, Branch: "release"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Head(context.Background()); !errors.Is(err, source.ErrRefNotFound) || !strings.Contains(err.Error(), "release") {
		t.Errorf("error %v", err)
	}
}

// TestHTTPBasicAuth follows a repository on gittestserver over HTTP with
// basic auth: the right password from a file works, a wrong one is
// refused with ErrAuth and no password in the message.
func TestHTTPBasicAuth(t *testing.T) {
	url := gittest.HTTPServer(t, "fleet-reader", "s3cret-pass")
	creds := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(creds, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	good, err := source.New(source.Options{URL: url, Auth: source.Auth{Username: "fleet-reader", PasswordFile: write("good", "s3cret-pass\n")}})
	if err != nil {
		t.Fatal(err)
	}
	head, err := good.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := good.Fetch(context.Background(), head); err != nil {
		t.Fatal(err)
	}

	for name, auth := range map[string]source.Auth{
		"wrong password": {Username: "fleet-reader", PasswordFile: write("bad", "nope")},
		"no credentials": {},
	} {
		bad, err := source.New(source.Options{URL: url, Auth: auth})
		if err != nil {
			t.Fatal(err)
		}
		_, err = bad.Head(context.Background())
		if !errors.Is(err, source.ErrAuth) {
			t.Errorf("%s: error %v, want ErrAuth", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "nope") {
			t.Errorf("%s: the password is in the error", name)
		}
	}
}

// TestSSHNeedsKnownHosts checks that SSH never silently accepts any host
// key.
func TestSSHNeedsKnownHosts(t *testing.T) {
	key, _ := sshClientKey(t)
	_, err := source.New(source.Options{URL: "ssh://git@example.com/fleet.git", Auth: source.Auth{SSHKeyFile: key}})
	if err == nil || !strings.Contains(err.Error(), "known_hosts") {
		t.Errorf("error %v, want one asking for known_hosts", err)
	}
}

// TestSilentRemoteTimesOut: a server that accepts connections and never
// answers fails the exchange at the source's Timeout, saying so, instead
// of hanging the agent's pass.
func TestSilentRemoteTimesOut(t *testing.T) {
	src, err := source.New(source.Options{URL: gittest.SilentServer(t), Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = src.Head(context.Background())
	if err == nil || !strings.Contains(err.Error(), "asking for the tip: no answer from the remote within 1s") {
		t.Errorf("got %v", err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("took %s", took)
	}
}

// TestFetchRevision checks out an older revision of the branch (what an
// agent keeps applied while the tip waits in a rollout), reuses it from
// the cache, and refuses a commit that is not in the branch's history.
func TestFetchRevision(t *testing.T) {
	repo := gittest.New(t)
	old := repo.Commit(map[string]string{"fleet.cue": "package fleet // old\n"})
	repo.Commit(map[string]string{"fleet.cue": "package fleet // new\n"})
	src, err := source.New(source.Options{URL: repo.URL, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	co, err := src.FetchRevision(context.Background(), old)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(co.Dir, "fleet.cue"))
	if err != nil || !strings.Contains(string(data), "// old") || co.Revision != old {
		t.Fatalf("checkout of %s: %q, %v", old, data, err)
	}
	marker := filepath.Join(co.Dir, "marker")
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if again, err := src.FetchRevision(context.Background(), old); err != nil || again.Dir != co.Dir {
		t.Errorf("fetching again: %+v, %v", again, err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the cached checkout was not reused: %v", err)
	}
	missing := strings.Repeat("ab", 20)
	if _, err := src.FetchRevision(context.Background(), missing); err == nil || !strings.Contains(err.Error(), "not in the history of main") {
		t.Errorf("a commit not in the history: %v", err)
	}
}
