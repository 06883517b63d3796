package main

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// addGitAuthFlags registers the credential flags of a Git repository, all
// read from files: --<prefix>username, --<prefix>password-file,
// --<prefix>ssh-key and --<prefix>known-hosts. of ends each help text
// ("" or " for --status-repo").
func addGitAuthFlags(cmd *cobra.Command, a *source.Auth, prefix, of string) {
	fs := cmd.Flags()
	fs.StringVar(&a.Username, prefix+"username", "", "HTTPS user `NAME`"+of)
	fs.StringVar(&a.PasswordFile, prefix+"password-file", "", "`FILE` holding the HTTPS password or token"+of)
	fs.StringVar(&a.SSHKeyFile, prefix+"ssh-key", "", "SSH private key `FILE`"+of)
	fs.StringVar(&a.KnownHostsFile, prefix+"known-hosts", "", "known_hosts `FILE` for SSH"+of)
}

// repoURL makes a repository given as a local path a file:// URL; URLs
// and scp-like addresses (git@host:repo) are kept.
func repoURL(repo string) string {
	if strings.Contains(repo, "://") || strings.Contains(repo, "@") {
		return repo
	}
	return "file://" + absPath(repo)
}

// knownClusterFlags are the flags of commands that read every cluster the
// fleet knows (preview, hydrate, generator serve): where the status
// branches are.
type knownClusterFlags struct {
	repo, prefix string
	auth         source.Auth
}

func addKnownClusterFlags(cmd *cobra.Command) *knownClusterFlags {
	k := &knownClusterFlags{}
	fs := cmd.Flags()
	fs.StringVar(&k.repo, "status-repo", "", "read the clusters' status branches from the repository at `URL` (default: the local repository's)")
	fs.StringVar(&k.prefix, "status-prefix", report.DefaultPrefix, "prefix of the status branches")
	addGitAuthFlags(cmd, &k.auth, "status-", " for --status-repo")
	return k
}

// resolve returns where the status branches are: the status repository's
// URL and credentials, or no URL for the local repository's branches.
func (k *knownClusterFlags) resolve() (report.Branches, error) {
	if k.repo == "" {
		return report.Branches{Prefix: k.prefix}, nil
	}
	url := repoURL(k.repo)
	auth, err := k.auth.Method(url)
	return report.Branches{URL: url, Prefix: k.prefix, Auth: auth}, err
}
