package source_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fluxcd/pkg/gittestserver"
	"golang.org/x/crypto/ssh"

	"github.com/flotilla-gitops/flotilla/sync/source"
)

// gitRepo is a real bare repository and a working clone that pushes to it,
// driven by the git command line.
type gitRepo struct {
	t      *testing.T
	bare   string
	work   string
	origin string
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.com",
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_SYSTEM=/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func newGitRepo(t *testing.T) *gitRepo {
	t.Helper()
	root := t.TempDir()
	r := &gitRepo{t: t, bare: filepath.Join(root, "fleet.git"), work: filepath.Join(root, "work")}
	git(t, root, "init", "--bare", "-b", "main", r.bare)
	git(t, root, "init", "-b", "main", r.work)
	git(t, r.work, "remote", "add", "origin", r.bare)
	r.origin = "file://" + r.bare
	return r
}

// commit writes files, commits and pushes; it returns the revision.
func (r *gitRepo) commit(files map[string]string) string {
	r.t.Helper()
	for name, content := range files {
		p := filepath.Join(r.work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
	git(r.t, r.work, "add", "-A")
	git(r.t, r.work, "commit", "-m", "change")
	git(r.t, r.work, "push", "origin", "main")
	return git(r.t, r.work, "rev-parse", "HEAD")
}

// TestHeadAndFetch follows a branch of a bare repository over file://.
func TestHeadAndFetch(t *testing.T) {
	repo := newGitRepo(t)
	rev1 := repo.commit(map[string]string{"fleet.cue": "package fleet\n"})
	src, err := source.New(source.Options{URL: repo.origin, CacheDir: t.TempDir()})
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

	rev2 := repo.commit(map[string]string{"fleet.cue": "package fleet\n// two\n"})
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
	repo.commit(map[string]string{"other.txt": "x"})
	if _, err := src.Fetch(context.Background(), rev1); err == nil || !strings.Contains(err.Error(), "moved while fetching") {
		t.Errorf("stale revision: %v", err)
	}
}

// TestMissingReference names the branch the remote lacks.
func TestMissingReference(t *testing.T) {
	repo := newGitRepo(t)
	repo.commit(map[string]string{"fleet.cue": "package fleet\n"})
	src, err := source.New(source.Options{URL: repo.origin, Branch: "release"})
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
	srv, err := gittestserver.NewTempGitServer()
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(srv.Root())
	srv.Auth("fleet-reader", "s3cret-pass")
	if err := srv.StartHTTP(); err != nil {
		t.Fatal(err)
	}
	defer srv.StopHTTP()
	fixture := t.TempDir()
	if err := os.WriteFile(filepath.Join(fixture, "fleet.cue"), []byte("package fleet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := srv.InitRepo(fixture, "main", "fleet.git"); err != nil {
		t.Fatal(err)
	}
	url := srv.HTTPAddress() + "/fleet.git"
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
	_, private, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(private, "")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "id")
	if err := os.WriteFile(key, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = source.New(source.Options{URL: "ssh://git@example.com/fleet.git", Auth: source.Auth{SSHKeyFile: key}})
	if err == nil || !strings.Contains(err.Error(), "known_hosts") {
		t.Errorf("error %v, want one asking for known_hosts", err)
	}
}
