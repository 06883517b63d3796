package source

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
)

// Signature errors, wrapped with the revision.
var (
	// ErrUnsigned: the commit carries no signature.
	ErrUnsigned = errors.New("commit is not signed")
	// ErrUntrusted: the signature is not by a trusted key, or is invalid.
	ErrUntrusted = errors.New("commit is not signed by a trusted key")
)

// Verifier checks that a commit is signed by a trusted OpenPGP key.
type Verifier struct {
	keyring string
}

// NewVerifier reads armored OpenPGP public keys from files (a key ring per
// file, as `gpg --armor --export` writes).
func NewVerifier(files ...string) (*Verifier, error) {
	if len(files) == 0 {
		return nil, errors.New("signature verification needs at least one trusted key file")
	}
	var ring strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading trusted key: %w", err)
		}
		ring.Write(data)
		ring.WriteString("\n")
	}
	return &Verifier{keyring: ring.String()}, nil
}

// Verify checks the checkout's commit. SSH signatures are recognised and
// refused with a clear message: only OpenPGP is verified.
func (v *Verifier) Verify(co *Checkout) (signer string, err error) {
	commit, err := co.Repository.CommitObject(plumbing.NewHash(co.Revision))
	if err != nil {
		return "", err
	}
	sig := commit.PGPSignature
	switch {
	case sig == "":
		return "", fmt.Errorf("%w: %s", ErrUnsigned, short(co.Revision))
	case strings.Contains(sig, "BEGIN SSH SIGNATURE"):
		return "", fmt.Errorf("%w: %s has an SSH signature; only OpenPGP signatures are verified", ErrUntrusted, short(co.Revision))
	}
	entity, err := commit.Verify(v.keyring)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrUntrusted, short(co.Revision), err)
	}
	for name := range entity.Identities {
		return name, nil
	}
	return entity.PrimaryKey.KeyIdString(), nil
}
