// Package sops reads SOPS-encrypted files of the fleet repository (YAML and
// JSON, encrypted to age recipients) with github.com/getsops/sops/v3: it
// decrypts them in memory with age identities given explicitly, masks them
// for output that must not show them, and lists the recipients a file is
// encrypted to without decrypting anything.
//
// Only the identities given are used: never SOPS_AGE_KEY_FILE,
// SOPS_AGE_KEY(_CMD), ~/.config/sops/age/keys.txt, a cloud KMS, Vault or
// gpg — a file encrypted only to such keys cannot be decrypted here, and
// says to which keys it is encrypted.
package sops

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/getsops/sops/v3"
	"github.com/getsops/sops/v3/aes"
	sopsage "github.com/getsops/sops/v3/age"
	"github.com/getsops/sops/v3/config"
	"github.com/getsops/sops/v3/logging"
	"github.com/getsops/sops/v3/pgp"
	jsonstore "github.com/getsops/sops/v3/stores/json"
	yamlstore "github.com/getsops/sops/v3/stores/yaml"
	"github.com/sirupsen/logrus"

	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/render"
)

func init() {
	// SOPS logs every decryption at info level, to stderr: keep the agent's
	// and the commands' output theirs.
	logging.SetLevel(logrus.WarnLevel)
}

// ErrDecrypt is wrapped when an encrypted file cannot be decrypted with the
// identities given.
var ErrDecrypt = errors.New("cannot decrypt")

// Keys are age identities to decrypt with.
type Keys struct {
	ids sopsage.ParsedIdentities
	// public are the identities' recipients, for messages.
	public []string
}

// LoadKeyFiles reads age identity files (`age-keygen` output: one
// AGE-SECRET-KEY-1… per line, # comments). A file without any identity is
// an error, so that a misconfigured agent says so at start.
func LoadKeyFiles(paths ...string) (*Keys, error) {
	k := &Keys{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("age key file: %w", err)
		}
		n, err := k.add(string(data))
		if err != nil {
			return nil, fmt.Errorf("age key file %s: %w", p, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("age key file %s holds no age identity (AGE-SECRET-KEY-1…)", p)
		}
	}
	return k, nil
}

// add parses identities (the message of a parse error never holds the
// key: age's errors name the line's position, not its text).
func (k *Keys) add(text string) (int, error) {
	ids, err := age.ParseIdentities(strings.NewReader(text))
	if err != nil {
		return 0, errors.New("not an age identity file (want AGE-SECRET-KEY-1… lines)")
	}
	for _, id := range ids {
		k.ids = append(k.ids, id)
		if x, ok := id.(*age.X25519Identity); ok {
			k.public = append(k.public, x.Recipient().String())
		}
	}
	return len(ids), nil
}

// Public lists the recipients of the identities: what may be shown.
func (k *Keys) Public() []string {
	if k == nil {
		return nil
	}
	return slices.Clone(k.public)
}

// Encrypted reports whether data, the content of the file at name, is a
// SOPS-encrypted YAML or JSON document (a top-level `sops` mapping with a
// `mac`).
func Encrypted(name string, data []byte) bool {
	if !bytes.Contains(data, []byte("sops")) || !bytes.Contains(data, []byte("mac")) {
		return false
	}
	_, err := load(name, data)
	return err == nil
}

// store is the SOPS store for the file's format, by its extension.
func store(name string) (sops.Store, bool) {
	switch strings.ToLower(path.Ext(name)) {
	case ".yaml", ".yml":
		return yamlstore.NewStore(&config.YAMLStoreConfig{}), true
	case ".json":
		return jsonstore.NewStore(&config.JSONStoreConfig{}), true
	}
	return nil, false
}

func load(name string, data []byte) (sops.Tree, error) {
	st, ok := store(name)
	if !ok {
		return sops.Tree{}, fmt.Errorf("%s: only YAML and JSON files are read as SOPS files", name)
	}
	tree, err := st.LoadEncryptedFile(data)
	if err != nil {
		return sops.Tree{}, err
	}
	if tree.Metadata.MessageAuthenticationCode == "" || len(tree.Metadata.KeyGroups) == 0 {
		return sops.Tree{}, sops.MetadataNotFound
	}
	return tree, nil
}

// Recipients lists the keys a SOPS file is encrypted to, without
// decrypting: age recipients as they are ("age1…"), and other kinds as
// "kind:identifier" (pgp:FINGERPRINT, kms:ARN…), sorted.
func Recipients(name string, data []byte) ([]string, error) {
	tree, err := load(name, data)
	if err != nil {
		return nil, fmt.Errorf("%s: not a SOPS file: %w", name, err)
	}
	return recipients(tree), nil
}

func recipients(tree sops.Tree) []string {
	var out []string
	for _, group := range tree.Metadata.KeyGroups {
		for _, k := range group {
			switch k := k.(type) {
			case *sopsage.MasterKey:
				out = append(out, k.Recipient)
			case *pgp.MasterKey:
				out = append(out, "pgp:"+k.Fingerprint)
			default:
				out = append(out, k.TypeToIdentifier()+":"+k.ToString())
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Decrypt decrypts a SOPS file in memory with the given identities and
// checks its MAC. An error names the file, the recipients it is encrypted
// to and the identities tried (public keys); never its content.
func Decrypt(name string, data []byte, keys *Keys) ([]byte, error) {
	out, _, err := decrypt(name, data, keys)
	return out, err
}

// decrypt is Decrypt, which also returns the scalars it decrypted (the
// values that were ENC[…] in the file), for messages to be scrubbed of.
func decrypt(name string, data []byte, keys *Keys) ([]byte, []string, error) {
	tree, err := load(name, data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: not a SOPS file: %w", name, err)
	}
	fail := func(why string) error {
		tried := "no --age-key-file was given"
		if keys != nil && len(keys.public) > 0 {
			tried = "the identities given are for " + strings.Join(keys.public, ", ")
		}
		return fmt.Errorf("%w %s: %s; it is encrypted to %s, and %s", ErrDecrypt, name, why, strings.Join(recipients(tree), ", "), tried)
	}
	if len(tree.Metadata.KeyGroups) != 1 {
		return nil, nil, fail(fmt.Sprintf("it has %s (Shamir secret sharing is not supported)", english.Count(len(tree.Metadata.KeyGroups), "key group")))
	}
	if keys == nil || len(keys.ids) == 0 {
		return nil, nil, fail("no age identity to decrypt with")
	}
	var dataKey []byte
	for _, k := range tree.Metadata.KeyGroups[0] {
		ak, ok := k.(*sopsage.MasterKey)
		if !ok {
			continue
		}
		// The identities are set first: with none, SOPS would look for
		// keys in the environment and the user's files (and run
		// SOPS_AGE_KEY_CMD).
		keys.ids.ApplyToMasterKey(ak)
		if dk, err := ak.Decrypt(); err == nil {
			dataKey = dk
			break
		}
	}
	if dataKey == nil {
		return nil, nil, fail("none of the identities given opens it")
	}
	var encrypted []bool
	leaves(tree.Branches, func(v any) {
		s, ok := v.(string)
		encrypted = append(encrypted, ok && strings.HasPrefix(s, "ENC["))
	})
	cipher := aes.NewCipher()
	mac, err := tree.Decrypt(dataKey, cipher)
	if err != nil {
		return nil, nil, fail("its values do not decrypt with its data key")
	}
	original, err := cipher.Decrypt(tree.Metadata.MessageAuthenticationCode, dataKey, tree.Metadata.LastModified.Format(time.RFC3339))
	if err != nil || original != mac {
		return nil, nil, fail("its MAC does not match its content (it was changed after it was encrypted)")
	}
	var plain []string
	i := 0
	leaves(tree.Branches, func(v any) {
		if i < len(encrypted) && encrypted[i] {
			plain = append(plain, fmt.Sprint(v))
		}
		i++
	})
	st, _ := store(name)
	out, err := st.EmitPlainFile(tree.Branches)
	return out, plain, err
}

// leaves calls fn with every scalar of the branches, depth first.
func leaves(branches sops.TreeBranches, fn func(any)) {
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case sops.TreeBranch:
			for _, item := range v {
				walk(item.Value)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		case sops.Comment:
		default:
			fn(v)
		}
	}
	for _, b := range branches {
		walk(b)
	}
}

// Mask returns the file without its SOPS metadata and with every encrypted
// value replaced by "sops-encrypted:" and the start of the ciphertext's
// SHA-256: what output that must not show a secret shows (render without
// --decrypt, preview). The placeholder changes whenever the value is
// encrypted again, so a change is never hidden (a re-encryption shows as
// one too).
func Mask(name string, data []byte) ([]byte, error) {
	tree, err := load(name, data)
	if err != nil {
		return nil, fmt.Errorf("%s: not a SOPS file: %w", name, err)
	}
	for i := range tree.Branches {
		tree.Branches[i] = maskBranch(tree.Branches[i])
	}
	st, _ := store(name)
	return st.EmitPlainFile(tree.Branches)
}

func maskBranch(b sops.TreeBranch) sops.TreeBranch {
	out := make(sops.TreeBranch, len(b))
	for i, item := range b {
		out[i] = sops.TreeItem{Key: item.Key, Value: maskValue(item.Value)}
	}
	return out
}

func maskValue(v any) any {
	switch v := v.(type) {
	case sops.TreeBranch:
		return maskBranch(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = maskValue(e)
		}
		return out
	case string:
		if strings.HasPrefix(v, "ENC[") {
			sum := sha256.Sum256([]byte(v))
			return render.MaskedPrefix + hex.EncodeToString(sum[:6])
		}
	}
	return v
}

// Mode is what renderers get of an encrypted file.
type Mode string

func (m Mode) String() string { return string(m) }

// Modes of Files: what renderers get of an encrypted file.
const (
	// ModeMask gives the file masked (Mask): for output that must not
	// show secrets. The default.
	ModeMask Mode = "mask"
	// ModeDecrypt gives it decrypted, or fails the bundle: for applying.
	ModeDecrypt Mode = "decrypt"
	// ModeRefuse fails the bundle: for output written where a decrypted or
	// masked secret must not go (a hydrated branch).
	ModeRefuse Mode = "refuse"
)

// Files is the render.Secrets of a mode: files that are not SOPS-encrypted
// are read as they are.
type Files struct {
	Mode Mode
	Keys *Keys
	// KeysErr is why Keys could not be loaded: every encrypted file then
	// fails with it.
	KeysErr error
}

var _ render.Secrets = Files{}

// NewFiles returns Files of the mode with the age identities of keyFiles
// (read once, now).
func NewFiles(mode Mode, keyFiles []string) Files {
	f := Files{Mode: mode}
	if len(keyFiles) > 0 {
		f.Keys, f.KeysErr = LoadKeyFiles(keyFiles...)
	}
	return f
}

// Read implements render.Secrets.
func (f Files) Read(name string, data []byte) ([]byte, []string, error) {
	if !Encrypted(name, data) {
		return data, nil, nil
	}
	switch f.Mode {
	case ModeDecrypt:
		if f.KeysErr != nil {
			return nil, nil, fmt.Errorf("%w %s: %w", ErrDecrypt, name, f.KeysErr)
		}
		return decrypt(name, data, f.Keys)
	case ModeRefuse:
		return nil, nil, fmt.Errorf("%s is SOPS-encrypted: this command does not carry encrypted files (it would write them decrypted or masked)", name)
	default:
		out, err := Mask(name, data)
		return out, nil, err
	}
}
