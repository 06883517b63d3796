package source_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// TestVerify checks signed, unsigned and untrusted commits.
func TestVerify(t *testing.T) {
	trusted, trustedFile := gittest.NewKey(t, "release")
	stranger, _ := gittest.NewKey(t, "stranger")
	repo := gittest.New(t)
	src, err := source.New(source.Options{URL: repo.URL, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	v, err := source.NewVerifier(trustedFile)
	if err != nil {
		t.Fatal(err)
	}
	check := func(rev string) (string, error) {
		t.Helper()
		co, err := src.Fetch(context.Background(), rev)
		if err != nil {
			t.Fatal(err)
		}
		return v.Verify(co)
	}

	rev := repo.SignedCommit(trusted, map[string]string{"fleet.cue": "package fleet\n"})
	if signer, err := check(rev); err != nil || signer != "release <release@example.com>" {
		t.Errorf("trusted: signer %q, %v", signer, err)
	}
	rev = repo.Commit(map[string]string{"fleet.cue": "package fleet\n// unsigned\n"})
	if _, err := check(rev); !errors.Is(err, source.ErrUnsigned) {
		t.Errorf("unsigned: %v", err)
	}
	rev = repo.SignedCommit(stranger, map[string]string{"fleet.cue": "package fleet\n// stranger\n"})
	if _, err := check(rev); !errors.Is(err, source.ErrUntrusted) {
		t.Errorf("untrusted: %v", err)
	}

	// SSH signatures (gpg.format=ssh), trusted keys in authorized_keys form.
	sshKey, sshFile := gittest.NewSSHKey(t)
	otherSSH, _ := gittest.NewSSHKey(t)
	v, err = source.NewVerifier(trustedFile, sshFile)
	if err != nil {
		t.Fatal(err)
	}
	rev = repo.SignedCommit(sshKey, map[string]string{"fleet.cue": "package fleet\n// ssh\n"})
	if signer, err := check(rev); err != nil || !strings.HasPrefix(signer, "SHA256:") {
		t.Errorf("trusted SSH signature: signer %q, %v", signer, err)
	}
	rev = repo.SignedCommit(otherSSH, map[string]string{"fleet.cue": "package fleet\n// other ssh\n"})
	if _, err := check(rev); !errors.Is(err, source.ErrUntrusted) {
		t.Errorf("untrusted SSH signature: %v", err)
	}
}
