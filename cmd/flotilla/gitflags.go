package main

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/flotilla-gitops/flotilla/sync/source"
)

// addGitAuthFlags registers the credential flags of a Git repository, all
// read from files: --<prefix>username, --<prefix>password-file,
// --<prefix>ssh-key and --<prefix>known-hosts. of ends each help text
// ("" or " for --status-repo").
func addGitAuthFlags(cmd *cobra.Command, a *source.Auth, prefix, of string) {
	fs := cmd.Flags()
	fs.StringVar(&a.Username, prefix+"username", "", "HTTPS user name"+of)
	fs.StringVar(&a.PasswordFile, prefix+"password-file", "", "file holding the HTTPS password or token"+of)
	fs.StringVar(&a.SSHKeyFile, prefix+"ssh-key", "", "SSH private key file"+of)
	fs.StringVar(&a.KnownHostsFile, prefix+"known-hosts", "", "known_hosts file for SSH"+of)
}

// repoURL makes a repository given as a local path a file:// URL; URLs
// and scp-like addresses (git@host:repo) are kept.
func repoURL(repo string) string {
	if strings.Contains(repo, "://") || strings.Contains(repo, "@") {
		return repo
	}
	return "file://" + absPath(repo)
}
