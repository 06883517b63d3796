package source_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// sshClientKey writes a new private key in OpenSSH format and returns its
// file and public key line.
func sshClientKey(t *testing.T) (string, string) {
	t.Helper()
	signer, keyFile, _ := gittest.NewSSHKeyFile(t)
	return keyFile, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
}

// TestSSH follows a repository on gittestserver over SSH: the client key
// must be authorised, and the server's host key must be in known_hosts.
func TestSSH(t *testing.T) {
	keyFile, authorised := sshClientKey(t)
	repoURL, hostLine := gittest.SSHServer(t, authorised)
	u, err := url.Parse(repoURL)
	if err != nil {
		t.Fatal(err)
	}
	knownHosts := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(hostLine), 0o644); err != nil {
		t.Fatal(err)
	}

	src, err := source.New(source.Options{URL: repoURL, Auth: source.Auth{SSHKeyFile: keyFile, KnownHostsFile: knownHosts}})
	if err != nil {
		t.Fatal(err)
	}
	head, err := src.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	co, err := src.Fetch(context.Background(), head)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(co.Dir, "fleet.cue")); err != nil {
		t.Fatal(err)
	}

	// A host key that is not the one known is refused.
	_, otherHost := sshClientKey(t)
	wrongHosts := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(wrongHosts, []byte("["+u.Hostname()+"]:"+u.Port()+" "+otherHost+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mitm, err := source.New(source.Options{URL: repoURL, Auth: source.Auth{SSHKeyFile: keyFile, KnownHostsFile: wrongHosts}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mitm.Head(context.Background()); err == nil || !strings.Contains(err.Error(), "key mismatch") {
		t.Errorf("unknown host key: %v", err)
	}

	// A client key the server does not know is refused.
	strangerKey, _ := sshClientKey(t)
	stranger, err := source.New(source.Options{URL: repoURL, Auth: source.Auth{SSHKeyFile: strangerKey, KnownHostsFile: knownHosts}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stranger.Head(context.Background()); err == nil {
		t.Error("an unauthorised client key was accepted")
	}
}
