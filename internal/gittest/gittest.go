// Package gittest makes real git repositories for tests: a bare
// repository (the remote, served over file://) and a working clone that
// commits and pushes to it with the git command line.
package gittest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

// Repo is a bare repository and a working clone of it.
type Repo struct {
	t testing.TB
	// Bare is the bare repository's folder; URL its file:// address.
	Bare string
	URL  string
	// Work is the working clone.
	Work string
}

// Git runs the git command line in dir with a neutral configuration and
// returns its trimmed output; failure fails the test.
func Git(t testing.TB, dir string, args ...string) string {
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

// New makes an empty bare repository with branch main and a clone.
func New(t testing.TB) *Repo {
	t.Helper()
	root := t.TempDir()
	r := &Repo{t: t, Bare: filepath.Join(root, "fleet.git"), Work: filepath.Join(root, "work")}
	Git(t, root, "init", "--bare", "-b", "main", r.Bare)
	Git(t, root, "init", "-b", "main", r.Work)
	Git(t, r.Work, "remote", "add", "origin", r.Bare)
	r.URL = "file://" + r.Bare
	return r
}

// Commit writes files (path → content) into the clone, commits them and
// pushes to main; it returns the new revision.
func (r *Repo) Commit(files map[string]string) string {
	r.t.Helper()
	return r.CommitMessage(files, "change")
}

// CommitMessage is Commit with a commit message.
func (r *Repo) CommitMessage(files map[string]string, message string) string {
	r.t.Helper()
	for name, content := range files {
		p := filepath.Join(r.Work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
	Git(r.t, r.Work, "add", "-A")
	Git(r.t, r.Work, "commit", "--allow-empty", "-m", message)
	Git(r.t, r.Work, "push", "origin", "main")
	return Git(r.t, r.Work, "rev-parse", "HEAD")
}

// NewKey makes an OpenPGP key and writes its armored public key to a file,
// as `gpg --armor --export` would.
func NewKey(t testing.TB, name string) (*openpgp.Entity, string) {
	t.Helper()
	e, err := openpgp.NewEntity(name, "", name+"@example.com", nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Serialize(w); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".asc")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return e, path
}

// NewSSHKey makes an SSH key and writes its public key, in
// authorized_keys format, to a file.
func NewSSHKey(t testing.TB) (ssh.Signer, string) {
	t.Helper()
	_, private, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(private)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "signer.pub")
	if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
		t.Fatal(err)
	}
	return signer, path
}

// NewSSHKeyFile makes an SSH key and writes both its private key (OpenSSH
// format, no passphrase) and its public key (authorized_keys format) to
// files.
func NewSSHKeyFile(t testing.TB) (signer ssh.Signer, keyFile, pubFile string) {
	t.Helper()
	_, private, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(private, "")
	if err != nil {
		t.Fatal(err)
	}
	if signer, err = ssh.NewSignerFromKey(private); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile, pubFile = filepath.Join(dir, "id"), filepath.Join(dir, "id.pub")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubFile, ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
		t.Fatal(err)
	}
	return signer, keyFile, pubFile
}

// sshSigner signs commits as git does with gpg.format=ssh.
type sshSigner struct{ key ssh.Signer }

func (s sshSigner) Sign(message io.Reader) ([]byte, error) {
	sig, err := sshsig.Sign(message, s.key, sshsig.HashSHA512, "git")
	if err != nil {
		return nil, err
	}
	return sshsig.Armor(sig), nil
}

// SignedCommit writes files into the clone and commits them with go-git,
// signed by key (an *openpgp.Entity or an ssh.Signer), then pushes; it
// returns the revision.
func (r *Repo) SignedCommit(key any, files map[string]string) string {
	r.t.Helper()
	repo, err := git.PlainOpen(r.Work)
	if err != nil {
		r.t.Fatal(err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		r.t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(r.Work, name), []byte(content), 0o644); err != nil {
			r.t.Fatal(err)
		}
		if _, err := wt.Add(name); err != nil {
			r.t.Fatal(err)
		}
	}
	who := &object.Signature{Name: "Release Bot", Email: "release@example.com", When: time.Now()}
	opts := &git.CommitOptions{Author: who, Committer: who}
	switch k := key.(type) {
	case *openpgp.Entity:
		opts.SignKey = k
	case ssh.Signer:
		opts.Signer = sshSigner{k}
	default:
		r.t.Fatalf("unknown signing key %T", key)
	}
	hash, err := wt.Commit("signed change", opts)
	if err != nil {
		r.t.Fatal(err)
	}
	Git(r.t, r.Work, "push", "origin", "main")
	return hash.String()
}

// ImportBranches writes branches into the bare repository at once, one
// commit each holding the given files (path → content), with one `git
// fast-import`: what many agents' first reports leave, made in a second.
func ImportBranches(t testing.TB, bare string, branches map[string]map[string][]byte) {
	t.Helper()
	var stream bytes.Buffer
	now := time.Now().Unix()
	for _, branch := range slices.Sorted(maps.Keys(branches)) {
		msg := "import " + branch
		fmt.Fprintf(&stream, "commit refs/heads/%s\ncommitter flotilla <flotilla@flotilla.dev> %d +0000\ndata %d\n%s\n", branch, now, len(msg), msg)
		files := branches[branch]
		for _, path := range slices.Sorted(maps.Keys(files)) {
			fmt.Fprintf(&stream, "M 100644 inline %s\ndata %d\n%s\n", path, len(files[path]), files[path])
		}
	}
	cmd := exec.Command("git", "fast-import", "--quiet")
	cmd.Dir = bare
	cmd.Stdin = &stream
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git fast-import: %v\n%s", err, out)
	}
}
