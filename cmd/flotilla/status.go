package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// statusFlags are the flags of `flotilla status`.
type statusFlags struct {
	repo   string
	prefix string
	// legacyBranch is the flag --status-prefix replaced; set, it explains.
	legacyBranch string
	tip          string
	fleetRepo    string
	approvals    string
	auth         source.Auth
	cluster      string
	stale        time.Duration
	wait         bool
	revision     string
	timeout      time.Duration
	every        time.Duration
	// The filters of the fleet view.
	phases, waves, regions, bundles []string
	selector                        string
	// history is how many of --cluster's last reports to show.
	history int
	// lastTip and lastTipTime remember the tip's commit time: status serve
	// asks for the tip every interval, and fetches its commit only when
	// it moved.
	lastTip     string
	lastTipTime time.Time
	// invariants: check the fleet's invariants over what runs; ff locates
	// the fleet and bounds its evaluation; invFleet is the fleet read at
	// invTip.
	invariants bool
	ff         *fleetFlags
	invFleet   *fleet.Fleet
	invTip     string
	hist       *source.History
}

// statusLong is the command's --help.
const statusLong = `Read the status branches the agents write (one per cluster,
flotilla/status/<cluster>, all read with one ls-remote and one fetch) and
show the fleet, what a person asks first at the top:

  - the rollout's pause and holds (flotilla rollout pause, hold), first,
    then the fleet's invariants that what the clusters run now breaks
    (the fleet read at the --branch tip; --invariants=false skips it);
  - how many clusters are Failed, RolledBack, Stale (silent for longer than
    --stale), Progressing, Waiting and Ready;
  - how far the fleet tip has gone: Ready on how many clusters, and how
    long since it was committed (until the last cluster was Ready);
  - when the fleet has rollout waves, the rollout of the tip: per wave,
    clusters Ready at it over total, and whether it is done, baking (until
    when), waiting (for whom), halted (by whom) or failed;
  - each distinct problem once, with how many clusters and which bundles
    have it (a cluster's own name in a message reads <cluster>);
  - then a line per cluster, failed and stale ones first: region, wave,
    phase, the revision it applied against the tip, bundles ready out of
    total, and how long ago it reported.

--phase, --wave, --region, --bundle and --selector narrow the clusters
(the summary counts the ones left). --cluster NAME shows one cluster's
bundles and errors. -o html writes a self-contained page of the same view
— counts, rollout, problems, a bundle × phase table, and every cluster
with filters, a search box and a detail view — that opens without a server.

--wait --revision SHA blocks until every reporting cluster has applied that
revision and is Ready (exit 0), or one failed at it or its rollout halted,
or --timeout passes (exit 1): a CI job can gate on a rollout.`

func newStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status [--repo URL] [--cluster NAME] [--wait --revision SHA]",
		Short: "Show the fleet's state from the clusters' status branches",
		Long:  statusLong,
		Example: `  flotilla status
  flotilla status --repo https://git.example.com/platform/fleet.git
  flotilla status --repo ../fleet --phase Failed,Stale --region eu-west-1
  flotilla status --repo ../fleet --bundle web --selector tier=prod
  flotilla status --repo ../fleet -o html > status.html
  flotilla status --repo ../fleet --cluster prod-eu-1
  flotilla status --repo ../fleet --cluster prod-eu-1 --history 10
  flotilla status --repo $REPO --wait --revision $(git rev-parse HEAD) --timeout 15m`,
		Args: cobra.NoArgs,
	}
	out := addOutputFlag(cmd, "text", "wide", "json", "yaml", "html").alias("table", "text")
	sf := &statusFlags{}
	sf.addReadFlags(cmd)
	fs := cmd.Flags()
	fs.StringVar(&sf.cluster, "cluster", "", "show the bundles and errors of the cluster `NAME`")
	completeFromFleet(cmd, "cluster", completeClusters)
	fs.IntVar(&sf.history, "history", 0, fmt.Sprintf("with --cluster: its last `N` reports, from its status branch (at most %d)", report.MaxHistory))
	fs.StringSliceVar(&sf.phases, "phase", nil, "show only clusters in these `PHASES`: Failed, RolledBack, Stale, Progressing, Waiting, Ready")
	_ = cmd.RegisterFlagCompletionFunc("phase", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var names []string
		for _, s := range report.Standings {
			names = append(names, string(s))
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	})
	fs.StringSliceVar(&sf.waves, "wave", nil, "show only clusters in these rollout `WAVES`")
	fs.StringSliceVar(&sf.regions, "region", nil, "show only clusters in these `REGIONS`")
	fs.StringSliceVar(&sf.bundles, "bundle", nil, "show only clusters that have one of these `BUNDLES`")
	fs.StringVarP(&sf.selector, "selector", "l", "", "show only clusters whose labels match this label `SELECTOR` (tier=prod,team!=data)")
	fs.BoolVar(&sf.wait, "wait", false, "wait until every cluster reports --revision Ready")
	fs.StringVar(&sf.revision, "revision", "", "the revision to wait for (the full hash, `SHA`)")
	fs.DurationVar(&sf.timeout, "timeout", 10*time.Minute, "how long --wait waits")
	addQuietFlag(cmd)
	fs.DurationVar(&sf.every, "poll", 5*time.Second, "how often --wait reads the status branch")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return sf.run(cmd, out) }
	cmd.AddCommand(newStatusServeCmd())
	return cmd
}

// addReadFlags registers where the status branches are read from, and
// when a cluster is stale: the flags status and status serve share.
func (sf *statusFlags) addReadFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&sf.repo, "repo", "", "repository of the status branches (`URL` or local path; default: inside a fleet checkout, its status branches as last fetched, or else its origin)")
	fs.StringVar(&sf.prefix, "status-prefix", report.DefaultPrefix, "prefix of the status branches (each cluster's is PREFIX/<cluster>)")
	fs.StringVar(&sf.legacyBranch, "status-branch", "", "replaced by --status-prefix")
	_ = fs.MarkHidden("status-branch")
	fs.StringVar(&sf.tip, "branch", "main", "the fleet `BRANCH` whose tip the applied revisions are compared with")
	fs.StringVar(&sf.fleetRepo, "fleet-repo", "", "the fleet repository, a `URL` or local path, when the status branches are in a repository of their own: the --branch tip, the invariants and the approvals branch are read from it, with the same credentials (default: --repo)")
	addGitAuthFlags(cmd, &sf.auth, "", "")
	fs.DurationVar(&sf.stale, "stale", 30*time.Minute, "count clusters that have not reported for this long as Stale")
	fs.StringVar(&sf.approvals, "approvals-branch", report.DefaultApprovalsBranch, "branch holding the rollout's approvals, pause and holds")
	fs.BoolVar(&sf.invariants, "invariants", true, "check the fleet's invariants (at the --branch tip) over what the clusters run now")
	sf.ff = addFleetFlags(cmd) // --path and the bounds of reading the fleet's invariants
}

// run shows the fleet, one cluster, or waits for a revision.
func (sf *statusFlags) run(cmd *cobra.Command, out *outputFlag) error {
	if err := out.validate(); err != nil {
		return err
	}
	if sf.legacyBranch != "" {
		return errors.New("--status-branch was replaced by --status-prefix: each cluster reports on its own branch, PREFIX/<cluster>")
	}
	var local *report.Snapshot
	if sf.repo == "" {
		var err error
		if local, err = sf.fromCheckout(progressTo(cmd), sf.wait || sf.cluster != ""); err != nil {
			return err
		}
	}
	sf.repo = repoURL(sf.repo)
	auth, err := sf.auth.Method(sf.repo)
	if err != nil {
		return err
	}
	if sf.wait {
		return sf.waitFor(cmd.Context(), progressTo(cmd), auth)
	}
	if sf.cluster != "" && sf.history > 0 {
		return sf.writeHistory(cmd, out, auth)
	}
	if sf.cluster != "" {
		st, err := report.ReadCluster(cmd.Context(), sf.repo, sf.prefix, sf.cluster, auth)
		if err != nil {
			return err
		}
		return out.write(cmd.OutOrStdout(), st, func(w io.Writer) error { return writeClusterStatus(w, *st) })
	}
	snap := local
	if snap == nil {
		if snap, err = report.Read(cmd.Context(), sf.repo, sf.prefix, auth); err != nil {
			return err
		}
	}
	for _, p := range snap.Problems {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: %v\n", p)
	}
	filter, err := sf.filter()
	if err != nil {
		return err
	}
	now := time.Now()
	opts := sf.viewOptions(cmd.Context(), cmd.ErrOrStderr(), auth, now)
	opts.Invariants = sf.invariantsNow(cmd.Context(), cmd.ErrOrStderr(), snap.Statuses, opts.Tip, now)
	statuses := filter.Apply(snap.Statuses, now, sf.stale)
	report.SortForView(statuses, now, sf.stale)
	view := report.NewFleetView(statuses, opts)
	if out.format == "html" {
		return writeStatusHTML(cmd.OutOrStdout(), statusPageOf(statuses, view, opts))
	}
	doc := fleetStatus{Tip: opts.Tip, Summary: view, Clusters: statuses, Rollout: view.Rollout}
	if doc.Clusters == nil {
		doc.Clusters = []report.Status{}
	}
	return out.write(cmd.OutOrStdout(), doc, func(w io.Writer) error {
		if len(snap.Statuses) == 0 {
			return writeFleetStatus(w, nil, "", sf.stale, now, false)
		}
		if view.Controls != nil {
			writeControls(w, *view.Controls)
		}
		for _, b := range view.Invariants {
			fmt.Fprintf(w, "BROKEN %s\n", oneLine(errtext.Clean(b)))
		}
		if err := writeSummary(w, view, len(snap.Statuses), !filter.Empty()); err != nil {
			return err
		}
		return writeFleetStatus(w, statuses, opts.Tip, sf.stale, now, out.format == "wide")
	})
}

// filter is the fleet view's filter the flags ask for.
func (sf *statusFlags) filter() (report.Filter, error) {
	f := report.Filter{Waves: sf.waves, Regions: sf.regions, Bundles: sf.bundles}
	for _, p := range sf.phases {
		i := slices.IndexFunc(report.Standings, func(s report.Standing) bool { return strings.EqualFold(string(s), p) })
		if i < 0 {
			var names []string
			for _, s := range report.Standings {
				names = append(names, string(s))
			}
			return f, fmt.Errorf("--phase %q: a cluster's phase is one of %s", p, strings.Join(names, ", "))
		}
		f.Standings = append(f.Standings, report.Standings[i])
	}
	if sf.selector != "" {
		sel, err := labels.Parse(sf.selector)
		if err != nil {
			return f, fmt.Errorf("--selector: %w", err)
		}
		f.Selector = sel
	}
	return f, nil
}

// fromCheckout is where status reads without --repo, inside a fleet
// checkout: its status branches as last fetched (refs/heads/PREFIX/* or a
// remote's, as preview reads them), when it has any and live (--wait,
// --cluster) is not asked for; else its origin, which the agents push to;
// else the checkout itself. It says which on stderr (a URL's credentials
// redacted).
func (sf *statusFlags) fromCheckout(stderr io.Writer, live bool) (*report.Snapshot, error) {
	repo, _, err := source.OpenLocal(findRepoDir())
	if err != nil {
		return nil, errors.New("--repo is required outside a fleet checkout: the repository the agents report to (URL or local path)")
	}
	if !live {
		if snap, err := report.ReadRepository(repo, sf.prefix); err == nil && len(snap.Statuses)+len(snap.Problems) > 0 {
			fmt.Fprintln(stderr, "note: the status branches of this checkout, as last fetched "+
				"(git fetch origin 'refs/heads/"+sf.prefix+"/*:refs/remotes/origin/"+sf.prefix+"/*' updates them; --repo URL reads the server's)")
			if wt, err := repo.Worktree(); err == nil {
				sf.repo = wt.Filesystem.Root() // for the fleet branch's tip
			}
			return snap, nil
		}
	}
	if remote, err := repo.Remote("origin"); err == nil && len(remote.Config().URLs) > 0 {
		sf.repo = remote.Config().URLs[0]
	} else if wt, err := repo.Worktree(); err == nil {
		sf.repo = wt.Filesystem.Root()
	}
	fmt.Fprintf(stderr, "reading the status branches of %s\n", source.RedactURL(sf.repo))
	return nil, nil
}

// fleetStatus is `status -o json`: the fleet tip, every cluster's status,
// and the rollout of the tip when the fleet has waves.
type fleetStatus struct {
	Tip string `json:"tip,omitempty"`
	// Summary is the fleet view of the clusters listed.
	Summary  *report.FleetView   `json:"summary"`
	Clusters []report.Status     `json:"clusters"`
	Rollout  *report.RolloutView `json:"rollout,omitempty"`
}

// viewOptions are the fleet view's: now, when a cluster is stale, the
// fleet tip, and the pause and holds on the approvals branch (a failed
// read of those is a warning).
func (sf *statusFlags) viewOptions(ctx context.Context, warn io.Writer, auth transport.AuthMethod, now time.Time) report.ViewOptions {
	opts := report.ViewOptions{Now: now, Stale: sf.stale}
	opts.Tip, opts.TipTime = sf.fleetTip(ctx)
	fleetAuth, _ := sf.auth.Method(sf.fleetURL())
	if cb, err := report.ReadControlBranchOf(ctx, sf.approvals, report.Remote{URL: sf.fleetURL(), Auth: fleetAuth}, report.Remote{URL: sf.repo, Auth: auth}); err != nil {
		fmt.Fprintf(warn, "warning: the rollout's pause and holds are not shown: %s\n", errtext.Error(err))
	} else {
		opts.Controls = &cb.Controls
	}
	return opts
}

// fleetURL is the fleet repository: --fleet-repo, or the status branches'.
func (sf *statusFlags) fleetURL() string {
	if sf.fleetRepo != "" {
		return repoURL(sf.fleetRepo)
	}
	return sf.repo
}

// fleetTip is the fleet branch's tip and when it was committed: "" when it
// cannot be asked, a zero time when its commit cannot be read.
func (sf *statusFlags) fleetTip(ctx context.Context) (string, time.Time) {
	src, err := source.New(source.Options{URL: sf.fleetURL(), Branch: sf.tip, Auth: sf.auth})
	if err != nil {
		return "", time.Time{}
	}
	tip, err := src.Head(ctx)
	if err != nil {
		return "", time.Time{}
	}
	if tip != sf.lastTip {
		when, err := src.HeadTime(ctx, tip)
		if err != nil {
			return tip, time.Time{} // asked again next time
		}
		sf.lastTip, sf.lastTipTime = tip, when
	}
	return tip, sf.lastTipTime
}

// waitFor polls the status branch until every cluster applied the revision
// and is Ready.
func (sf *statusFlags) waitFor(ctx context.Context, stderr io.Writer, auth transport.AuthMethod) error {
	if len(sf.revision) != 40 {
		return errors.New("--wait needs --revision with a full 40-character hash")
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, sf.timeout)
	defer cancel()
	ticker := time.NewTicker(sf.every)
	defer ticker.Stop()
	waiting, said := "", ""
	reader := report.NewReader(sf.repo, sf.prefix, auth) // each poll fetches what moved
	for {
		snap, err := reader.Read(ctx)
		switch {
		case ctx.Err() != nil:
			// Ended while reading: keep what was known.
		case err != nil:
			waiting = err.Error()
		case len(snap.Statuses) == 0:
			waiting = "no cluster has reported yet"
		default:
			statuses := snap.Statuses
			pending, failed := report.Progress(statuses, sf.revision)
			if len(failed) > 0 {
				return fmt.Errorf("revision %s failed on %s", short(sf.revision), strings.Join(failed, ", "))
			}
			if len(pending) == 0 {
				fmt.Fprintf(stderr, "revision %s is Ready on %s\n", short(sf.revision), english.Count(len(statuses), "cluster"))
				return nil
			}
			waiting = "pending: " + strings.Join(pending, ", ")
		}
		if waiting != said {
			fmt.Fprintf(stderr, "waiting for revision %s: %s\n", short(sf.revision), waiting)
			said = waiting
		}
		select {
		case <-ctx.Done():
			if parent.Err() != nil {
				return fmt.Errorf("waiting for revision %s (%s): %w", short(sf.revision), waiting, context.Cause(parent))
			}
			return fmt.Errorf("revision %s not Ready everywhere within %s (%s)", short(sf.revision), sf.timeout, waiting)
		case <-ticker.C:
		}
	}
}

// writeFleetStatus prints one line per cluster; wide adds what a person
// digging in asks next: the revision seen, the agent's version, the labels.
func writeFleetStatus(w io.Writer, statuses []report.Status, tip string, stale time.Duration, now time.Time, wide bool) error {
	if len(statuses) == 0 {
		_, err := fmt.Fprintln(w, "no cluster has reported yet")
		return err
	}
	waves := slices.ContainsFunc(statuses, func(st report.Status) bool { return st.Wave != "" })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := []string{"CLUSTER", "REGION"}
	if waves {
		header = append(header, "WAVE")
	}
	header = append(header, "PHASE", "APPLIED", "BUNDLES", "REPORTED")
	if wide {
		header = append(header, "SEEN", "AGENT", "LABELS")
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, st := range statuses {
		st = cleanStatus(st)
		applied := short(st.AppliedRevision)
		if tip != "" && st.AppliedRevision != tip {
			applied += " (tip " + short(tip) + ")"
		}
		ready := 0
		for _, b := range st.Bundles {
			if b.Phase == apply.PhaseReady {
				ready++
			}
		}
		age := now.Sub(st.ReportedAt).Round(time.Second)
		reported := age.String() + " ago"
		if age > stale {
			reported += " STALE"
		}
		row := []string{st.Cluster.Name, dash(st.Cluster.Region)}
		if waves {
			row = append(row, dash(st.Wave))
		}
		row = append(row, string(st.Phase), applied, fmt.Sprintf("%d/%d", ready, len(st.Bundles)), reported)
		if wide {
			row = append(row, dash(short(st.SeenRevision)), dash(st.Agent), dash(errtext.Clean(fleet.LabelString(st.Cluster.Labels))))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// writeHistory prints a cluster's last reports, newest first; reports
// that say the same in a row (heartbeats) are one line.
func (sf *statusFlags) writeHistory(cmd *cobra.Command, out *outputFlag, auth transport.AuthMethod) error {
	if sf.history > report.MaxHistory {
		return fmt.Errorf("--history: at most %d", report.MaxHistory)
	}
	reports, err := report.ReadHistory(cmd.Context(), sf.repo, sf.prefix, sf.cluster, sf.history, auth)
	if err != nil {
		return err
	}
	return out.write(cmd.OutOrStdout(), reports, func(w io.Writer) error {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "REPORTED\tREPORTS\tPHASE\tAPPLIED\tSEEN\tBUNDLES\tMESSAGE")
		for _, r := range historyRows(reports) {
			msg := r.Message
			if msg == "" {
				msg, _, _ = strings.Cut(r.NotReadyText, "\n")
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d/%d\t%s\n", r.To.UTC().Format(time.RFC3339), r.Count, r.Phase, dash(r.Applied), dash(r.Seen),
				r.Ready, r.Total, oneLine(msg))
		}
		return tw.Flush()
	})
}

// maxNamed is how many clusters a line of the summary names before it
// counts the rest.
const maxNamed = 8

// writeSummary prints the fleet view above the table: counts by phase, the
// tip's progress, the rollout, and each distinct problem once.
func writeSummary(w io.Writer, v *report.FleetView, all int, filtered bool) error {
	var counts []string
	for _, c := range v.Counts {
		if c.Count > 0 || c.Standing == report.StandingFailed || c.Standing == report.StandingReady {
			counts = append(counts, fmt.Sprintf("%d %s", c.Count, errtext.Clean(string(c.Standing))))
		}
	}
	of := english.Count(v.Clusters, "cluster")
	if filtered {
		of = fmt.Sprintf("%d of %s (filtered)", v.Clusters, english.Count(all, "cluster"))
	}
	fmt.Fprintf(w, "%s: %s\n", of, strings.Join(counts, ", "))
	if t := v.Tip; t != nil {
		line := fmt.Sprintf("fleet tip %s: Ready on %d of %s", short(t.Revision), t.Ready, english.Count(t.Total, "cluster"))
		if t.Committed != nil {
			line += fmt.Sprintf(", committed %s", t.Committed.Format("2006-01-02 15:04 MST"))
			if t.Done {
				line += fmt.Sprintf(", all Ready %s after", t.Took)
			} else {
				line += fmt.Sprintf(", %s so far", t.Took)
			}
		}
		fmt.Fprintln(w, line)
	}
	if v.Rollout != nil {
		if err := writeRollout(w, v.Rollout); err != nil {
			return err
		}
	}
	if len(v.Problems) > 0 {
		fmt.Fprintf(w, "\n%s:\n", english.Count(len(v.Problems), "distinct problem"))
		for _, g := range v.Problems {
			where := english.Count(len(g.Clusters), "cluster")
			if len(g.Bundles) > 0 {
				where += ", " + english.Noun(len(g.Bundles), "bundle") + " " + errtext.Clean(english.Names(g.Bundles, maxNamed))
			}
			fmt.Fprintf(w, "  %s on %s: %s\n", errtext.Clean(string(g.Standing)), where, oneLine(errtext.Clean(g.Message)))
			fmt.Fprintf(w, "    %s\n", errtext.Clean(english.Names(g.Clusters, maxNamed)))
		}
	}
	fmt.Fprintln(w)
	return nil
}

// writeClusterStatus prints one cluster's bundles and errors.
func writeClusterStatus(w io.Writer, st report.Status) error {
	st = cleanStatus(st)
	fmt.Fprintf(w, "cluster %s  region %s  phase %s  applied %s  seen %s  agent %s\n",
		st.Cluster.Name, dash(st.Cluster.Region), st.Phase, short(st.AppliedRevision), short(st.SeenRevision), st.Agent)
	if st.Wave != "" || st.ReadySince != nil {
		var parts []string
		if st.Wave != "" {
			parts = append(parts, "wave "+st.Wave)
		}
		if st.ReadySince != nil {
			parts = append(parts, "Ready since "+st.ReadySince.UTC().Format(time.RFC3339))
		}
		fmt.Fprintf(w, "  %s\n", strings.Join(parts, ", "))
	}
	if r := st.Rollout; r != nil && len(r.Waves) > 0 {
		fmt.Fprintf(w, "  rollout of %s: %s (%s)\n", short(r.Revision), r.State, oneLine(errtext.Clean(r.Message)))
	}
	if st.Message != "" {
		fmt.Fprintf(w, "  %s\n", st.Message)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BUNDLE\tPHASE\tCREATED\tCONFIGURED\tDELETED\tDRIFTED\tSINCE\tMESSAGE")
	for _, b := range st.Bundles {
		c := b.Counts
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", errtext.Clean(b.Name), errtext.Clean(string(b.Phase)), c.Created, c.Configured, c.Deleted, c.Drifted,
			b.LastTransitionTime.UTC().Format(time.RFC3339), oneLine(errtext.Clean(b.Message)))
	}
	return tw.Flush()
}

// cleanStatus is a status file's text as a terminal may show it: any agent
// can write a status branch, so its strings may hold escape sequences that
// rewrite a terminal, or megabytes (errtext.Clean: none, and bounded).
func cleanStatus(st report.Status) report.Status {
	for _, p := range []*string{&st.Cluster.Name, &st.Cluster.Region, &st.Agent, &st.Wave, &st.Message, &st.AppliedRevision, &st.SeenRevision} {
		*p = errtext.Clean(*p)
	}
	st.Phase = report.ClusterPhase(errtext.Clean(string(st.Phase)))
	return st
}

// short is a revision in a table: "-" for none.
func short(rev string) string { return dash(gitrev.Short(rev)) }

// absPath makes a local path absolute for a file:// URL.
func absPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}
