// Package sopstest encrypts files as users do — with the `sops` command
// line (built from the module proxy into bin/tools), to age keys made for
// the test — for the tests of SOPS-encrypted fleets.
package sopstest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/flotilla-gitops/flotilla/internal/peers"
)

// Key is an age key pair; File holds the identity, as `age-keygen -o`
// writes it.
type Key struct {
	Recipient string
	Identity  string
	File      string
}

// NewKey makes an age key and writes its identity file.
func NewKey(t testing.TB) Key {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "keys.txt")
	content := "# public key: " + id.Recipient().String() + "\n" + id.String() + "\n"
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return Key{Recipient: id.Recipient().String(), Identity: id.String(), File: file}
}

// Encrypt encrypts plain (the content of a file named name, YAML or JSON
// by its extension) to the recipients with `sops --encrypt`, encrypting
// only data and stringData when regex is "" — as teams encrypt Secrets —
// and returns the encrypted file's content.
func Encrypt(t testing.TB, name, plain string, regex string, recipients ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, filepath.Base(name))
	if err := os.WriteFile(in, []byte(plain), 0o600); err != nil {
		t.Fatal(err)
	}
	if regex == "" {
		regex = "^(data|stringData)$"
	}
	cmd := exec.Command(peers.Path(t, peers.Sops), "--encrypt", "--age", strings.Join(recipients, ","),
		"--encrypted-regex", regex, in)
	// No .sops.yaml, key or configuration of the user's is read.
	cmd.Dir = dir
	cmd.Env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH")}
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = ee.Stderr
		}
		t.Fatalf("sops --encrypt %s: %v\n%s", name, err, stderr)
	}
	return out
}
