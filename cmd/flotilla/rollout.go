package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

func newRolloutCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Act on the fleet's rollout: approve, pause, hold, revert, explain",
		Long: `A fleet with a rollout (rollout: waves in fleet.cue) takes each new revision
wave by wave: every agent reads the other clusters' status branches and
applies the revision only when the waves before its own are Ready at it for
the bake time. A wave with approve: true also waits for an approval, which
'flotilla rollout approve' pushes to the approvals branch.

During an incident, 'pause' stops every cluster from taking anything new and
'hold' keeps one cluster or bundle where it is: commits on the approvals
branch, no edit of fleet.cue. 'revert' writes the commit that undoes a
revision and previews it for every cluster. 'explain' says why a cluster
applied, waited or rolled back a revision, from Git alone. 'flotilla status'
shows where the rollout of the tip stands.`,
	}
	cmd.AddCommand(newRolloutApproveCmd(), newRolloutPauseCmd(), newRolloutResumeCmd(), newRolloutHoldCmd(),
		newRolloutReleaseCmd(), newRolloutRevertCmd(), newRolloutExplainCmd())
	return cmd
}

// approveFlags are the flags of `flotilla rollout approve`.
type approveFlags struct {
	repo, branch, prefix string
	auth                 source.Auth
	wave, revision       string
	by, message          string
	// fleetBranch and path locate the fleet at the revision, to check that
	// the wave asks for an approval.
	fleetBranch, path string
	// signingKey signs the approval (an SSH private key, or a public key
	// whose private key ssh-agent holds).
	signingKey string
}

// approveLong is rollout approve's --help.
const approveLong = `Push an approval for one wave and one revision to the approvals branch
(flotilla/approvals, --approvals-branch, in the fleet repository — or in
the status repository of an install that keeps it there): a commit
that adds the entry to rollout/approvals.yaml, authored by you (--by, default
your git config user.name and user.email), so who approved what stays in
the branch's history. The agents of that wave read it at their next poll.

--revision takes a full hash, or a prefix of a revision the clusters report
on their status branches. The push uses your Git credentials (--username
with --password-file, or --ssh-key); approving twice changes nothing.

When the fleet's rollout names approvers (rollout.approvers: SSH public
keys), agents count only an approval one of them signed: sign it with
--signing-key, your SSH private key, or your .pub file when ssh-agent holds
the key (as git's user.signingkey). Anyone who can push the branch can add
an entry; only an approver can sign one.`

func newRolloutApproveCmd() *cobra.Command {
	af := &approveFlags{}
	cmd := &cobra.Command{
		Use:   "approve --repo URL --wave NAME --revision SHA",
		Short: "Let a wave that asks for approval take a revision",
		Long:  approveLong,
		Example: `  flotilla rollout approve --repo https://git.example.com/platform/fleet.git \
    --wave prod --revision 3f2a9c1 --message "canary and eu healthy for an hour"`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&af.repo, "repo", "", "repository of the approvals branch (`URL` or local path): the fleet repository, or the status repository of an install that keeps the branch there")
	fs.StringVar(&af.branch, "approvals-branch", report.DefaultApprovalsBranch, "branch holding the approvals")
	fs.StringVar(&af.prefix, "status-prefix", report.DefaultPrefix, "prefix of the status branches (to resolve a short --revision)")
	addGitAuthFlags(cmd, &af.auth, "", "")
	fs.StringVar(&af.wave, "wave", "", "the wave to approve (its `NAME` in rollout.waves)")
	completeFromFleet(cmd, "wave", completeWaves)
	fs.StringVar(&af.revision, "revision", "", "the revision the wave may take (full hash or a reported prefix: `SHA`)")
	fs.StringVar(&af.by, "by", "", "who approves, as `\"NAME <EMAIL>\"` (default: git config user.name and user.email)")
	fs.StringVarP(&af.message, "message", "m", "", "why, for the history")
	fs.StringVar(&af.fleetBranch, "branch", "main", "the fleet `BRANCH` whose history holds --revision (its rollout says which waves ask for approval)")
	fs.StringVar(&af.path, "path", ".", "`DIR` of fleet.cue inside the repository")
	fs.StringVar(&af.signingKey, "signing-key", "", "sign the approval with this SSH key `FILE`: a private key, or a .pub whose private key ssh-agent holds (required when the rollout names approvers)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if af.repo == "" || af.wave == "" || af.revision == "" {
			return errors.New("--repo, --wave and --revision are required")
		}
		repo := repoURL(af.repo)
		auth, err := af.auth.Method(repo)
		if err != nil {
			return err
		}
		author, err := gitAuthor(af.by, "who approves?")
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
		approvers, err := af.checkWaveAsks(cmd.Context(), cmd.ErrOrStderr(), repo, revision, snap.Statuses)
		if err != nil {
			return err
		}
		a := report.Approval{Revision: revision, Wave: af.wave, By: author.Name + " <" + author.Email + ">", At: time.Now().UTC(), Message: af.message}
		if err := af.sign(&a, approvers); err != nil {
			return err
		}
		added, err := report.Approve(cmd.Context(), report.ApproveOptions{URL: repo, Auth: auth, Branch: af.branch, Author: author, Approvers: approvers}, a)
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

// checkWaveAsks refuses to approve a wave that asks for no approval in
// the fleet at the revision (an approval there would change nothing), or
// that is no wave of its rollout, naming the waves that do. A fleet that
// cannot be read at the revision is noted and the approval goes ahead.
func (af *approveFlags) checkWaveAsks(ctx context.Context, stderr io.Writer, repo, revision string, statuses []report.Status) ([]string, error) {
	w, err := af.wavesAt(ctx, repo, revision, statuses)
	if err != nil {
		fmt.Fprintf(stderr, "note: not checked that wave %s asks for approval: %v\n", af.wave, err)
		return nil, nil
	}
	switch {
	case len(w.all) > 0 && !slices.Contains(w.all, af.wave):
		return nil, fmt.Errorf("wave %q is not a wave of the rollout at %s (its waves: %s)", af.wave, short(revision), strings.Join(w.all, ", "))
	case slices.Contains(w.asking, af.wave):
		return w.approvers, nil
	case len(w.asking) == 0:
		return nil, fmt.Errorf("wave %q asks for no approval at %s: no wave of the rollout does (approve: true on a wave makes it wait for one)", af.wave, short(revision))
	}
	return nil, fmt.Errorf("wave %q asks for no approval at %s: the waves that do are %s", af.wave, short(revision), strings.Join(w.asking, ", "))
}

// wavesAt reads the fleet at the revision and evaluates its rollouts (the
// fleet's and the bundles' own) for the clusters it knows: every wave, and
// those with approve: true.
// wavesOfRollouts are the waves of a fleet's rollouts at a revision: all
// of them, those that ask for approval, and the approvers of the rollouts
// whose wave --wave is.
type wavesOfRollouts struct {
	all, asking, approvers []string
}

func (af *approveFlags) wavesAt(ctx context.Context, repo, revision string, statuses []report.Status) (*wavesOfRollouts, error) {
	cache, err := os.MkdirTemp("", "flotilla-approve-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(cache)
	src, err := source.New(source.Options{URL: repo, Branch: af.fleetBranch, Auth: af.auth, CacheDir: cache})
	if err != nil {
		return nil, err
	}
	co, err := src.FetchRevision(ctx, revision)
	if err != nil {
		return nil, err
	}
	f, err := fleet.Load(co.Dir, fleet.LoadOptions{Path: af.path})
	if err != nil {
		return nil, fmt.Errorf("the fleet at %s does not load", short(revision))
	}
	w := &wavesOfRollouts{}
	known := make([]fleet.Cluster, 0, len(statuses))
	for _, st := range statuses {
		known = append(known, st.Cluster)
	}
	add := func(r *fleet.Rollout) {
		if r == nil {
			return
		}
		w.all = appendNew(w.all, r.Waves...)
		w.asking = appendNew(w.asking, r.Approving...)
		if slices.Contains(r.Approving, af.wave) {
			w.approvers = appendNew(w.approvers, r.Approvers...)
		}
	}
	for _, cr := range f.Rollouts(known, f.Bundles()) {
		add(cr.Fleet)
		for _, r := range cr.Bundles {
			add(r)
		}
	}
	slices.Sort(w.asking)
	return w, nil
}

// appendNew appends the items list does not hold yet, in order.
func appendNew(list []string, items ...string) []string {
	for _, it := range items {
		if !slices.Contains(list, it) {
			list = append(list, it)
		}
	}
	return list
}

// sign signs the approval with --signing-key, checked against the
// rollout's approvers before anything is pushed. Without the flag, a
// rollout that names approvers is refused here: its agents would not count
// the approval.
func (af *approveFlags) sign(a *report.Approval, approvers []string) error {
	if af.signingKey == "" {
		if len(approvers) > 0 {
			return fmt.Errorf("the rollout of wave %s names approvers (rollout.approvers): sign the approval with --signing-key, your SSH key (one of %s)",
				af.wave, english.Count(len(approvers), "key"))
		}
		return nil
	}
	signer, err := sshSigner("--signing-key", af.signingKey)
	if err != nil {
		return err
	}
	if err := report.SignApproval(a, signer); err != nil {
		return err
	}
	if len(approvers) > 0 {
		if _, err := report.VerifyApproval(*a, approvers); err != nil {
			return fmt.Errorf("--signing-key %s: %w (the rollout's approvers are its rollout.approvers keys)", af.signingKey, err)
		}
	}
	return nil
}

// sshSigner reads an SSH private key file, or a public key file whose
// private key ssh-agent ($SSH_AUTH_SOCK) holds.
func sshSigner(flag, file string) (ssh.Signer, error) {
	data, err := readKeyFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if pub, _, _, _, perr := ssh.ParseAuthorizedKey(data); perr == nil {
		sock := os.Getenv("SSH_AUTH_SOCK")
		if sock == "" {
			return nil, fmt.Errorf("%s %s is a public key: its private key must be in ssh-agent, and SSH_AUTH_SOCK is not set", flag, file)
		}
		conn, err := net.Dial("unix", sock)
		if err != nil {
			return nil, fmt.Errorf("%s: reaching ssh-agent: %w", flag, err)
		}
		signers, err := agent.NewClient(conn).Signers()
		if err != nil {
			return nil, fmt.Errorf("%s: asking ssh-agent: %w", flag, err)
		}
		for _, s := range signers {
			if bytes.Equal(s.PublicKey().Marshal(), pub.Marshal()) {
				return s, nil
			}
		}
		return nil, fmt.Errorf("%s %s: ssh-agent does not hold its private key (%s); ssh-add it", flag, file, ssh.FingerprintSHA256(pub))
	}
	signer, err := ssh.ParsePrivateKey(data)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		return nil, fmt.Errorf("%s %s is protected by a passphrase: load it into ssh-agent (ssh-add) and give its .pub file", flag, file)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s is neither an SSH private key nor a public key: %w", flag, file, err)
	}
	return signer, nil
}

// gitAuthor is who writes a commit (an approval, a cluster added to the
// fleet): --by, or the user's Git identity; who is the question to ask when
// neither is there.
func gitAuthor(by, who string) (object.Signature, error) {
	if by != "" {
		name, email, ok := strings.Cut(by, "<")
		if !ok || !strings.HasSuffix(email, ">") {
			return object.Signature{}, fmt.Errorf("--by %q: give it as \"Name <email>\"", by)
		}
		return object.Signature{Name: strings.TrimSpace(name), Email: strings.TrimSuffix(email, ">")}, nil
	}
	cfg, err := config.LoadConfig(config.GlobalScope)
	if err != nil || cfg.User.Name == "" || cfg.User.Email == "" {
		return object.Signature{}, errors.New(who + ` give --by "Name <email>", or set git config --global user.name and user.email`)
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
	if v.Committed == nil {
		fmt.Fprintln(tw, "WAVE\tREADY\tSTATE\tDETAIL")
	} else {
		fmt.Fprintln(tw, "WAVE\tREADY\tSTATE\tREADY AFTER THE COMMIT\tDETAIL")
	}
	for _, wv := range v.Waves {
		after := ""
		if v.Committed != nil {
			after = dash(wv.ReadyAfter(v.Committed)) + "\t"
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%s%s\n", errtext.Clean(wv.Name), wv.Ready, len(wv.Clusters), wv.State, after, oneLine(errtext.Clean(wv.Detail())))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(v.NotSeen) > 0 {
		fmt.Fprintf(w, "not yet seen by: %s\n", errtext.Clean(english.Names(v.NotSeen, maxNamed)))
	}
	return nil
}

// maxKeyFile bounds a key file: far above any SSH key, far below what a
// mistaken path (/dev/zero) would read.
const maxKeyFile = 64 << 10

// readKeyFile reads a key file of at most maxKeyFile bytes.
func readKeyFile(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("%s is larger than any SSH key (%d bytes at most)", file, maxKeyFile)
	}
	return data, nil
}
