package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/internal/registrytest"
	"github.com/flotilla-gitops/flotilla/sync/source"
	"golang.org/x/crypto/ssh"
)

// TestPublish: `flotilla publish` pushes the checkout's HEAD to a registry
// with authentication, says the commit, the digest and the tags, and a
// source following the tag gets that commit's files; a tree with a
// symbolic link, a missing --to and a folder outside Git are refused
// before anything is pushed.
func TestPublish(t *testing.T) {
	repo := gittest.New(t)
	rev := repo.Commit(map[string]string{"fleet.cue": "package fleet\n", "apps/web/deploy.yaml": "kind: ConfigMap\n"})
	reg := registrytest.Start(t, true)
	pw := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(pw, []byte(reg.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	to := "oci://" + reg.Host + "/platform/fleet:main"
	code, out, errOut := cli(t, "publish", repo.Work, "--to", to, "--username", reg.Username, "--password-file", pw)
	if code != exitOK || !strings.Contains(out, "published "+rev+" (2 files,") || !strings.Contains(out, "as sha256:") ||
		!strings.Contains(out, "tags: main, "+rev) {
		t.Fatalf("publish: exit %d\n%s%s", code, out, errOut)
	}
	src, err := source.New(source.Options{URL: to, Auth: source.Auth{Username: reg.Username, PasswordFile: pw}, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if head, err := src.Head(t.Context()); err != nil || head != rev {
		t.Fatalf("head %s %v", head, err)
	}
	co, err := src.Fetch(t.Context(), rev)
	if err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(co.Dir, "apps/web/deploy.yaml")); err != nil || string(data) != "kind: ConfigMap\n" {
		t.Errorf("a published file: %q %v", data, err)
	}

	// --sign-key: the publisher's signature, which an agent trusting the
	// key accepts for the unsigned commit.
	signer, keyFile, pubFile := gittest.NewSSHKeyFile(t)
	signed := "oci://" + reg.Host + "/platform/fleet:signed"
	code, out, errOut = cli(t, "publish", repo.Work, "--to", signed, "--username", reg.Username, "--password-file", pw, "--sign-key", keyFile)
	if code != exitOK || !strings.Contains(out, "signed by "+ssh.FingerprintSHA256(signer.PublicKey())) {
		t.Fatalf("publish --sign-key: exit %d\n%s%s", code, out, errOut)
	}
	src, err = source.New(source.Options{URL: signed, Auth: source.Auth{Username: reg.Username, PasswordFile: pw}, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Head(t.Context()); err != nil {
		t.Fatal(err)
	}
	if co, err = src.Fetch(t.Context(), rev); err != nil {
		t.Fatal(err)
	}
	v, err := source.NewVerifier(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(co); err != nil {
		t.Errorf("the publisher's signature does not verify: %v", err)
	}

	if err := os.Symlink("/etc/passwd", filepath.Join(repo.Work, "link")); err != nil {
		t.Fatal(err)
	}
	gittest.Git(t, repo.Work, "add", "link")
	gittest.Git(t, repo.Work, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "a link")
	before := reg.Requests.Load()
	if code, _, errOut := cli(t, "publish", repo.Work, "--to", to, "--username", reg.Username, "--password-file", pw); code == exitOK ||
		!strings.Contains(errOut, "link is a symbolic link or a submodule") {
		t.Errorf("a tree with a link: exit %d\n%s", code, errOut)
	}
	if code, _, errOut := cli(t, "publish", repo.Work); code == exitOK || !strings.Contains(errOut, "--to is required") {
		t.Errorf("no --to: exit %d\n%s", code, errOut)
	}
	if code, _, errOut := cli(t, "publish", t.TempDir(), "--to", to); code == exitOK || !strings.Contains(errOut, "not in a Git repository") {
		t.Errorf("outside Git: exit %d\n%s", code, errOut)
	}
	if n := reg.Requests.Load() - before; n != 0 {
		t.Errorf("refused publishes made %d requests to the registry", n)
	}
}
