package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// explainFlags are the flags of `flotilla rollout explain`.
type explainFlags struct {
	repo, fleetRepo, prefix, approvals string
	auth                               source.Auth
	cluster, revision                  string
	depth                              int
}

func newRolloutExplainCmd() *cobra.Command {
	ef := &explainFlags{}
	cmd := &cobra.Command{
		Use:   "explain --repo URL --cluster NAME --revision SHA",
		Short: "Say why a cluster applied, waited for or rolled back a revision, from Git alone",
		Long: `Replay one cluster's part in the rollout of one revision from its status
branch's history (each report is a commit) and the approvals branch's
(approvals, pauses and holds, each a commit with its author): when the
cluster first saw the revision, every change of what its gate said (whom
the wave waited for, the bake's end, an approval awaited, a halt, a pause
or hold and who set it), when it applied the revision and became Ready —
or failed and rolled back, and why — and the approvals and controls made
meanwhile. An incident review needs nothing but the repository.

--revision takes a full hash or a prefix of a revision the cluster reported.
--depth bounds how many of the cluster's reports are read (heartbeats
included); an older revision may need more.`,
		Example: `  flotilla rollout explain --repo https://git.example.com/platform/fleet.git \
    --cluster prod-eu-1 --revision 3f2a9c1`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&ef.repo, "repo", "", "repository of the status branches (`URL` or local path)")
	fs.StringVar(&ef.fleetRepo, "fleet-repo", "", "the fleet repository (`URL` or local path), when the status branches are in a repository of their own: the approvals branch is read from it when it has one, with the same credentials (default: --repo)")
	fs.StringVar(&ef.prefix, "status-prefix", report.DefaultPrefix, "prefix of the status branches")
	fs.StringVar(&ef.approvals, "approvals-branch", report.DefaultApprovalsBranch, "branch holding the approvals and controls")
	addGitAuthFlags(cmd, &ef.auth, "", "")
	fs.StringVar(&ef.cluster, "cluster", "", "the cluster `NAME`")
	fs.StringVar(&ef.revision, "revision", "", "the revision (full hash or a reported prefix: `SHA`)")
	fs.IntVar(&ef.depth, "depth", 300, fmt.Sprintf("read the cluster's last `N` reports (at most %d)", report.MaxHistory))
	completeFromFleet(cmd, "cluster", completeClusters)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if ef.repo == "" || ef.cluster == "" || ef.revision == "" {
			return errors.New("--repo, --cluster and --revision are required")
		}
		if ef.depth < 1 || ef.depth > report.MaxHistory {
			return fmt.Errorf("--depth must be between 1 and %d", report.MaxHistory)
		}
		repo := repoURL(ef.repo)
		auth, err := ef.auth.Method(repo)
		if err != nil {
			return err
		}
		hist, err := report.ReadHistory(cmd.Context(), repo, ef.prefix, ef.cluster, ef.depth, auth)
		if err != nil {
			return err
		}
		slices.Reverse(hist) // oldest first
		revision, err := resolveRevision(ef.revision, hist)
		if err != nil {
			return err
		}
		fleetRepo := repo
		if ef.fleetRepo != "" {
			fleetRepo = repoURL(ef.fleetRepo)
		}
		fleetAuth, err := ef.auth.Method(fleetRepo)
		if err != nil {
			return err
		}
		controls, err := report.ReadControlHistoryOf(cmd.Context(), ef.approvals, report.MaxHistory,
			report.Remote{URL: fleetRepo, Auth: fleetAuth}, report.Remote{URL: repo, Auth: auth})
		if err != nil {
			return err
		}
		return writeExplanation(cmd.OutOrStdout(), ef.cluster, revision, hist, controls)
	}
	return cmd
}

// event is one line of an explanation.
type event struct {
	at   time.Time
	what string
}

// writeExplanation replays the cluster's reports about revision (oldest
// first) and the approvals branch's commits meanwhile, and sums it up.
func writeExplanation(w io.Writer, cluster, revision string, hist []report.Status, controls []report.ControlCommit) error {
	rev := gitrev.Short(revision)
	var events []event
	var first, last *report.Status
	lastKey := ""
	for i := range hist {
		st := &hist[i]
		if !about(st, revision) {
			if first != nil && st.SeenRevision != revision && st.SeenRevision != "" {
				events = append(events, event{st.ReportedAt, fmt.Sprintf("saw %s: %s is superseded", gitrev.Short(st.SeenRevision), rev)})
				break
			}
			continue
		}
		if first == nil {
			first = st
			events = append(events, event{st.ReportedAt, "saw " + rev})
		}
		last = st
		line := gateLine(st, revision)
		if line != lastKey {
			events = append(events, event{st.ReportedAt, line})
			lastKey = line
		}
	}
	if first == nil {
		if len(hist) == 0 {
			return fmt.Errorf("cluster %s has no report", cluster)
		}
		return fmt.Errorf("cluster %s reports nothing about %s in its last %d reports (since %s): try a larger --depth",
			cluster, rev, len(hist), hist[0].ReportedAt.UTC().Format(time.RFC3339))
	}
	events = append(events, controlEvents(controls, cluster, revision, first.ReportedAt, last.ReportedAt)...)
	slices.SortStableFunc(events, func(a, b event) int { return a.at.Compare(b.at) })

	fmt.Fprintf(w, "cluster %s and revision %s", errtext.Clean(cluster), rev)
	if first.Wave != "" {
		fmt.Fprintf(w, " (wave %s)", errtext.Clean(first.Wave))
	}
	fmt.Fprintln(w, ":")
	for _, e := range events {
		fmt.Fprintf(w, "  %s  %s\n", e.at.UTC().Format(time.RFC3339), oneLine(errtext.Clean(e.what)))
	}
	fmt.Fprintf(w, "in short: %s\n", oneLine(errtext.Clean(summary(last, revision))))
	return nil
}

// about reports whether a report is about the revision: it saw it as the
// tip, applied it, or a bundle went back from it.
func about(st *report.Status, revision string) bool {
	if st.SeenRevision == revision || st.AppliedRevision == revision {
		return true
	}
	return slices.ContainsFunc(st.Bundles, func(b report.BundleStatus) bool { return b.RolledBack == revision })
}

// gateLine says where a report stands with the revision.
func gateLine(st *report.Status, revision string) string {
	r := st.Rollout
	switch {
	case r != nil && r.Revision == revision && r.State == report.RolloutRolledBack:
		return "RolledBack: " + r.Message
	case st.Phase == report.ClusterFailed:
		return "Failed: " + st.Message + failedBundles(st)
	case st.AppliedRevision == revision && st.Phase == report.ClusterReady:
		return "applied; Ready"
	case st.AppliedRevision == revision:
		return fmt.Sprintf("applied; %s%s", st.Phase, failedBundles(st))
	case r != nil && r.Revision == revision && r.State != report.RolloutApplied:
		s := string(r.State)
		if string(st.Phase) != s {
			s += " (" + string(st.Phase) + ")"
		}
		s += ": " + r.Message
		if r.AwaitsApproval {
			s += " [awaits an approval]"
		}
		return s
	}
	return fmt.Sprintf("%s: applying", st.Phase)
}

// failedBundles names the bundles not Ready, with their messages.
func failedBundles(st *report.Status) string {
	var out []string
	for _, b := range st.Bundles {
		if b.Phase != "Ready" && b.Phase != "Pruned" {
			out = append(out, fmt.Sprintf("%s %s: %s", b.Name, b.Phase, b.Message))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return " — " + strings.Join(out, "; ")
}

// controlEvents are the approvals of the revision, and the pauses, holds
// and their ends that concern the cluster between from and to — with the
// last one before from when it was still in effect then: it is why the
// cluster waited. commits are newest first.
func controlEvents(commits []report.ControlCommit, cluster, revision string, from, to time.Time) []event {
	var out []event
	approved := map[string]bool{}
	before := false
	for _, c := range commits {
		for _, a := range c.Branch.Approvals {
			if key := a.Wave + "\x00" + a.By; a.Revision == revision && !approved[key] {
				approved[key] = true
				what := fmt.Sprintf("wave %s approved by %s", a.Wave, a.By)
				if a.Message != "" {
					what += ": " + a.Message
				}
				out = append(out, event{a.At, what})
			}
		}
		subject := firstLine(c.Message)
		control := strings.HasPrefix(subject, "rollout: ") && !strings.HasPrefix(subject, "rollout: approve")
		if !control || (strings.Contains(subject, " cluster ") && !strings.HasSuffix(subject, " cluster "+cluster)) {
			continue
		}
		switch {
		case c.At.After(to):
		case c.At.After(from):
			out = append(out, event{c.At, subject + " by " + c.By + body(c.Message)})
		case !before:
			before = true
			if pause, holds := c.Branch.Controls.Active(cluster, from); pause != nil || len(holds) > 0 {
				out = append(out, event{c.At, subject + " by " + c.By + body(c.Message) + " (in effect when the cluster saw it)"})
			}
		}
	}
	return out
}

// body is a commit message's body (its reason), on one line.
func body(msg string) string {
	_, rest, _ := strings.Cut(strings.TrimSpace(msg), "\n")
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(rest), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.Contains(l, "-By: ") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return ": " + strings.Join(lines, " ")
}

// summary says in a sentence how the cluster's part ended.
func summary(st *report.Status, revision string) string {
	rev := gitrev.Short(revision)
	r := st.Rollout
	switch {
	case r != nil && r.Revision == revision && r.State == report.RolloutRolledBack:
		return fmt.Sprintf("%s took %s and rolled back (%s)", st.Cluster.Name, rev, r.Message)
	case st.AppliedRevision == revision && st.Phase == report.ClusterReady:
		return fmt.Sprintf("%s applied %s and is Ready at it", st.Cluster.Name, rev)
	case st.Phase == report.ClusterFailed:
		return fmt.Sprintf("%s failed at %s: %s", st.Cluster.Name, rev, st.Message)
	case st.SeenRevision != revision:
		return fmt.Sprintf("%s moved on to %s", st.Cluster.Name, gitrev.Short(st.SeenRevision))
	case r != nil && r.State != report.RolloutApplied:
		return fmt.Sprintf("%s has not applied %s: %s", st.Cluster.Name, rev, r.Message)
	}
	return fmt.Sprintf("%s is %s at %s", st.Cluster.Name, st.Phase, rev)
}
