package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/spf13/cobra"

	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

func newRolloutCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Act on the fleet's rollout: approve a wave",
		Long: `A fleet with a rollout (rollout: waves in fleet.cue) takes each new revision
wave by wave: every agent reads the other clusters' status branches and
applies the revision only when the waves before its own are Ready at it for
the bake time. A wave with approve: true also waits for an approval, which
'flotilla rollout approve' pushes to the approvals branch. 'flotilla status'
shows where the rollout of the tip stands.`,
	}
	cmd.AddCommand(newRolloutApproveCmd())
	return cmd
}

// approveFlags are the flags of `flotilla rollout approve`.
type approveFlags struct {
	repo, branch, prefix string
	auth                 source.Auth
	wave, revision       string
	by, message          string
}

func newRolloutApproveCmd() *cobra.Command {
	af := &approveFlags{}
	cmd := &cobra.Command{
		Use:   "approve --repo URL --wave NAME --revision SHA",
		Short: "Let a wave that asks for approval take a revision",
		Long: `Push an approval for one wave and one revision to the approvals branch
(flotilla/approvals of the status repository, --approvals-branch): a commit
that adds the entry to rollout/approvals.yaml, authored by you (--by, default
your git config user.name and user.email), so who approved what stays in
the branch's history. The agents of that wave read it at their next poll.

--revision takes a full hash, or a prefix of a revision the clusters report
on their status branches. The push uses your Git credentials (--username
with --password-file, or --ssh-key); approving twice changes nothing.`,
		Example: `  flotilla rollout approve --repo https://git.example.com/platform/fleet.git \
    --wave prod --revision 3f2a9c1 --message "canary and eu healthy for an hour"`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&af.repo, "repo", "", "repository of the status branches and approvals (URL or local path)")
	fs.StringVar(&af.branch, "approvals-branch", report.DefaultApprovalsBranch, "branch holding the approvals")
	fs.StringVar(&af.prefix, "status-prefix", report.DefaultPrefix, "prefix of the status branches (to resolve a short --revision)")
	addGitAuthFlags(cmd, &af.auth, "", "")
	fs.StringVar(&af.wave, "wave", "", "the wave to approve (its name in rollout.waves)")
	fs.StringVar(&af.revision, "revision", "", "the revision the wave may take (full hash or a reported prefix)")
	fs.StringVar(&af.by, "by", "", `who approves, as "Name <email>" (default: git config user.name and user.email)`)
	fs.StringVarP(&af.message, "message", "m", "", "why, for the history")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if af.repo == "" || af.wave == "" || af.revision == "" {
			return errors.New("--repo, --wave and --revision are required")
		}
		repo := repoURL(af.repo)
		auth, err := af.auth.Method(repo)
		if err != nil {
			return err
		}
		author, err := approver(af.by)
		if err != nil {
			return err
		}
		snap, err := report.Read(cmd.Context(), repo, af.prefix, auth)
		if err != nil {
			return err
		}
		revision, err := resolveRevision(af.revision, snap.Statuses)
		if err != nil {
			return err
		}
		if waves := report.WavesOf(snap.Statuses, revision); len(waves) > 0 && !slices.Contains(waves, af.wave) {
			return fmt.Errorf("wave %q is not a wave of the rollout of %s (%s)", af.wave, short(revision), strings.Join(waves, ", "))
		}
		a := report.Approval{Revision: revision, Wave: af.wave, By: author.Name + " <" + author.Email + ">", At: time.Now().UTC(), Message: af.message}
		added, err := report.Approve(cmd.Context(), report.ApproveOptions{URL: repo, Auth: auth, Branch: af.branch, Author: author}, a)
		if err != nil {
			return err
		}
		if !added {
			fmt.Fprintf(cmd.OutOrStdout(), "wave %s was already approved for %s\n", af.wave, short(revision))
			return nil
		}
		fmt.Fprintf(cmd.OutOrStdout(), "approved wave %s for %s on %s\n", af.wave, short(revision), af.branch)
		return nil
	}
	return cmd
}

// approver is who approves: --by, or the user's Git identity.
func approver(by string) (object.Signature, error) {
	if by != "" {
		name, email, ok := strings.Cut(by, "<")
		if !ok || !strings.HasSuffix(email, ">") {
			return object.Signature{}, fmt.Errorf("--by %q: give it as \"Name <email>\"", by)
		}
		return object.Signature{Name: strings.TrimSpace(name), Email: strings.TrimSuffix(email, ">")}, nil
	}
	cfg, err := config.LoadConfig(config.GlobalScope)
	if err != nil || cfg.User.Name == "" || cfg.User.Email == "" {
		return object.Signature{}, errors.New(`who approves? give --by "Name <email>", or set git config --global user.name and user.email`)
	}
	return object.Signature{Name: cfg.User.Name, Email: cfg.User.Email}, nil
}

// resolveRevision completes a revision prefix from the revisions the
// clusters report (seen, applied, or in a rollout).
func resolveRevision(rev string, statuses []report.Status) (string, error) {
	rev = strings.ToLower(rev)
	if len(rev) == 40 {
		return rev, nil
	}
	if len(rev) < 4 {
		return "", fmt.Errorf("revision %q: give at least 4 hex digits, or the full hash", rev)
	}
	var found []string
	for _, st := range statuses {
		for _, r := range []string{st.SeenRevision, st.AppliedRevision} {
			if strings.HasPrefix(r, rev) && !slices.Contains(found, r) {
				found = append(found, r)
			}
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("revision %s is not one any cluster reports: give the full hash", rev)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("revision %s is ambiguous (%s): give more of it", rev, strings.Join(found, ", "))
}

// writeRollout prints the rollout view under the fleet table.
func writeRollout(w io.Writer, v *report.RolloutView) error {
	fmt.Fprintf(w, "\nrollout of %s, wave by wave:\n", short(v.Revision))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WAVE\tREADY\tSTATE\tDETAIL")
	for _, wv := range v.Waves {
		fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%s\n", wv.Name, wv.Ready, len(wv.Clusters), wv.State, oneLine(wv.Detail()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(v.NotSeen) > 0 {
		fmt.Fprintf(w, "not yet seen by: %s\n", strings.Join(v.NotSeen, ", "))
	}
	return nil
}
