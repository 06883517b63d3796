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
		if waves := wavesOf(snap.Statuses, revision); len(waves) > 0 && !slices.Contains(waves, af.wave) {
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

// wavesOf is the waves of a revision's rollout, as the clusters that saw
// it report them.
func wavesOf(statuses []report.Status, revision string) []string {
	for _, st := range statuses {
		if r := st.Rollout; r != nil && r.Revision == revision && len(r.Waves) > 0 {
			return r.Waves
		}
	}
	return nil
}

// rolloutView is where the rollout of one revision stands, from the
// status files: per wave, which clusters are Ready at it, baking, waiting,
// halted. The status command shows it as text, JSON and HTML.
type rolloutView struct {
	Revision string     `json:"revision"`
	Waves    []waveView `json:"waves"`
	// NotSeen are clusters that have not reported the revision yet.
	NotSeen []string `json:"notSeen,omitempty"`
}

// waveView is one wave of a rolloutView.
type waveView struct {
	Name     string   `json:"name"`
	Clusters []string `json:"clusters"`
	// Ready counts the clusters Ready at the revision.
	Ready int `json:"ready"`
	// State: Done, Applying, Baking, Waiting, Halted, Failed, Empty.
	State      string     `json:"state"`
	Until      *time.Time `json:"until,omitempty"`
	WaitingFor []string   `json:"waitingFor,omitempty"`
	HaltedBy   string     `json:"haltedBy,omitempty"`
	Failed     []string   `json:"failed,omitempty"`
	Message    string     `json:"message,omitempty"`
}

// rolloutOf builds the view of revision's rollout (the fleet tip's); nil
// when no cluster reports a rollout with waves for it.
func rolloutOf(statuses []report.Status, revision string) *rolloutView {
	if revision == "" {
		// No tip known: the newest revision a cluster reports a rollout of.
		var newest time.Time
		for _, st := range statuses {
			if st.Rollout != nil && st.ReportedAt.After(newest) {
				revision, newest = st.Rollout.Revision, st.ReportedAt
			}
		}
	}
	waves := wavesOf(statuses, revision)
	if len(waves) == 0 {
		return nil
	}
	v := &rolloutView{Revision: revision}
	byWave := map[string]*waveView{}
	for _, w := range waves {
		v.Waves = append(v.Waves, waveView{Name: w})
	}
	for i := range v.Waves {
		byWave[v.Waves[i].Name] = &v.Waves[i]
	}
	for _, st := range statuses {
		w := byWave[st.Wave]
		if st.SeenRevision != revision || st.Rollout == nil || st.Rollout.Revision != revision || w == nil {
			v.NotSeen = append(v.NotSeen, st.Cluster.Name)
			continue
		}
		w.Clusters = append(w.Clusters, st.Cluster.Name)
		r := st.Rollout
		switch {
		case st.AppliedRevision == revision && (st.Phase == report.ClusterReady || st.Phase == report.ClusterWaiting):
			w.Ready++
		case st.Phase == report.ClusterFailed && r.State == report.RolloutApplied:
			w.Failed = append(w.Failed, st.Cluster.Name)
		case r.State == report.RolloutHalted:
			w.HaltedBy, w.Message = r.HaltedBy, r.Message
		case r.State == report.RolloutWaiting:
			for _, c := range r.WaitingFor {
				if !slices.Contains(w.WaitingFor, c) {
					w.WaitingFor = append(w.WaitingFor, c)
				}
			}
			if r.Until != nil && (w.Until == nil || r.Until.After(*w.Until)) {
				w.Until = r.Until
			}
			if w.Message == "" {
				w.Message = r.Message
			}
		}
	}
	for i := range v.Waves {
		w := &v.Waves[i]
		switch {
		case len(w.Clusters) == 0:
			w.State = "Empty"
		case len(w.Failed) > 0:
			w.State = "Failed"
		case w.HaltedBy != "":
			w.State = "Halted"
		case w.Ready == len(w.Clusters):
			w.State = "Done"
		case w.Until != nil && len(w.WaitingFor) == 0:
			w.State = "Baking"
		case len(w.WaitingFor) > 0 || w.Message != "":
			w.State = "Waiting"
		default:
			w.State = "Applying"
		}
	}
	return v
}

// writeRollout prints the rollout view under the fleet table.
func writeRollout(w io.Writer, v *rolloutView) error {
	fmt.Fprintf(w, "\nrollout of %s, wave by wave:\n", short(v.Revision))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WAVE\tREADY\tSTATE\tDETAIL")
	for _, wv := range v.Waves {
		fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%s\n", wv.Name, wv.Ready, len(wv.Clusters), wv.State, oneLine(wv.detail()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(v.NotSeen) > 0 {
		fmt.Fprintf(w, "not yet seen by: %s\n", strings.Join(v.NotSeen, ", "))
	}
	return nil
}

// detail says what a wave waits for, in a line.
func (wv waveView) detail() string {
	switch wv.State {
	case "Failed":
		return "failed on " + strings.Join(wv.Failed, ", ") + ": later waves are halted"
	case "Halted":
		return "halted by " + wv.HaltedBy
	case "Baking":
		return "the earlier waves bake until " + wv.Until.UTC().Format(time.RFC3339)
	case "Waiting":
		if len(wv.WaitingFor) > 0 {
			return "waiting for " + strings.Join(wv.WaitingFor, ", ")
		}
		return wv.Message
	}
	return ""
}
