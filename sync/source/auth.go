package source

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
)

// Auth are credentials, always read from files (mounted Secrets), never
// from flags or the fleet repository.
type Auth struct {
	// HTTPS: a user name and a file holding the password or token.
	Username     string
	PasswordFile string
	// SSH: a private key file (and its passphrase's file, if any), and a
	// known_hosts file that the server's host key must be in.
	SSHKeyFile           string
	SSHKeyPassphraseFile string
	KnownHostsFile       string
	// InsecureIgnoreHostKey accepts any SSH host key. Only for tests: it
	// must be asked for by name.
	InsecureIgnoreHostKey bool
}

// Method builds go-git's auth for the URL's transport (nil when none
// is needed), reading the credential files.
func (a Auth) Method(url string) (transport.AuthMethod, error) {
	switch {
	case strings.HasPrefix(url, "http://"), strings.HasPrefix(url, "https://"):
		if a.PasswordFile == "" {
			return nil, nil
		}
		secret, err := readSecret(a.PasswordFile)
		if err != nil {
			return nil, err
		}
		user := a.Username
		if user == "" {
			user = "git" // token auth: most hosts ignore the user name
		}
		return &githttp.BasicAuth{Username: user, Password: secret}, nil
	case strings.HasPrefix(url, "ssh://"), !strings.Contains(url, "://") && strings.Contains(url, "@"):
		return a.sshMethod(url)
	}
	return nil, nil
}

func (a Auth) sshMethod(url string) (transport.AuthMethod, error) {
	if a.SSHKeyFile == "" {
		return nil, errors.New("an SSH repository needs a private key file (--ssh-key)")
	}
	var passphrase string
	if a.SSHKeyPassphraseFile != "" {
		var err error
		if passphrase, err = readSecret(a.SSHKeyPassphraseFile); err != nil {
			return nil, err
		}
	}
	user := "git"
	if u, _, ok := strings.Cut(strings.TrimPrefix(url, "ssh://"), "@"); ok && u != "" {
		user = u
	}
	keys, err := gitssh.NewPublicKeysFromFile(user, a.SSHKeyFile, passphrase)
	if err != nil {
		return nil, fmt.Errorf("reading SSH key %s: %w", a.SSHKeyFile, err)
	}
	switch {
	case a.KnownHostsFile != "":
		cb, err := gitssh.NewKnownHostsCallback(a.KnownHostsFile)
		if err != nil {
			return nil, fmt.Errorf("reading known_hosts %s: %w", a.KnownHostsFile, err)
		}
		keys.HostKeyCallback = cb
	case a.InsecureIgnoreHostKey:
		keys.HostKeyCallback = ssh.InsecureIgnoreHostKey() //nolint:gosec // asked for by name
	default:
		return nil, errors.New("an SSH repository needs a known_hosts file (--known-hosts) to check the server's host key")
	}
	return keys, nil
}

// readSecret reads a credential file, without its trailing newline.
func readSecret(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading credential file: %w", err)
	}
	return strings.TrimRight(string(data), "\r\n"), nil
}
