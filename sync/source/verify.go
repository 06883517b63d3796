package source

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

// Signature errors, wrapped with the revision.
var (
	// ErrUnsigned: the commit carries no signature.
	ErrUnsigned = errors.New("commit is not signed")
	// ErrUntrusted: the signature is not by a trusted key, or is invalid.
	ErrUntrusted = errors.New("commit is not signed by a trusted key")
)

// gitNamespace is the SSH signature namespace git signs commits in.
const gitNamespace = "git"

// Verifier checks that a commit is signed by a trusted key: OpenPGP
// (gpg.format=openpgp) or SSH (gpg.format=ssh).
type Verifier struct {
	pgpKeyring string
	sshKeys    []ssh.PublicKey
}

// NewVerifier reads trusted keys from files: armored OpenPGP public keys
// (`gpg --armor --export`), or SSH public keys one per line
// (authorized_keys format, as in an allowed_signers file without the
// principal).
func NewVerifier(files ...string) (*Verifier, error) {
	if len(files) == 0 {
		return nil, errors.New("signature verification needs at least one trusted key file")
	}
	v := &Verifier{}
	var ring strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading trusted key: %w", err)
		}
		if bytes.Contains(data, []byte("BEGIN PGP PUBLIC KEY BLOCK")) {
			ring.Write(data)
			ring.WriteString("\n")
			continue
		}
		for rest := data; len(bytes.TrimSpace(rest)) > 0; {
			key, _, _, next, err := ssh.ParseAuthorizedKey(rest)
			if err != nil {
				return nil, fmt.Errorf("trusted key file %s: neither an armored OpenPGP key nor SSH public keys: %w", f, err)
			}
			v.sshKeys = append(v.sshKeys, key)
			rest = next
		}
	}
	v.pgpKeyring = ring.String()
	return v, nil
}

// Verify checks the checkout's commit and returns who signed it. A fleet
// from an OCI registry is checked by the commit object it carries (its
// files were checked against that commit's tree when pulled): signed by a
// trusted key as a Git commit is, or else carrying a trusted publisher's
// SSH signature of it (publish --sign-key).
func (v *Verifier) Verify(co *Checkout) (signer string, err error) {
	var commit *object.Commit
	switch {
	case co.Repository != nil:
		if commit, err = co.Repository.CommitObject(plumbing.NewHash(co.Revision)); err != nil {
			return "", err
		}
	case co.Commit != nil:
		commit = co.Commit
		if co.Signature != "" {
			if signer, err := v.verifyPublisher(co); err == nil {
				return signer, nil
			} else if commit.PGPSignature == "" {
				return "", fmt.Errorf("%w: %s: %w", ErrUntrusted, gitrev.Short(co.Revision), err)
			}
		}
	default:
		return "", fmt.Errorf("%w: %s: the artifact carries no commit to check", ErrUnsigned, gitrev.Short(co.Revision))
	}
	sig := commit.PGPSignature
	switch {
	case sig == "":
		return "", fmt.Errorf("%w: %s", ErrUnsigned, gitrev.Short(co.Revision))
	case strings.Contains(sig, "BEGIN SSH SIGNATURE"):
		signer, err = v.verifySSH(commit)
	default:
		signer, err = v.verifyPGP(commit)
	}
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrUntrusted, gitrev.Short(co.Revision), err)
	}
	return signer, nil
}

func (v *Verifier) verifyPGP(commit *object.Commit) (string, error) {
	if v.pgpKeyring == "" {
		return "", errors.New("OpenPGP signature, but no trusted OpenPGP key")
	}
	entity, err := commit.Verify(v.pgpKeyring)
	if err != nil {
		return "", err
	}
	for name := range entity.Identities {
		return name, nil
	}
	return entity.PrimaryKey.KeyIdString(), nil
}

func (v *Verifier) verifySSH(commit *object.Commit) (string, error) {
	sig, err := sshsig.Unarmor([]byte(commit.PGPSignature))
	if err != nil {
		return "", err
	}
	message, err := signedContent(commit)
	if err != nil {
		return "", err
	}
	for _, key := range v.sshKeys {
		if sshsig.Verify(bytes.NewReader(message), sig, key, sig.HashAlgorithm, gitNamespace) == nil {
			return ssh.FingerprintSHA256(key), nil
		}
	}
	return "", fmt.Errorf("SSH signature by %s, not a trusted key", ssh.FingerprintSHA256(sig.PublicKey))
}

// signedContent is the commit as it was signed: encoded without its
// signature.
func signedContent(commit *object.Commit) ([]byte, error) {
	encoded := &plumbing.MemoryObject{}
	if err := commit.EncodeWithoutSignature(encoded); err != nil {
		return nil, err
	}
	r, err := encoded.Reader()
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// verifyPublisher checks a publisher's SSH signature of an artifact's
// commit object.
func (v *Verifier) verifyPublisher(co *Checkout) (string, error) {
	sig, err := sshsig.Unarmor([]byte(co.Signature))
	if err != nil {
		return "", err
	}
	for _, key := range v.sshKeys {
		if sshsig.Verify(bytes.NewReader(co.RawCommit), sig, key, sig.HashAlgorithm, PublishNamespace) == nil {
			return ssh.FingerprintSHA256(key), nil
		}
	}
	return "", fmt.Errorf("publisher's signature by %s, not a trusted key", ssh.FingerprintSHA256(sig.PublicKey))
}
