package main

import (
	"errors"
	"fmt"

	"github.com/go-git/go-git/v5"
	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// publishLong is the command's --help.
const publishLong = `Publish the fleet at a commit to an OCI registry, for agents that follow
it there (agent --source oci://…) instead of the Git repository: past what
one Git host serves, a registry — with its CDN, replication and
pull-through caches — distributes the fleet (docs/scale.md).

The artifact holds every file Git tracks at the commit (--revision,
default HEAD) of the repository in DIR (default: the current folder) —
nothing untracked, no history — in one layer that the same commit always
packs the same way, so it publishes to the same digest. The commit is the
artifact's revision annotation, with its time and message: agents report
the commit, and a revert's trailer keeps its meaning. It is tagged with
the tag of --to (default latest) and with the commit's hash, so that an
agent can still pull the revision a held bundle keeps. A symbolic link or
a submodule in the tree is refused: agents unpack regular files only.

Agents poll the tag with one HEAD request and pull only when its digest
changed; the status still goes to a Git repository (agent --status-repo).

The artifact carries the commit object itself. An agent checks, when it
pulls, that the files hash to the commit's tree (a layer that is not the
commit's is refused). With --verify-key it checks the commit's own
signature, as for a Git repository — signed commits stay signed in the
registry — or, with --sign-key here, the publisher's SSH signature of the
commit object (namespace flotilla-publish), for fleets whose commits are
not signed but whose CI is trusted. Not cosign: one trust root (the keys
that sign commits, or the publisher's SSH key), no second signing system
with its own keys and transparency log, and the signature covers the files
through the commit's tree hash.`

func newPublishCmd() *cobra.Command {
	var to, revision, signKey string
	var auth source.Auth
	cmd := &cobra.Command{
		Use:   "publish [DIR] --to oci://REGISTRY/REPO[:TAG]",
		Short: "Publish the fleet at a commit to an OCI registry, for agents that follow it there",
		Long:  publishLong,
		Example: `  flotilla publish --to oci://registry.example.com/platform/fleet:main
  flotilla publish ../fleet --revision v1.4.0 --to oci://registry.example.com/platform/fleet:stable \
    --username ci --password-file ~/.secrets/registry-token`,
		Args: cobra.MaximumNArgs(1),
	}
	fs := cmd.Flags()
	fs.StringVar(&to, "to", "", "where: oci://REGISTRY/REPOSITORY[:TAG] (plain HTTP for a loopback registry only)")
	fs.StringVar(&revision, "revision", "", "the commit to publish, a `REF` (default HEAD)")
	fs.StringVar(&auth.Username, "username", "", "registry user `NAME`")
	fs.StringVar(&auth.PasswordFile, "password-file", "", "`FILE` holding the registry password or token")
	fs.StringVar(&signKey, "sign-key", "", "sign the commit object as the publisher with this SSH key `FILE` (a private key, or a .pub whose private key ssh-agent holds), for agents whose --verify-key trusts it")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if to == "" {
			return errors.New("--to is required: oci://REGISTRY/REPOSITORY[:TAG]")
		}
		repo, err := git.PlainOpenWithOptions(repoDir(args), &git.PlainOpenOptions{DetectDotGit: true})
		if err != nil {
			return fmt.Errorf("%s is not in a Git repository: publish packs a commit: %w", repoDir(args), err)
		}
		origin := ""
		if r, err := repo.Remote("origin"); err == nil && len(r.Config().URLs) > 0 {
			origin = r.Config().URLs[0]
		}
		opts := source.PublishOptions{Repo: repo, Revision: revision, To: to, Auth: auth, Source: origin}
		if signKey != "" {
			if opts.Signer, err = sshSigner("--sign-key", signKey); err != nil {
				return err
			}
		}
		p, err := source.Publish(cmd.Context(), opts)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "published %s (%s, %d bytes) to %s as %s\ntags: %s\n",
			p.Revision, english.Count(p.Files, "file"), p.Size, to, p.Digest, english.Names(p.Tags, 5))
		if opts.Signer != nil {
			fmt.Fprintf(cmd.OutOrStdout(), "signed by %s\n", ssh.FingerprintSHA256(opts.Signer.PublicKey()))
		}
		return nil
	}
	return cmd
}
