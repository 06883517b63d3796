package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/spf13/cobra"

	"github.com/flotilla-gitops/flotilla/companion"
	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/flotilla-gitops/flotilla/render/sops"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/snapshot"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// hydrateFlags are the flags of `flotilla hydrate`.
type hydrateFlags struct {
	out    *outputFlag
	fleet  *fleetFlags
	limits *limitFlags
	known  *knownClusterFlags

	branch, outDir string
	push           bool
	remote         string
	auth           source.Auth
	revision       string
	repoURL        string
	bootstrap      string
	fluxSecret     string
	flux           companion.FluxOptions
	pushTimeout    time.Duration
	committerName  string
	committerMail  string
	approvals      string
	appsets        bool
	argoNamespace  string
	branchPerWave  bool
	fluxLockdown   bool
}

func newHydrateCmd() *cobra.Command {
	hf := &hydrateFlags{}
	cmd := &cobra.Command{
		Use:   "hydrate [DIR] (--branch B [--push] | --out DIR | --flux-bootstrap CLUSTER --branch B)",
		Short: "Render every cluster into a hydrated branch for Argo CD or Flux to apply",
		Long:  hydrateLong,
		Example: `  # In CI, on every commit to main:
  flotilla hydrate --branch hydrated --push

  # Look at the tree first
  flotilla hydrate --out /tmp/hydrated

  # Once per cluster, in the cluster
  flotilla hydrate --flux-bootstrap prod-eu-1 --branch hydrated | kubectl apply -f -

  # Argo CD instead: the ApplicationSets, with the waves as progressive sync steps
  flotilla hydrate --argocd-applicationsets --branch hydrated | kubectl -n argocd apply -f -`,
		Args: cobra.MaximumNArgs(1),
	}
	hf.out = addOutputFlag(cmd, "text", "json")
	hf.fleet = addFleetFlags(cmd)
	hf.limits = addLimitFlags(cmd, false)
	hf.known = addKnownClusterFlags(cmd)
	addQuietFlag(cmd)
	hf.addFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error { return hf.run(cmd, repoDir(args)) }
	return cmd
}

// addFlags adds hydrate's own flags.
func (hf *hydrateFlags) addFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&hf.branch, "branch", "", "commit the hydrated tree to the `BRANCH` of the local repository")
	fs.StringVar(&hf.outDir, "out", "", "write the hydrated tree into the folder `DIR` instead of a branch")
	fs.BoolVar(&hf.push, "push", false, "with --branch: fetch the branch from --remote first, then push it with its notes")
	fs.StringVar(&hf.remote, "remote", "origin", "the `REMOTE` --push uses")
	addGitAuthFlags(cmd, &hf.auth, "", " for --push")
	fs.DurationVar(&hf.pushTimeout, "push-timeout", 2*time.Minute, "bound of fetching and pushing, retries included")
	fs.StringVar(&hf.revision, "revision", "HEAD", "the source commit to hydrate (a `REF`)")
	fs.StringVar(&hf.repoURL, "repo-url", "", "the source repository's `URL` as recorded in hydrator.metadata, and the URL Flux reads with --flux-bootstrap (default: the origin remote's, without credentials)")
	fs.StringVar(&hf.committerName, "committer-name", "flotilla hydrate", "name on the hydrated commits")
	fs.StringVar(&hf.committerMail, "committer-email", "flotilla@flotilla.dev", "email on the hydrated commits")
	fs.StringVar(&hf.flux.Namespace, "flux-namespace", "flux-system", "namespace of the generated GitRepository and platform Kustomizations")
	fs.StringVar(&hf.flux.SourceName, "flux-source", "flotilla", "name of the GitRepository serving the hydrated branch")
	fs.DurationVar(&hf.flux.Interval, "flux-interval", 10*time.Minute, "reconcile interval of the generated Kustomizations")
	fs.StringVar(&hf.bootstrap, "flux-bootstrap", "", "print the one-time Flux objects for the cluster `NAME` (needs --branch) and exit")
	completeFromFleet(cmd, "flux-bootstrap", completeClusters)
	fs.StringVar(&hf.fluxSecret, "flux-secret", "", "with --flux-bootstrap: the Secret holding Flux's Git credentials")
	fs.BoolVar(&hf.branchPerWave, "branch-per-wave", false, "commit each rollout wave's clusters to a branch of its own, BRANCH-<wave>-next: a GitOps Promoter environment per wave (active branch BRANCH-<wave>)")
	fs.BoolVar(&hf.fluxLockdown, "flux-no-cross-namespace-refs", false, "for Flux run with --no-cross-namespace-refs: give each tenant namespace a GitRepository of the hydrated --branch, read by its Kustomizations")
	fs.BoolVar(&hf.appsets, "argocd-applicationsets", false, "print the Argo CD ApplicationSets that apply the hydrated --branch with the fleet's rollout waves as progressive sync steps, and exit")
	fs.StringVar(&hf.argoNamespace, "argocd-namespace", "argocd", "with --argocd-applicationsets: Argo CD's `NAMESPACE`")
	fs.StringVar(&hf.approvals, "approvals-branch", report.DefaultApprovalsBranch, "branch of the status repository holding rollout approvals (flotilla rollout approve)")
}

// run hydrates, or prints the Flux bootstrap.
func (hf *hydrateFlags) run(cmd *cobra.Command, dir string) error {
	if err := hf.out.validate(); err != nil {
		return err
	}
	if hf.bootstrap != "" {
		if err := hf.knownCluster(cmd, dir); err != nil {
			return err
		}
		return fluxBootstrap(cmd.OutOrStdout(), dir, hf)
	}
	if hf.appsets {
		return hf.applicationSets(cmd, dir)
	}
	switch {
	case hf.branch == "" && hf.outDir == "":
		return errors.New("say where the hydrated tree goes: --branch B (a branch of the local repository, --push to push it) or --out DIR")
	case hf.branch != "" && hf.outDir != "":
		return errors.New("--branch and --out exclude each other")
	case hf.push && hf.branch == "":
		return errors.New("--push pushes the --branch; with --out there is nothing to push")
	case hf.branchPerWave && hf.branch == "":
		return errors.New("--branch-per-wave names the branches after --branch: give --branch B (B-<wave>-next are written)")
	case hf.fluxLockdown && hf.branch == "":
		return errors.New("--flux-no-cross-namespace-refs writes GitRepositories of the hydrated branch: give --branch")
	}
	h, err := hf.hydrate(cmd, dir)
	if err != nil {
		return err
	}
	for _, w := range h.Warnings {
		fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
	}
	for _, p := range h.Problems {
		fmt.Fprintln(cmd.ErrOrStderr(), p)
	}
	summary := hydrateSummary{Source: h.Metadata.DrySHA, Clusters: h.Clusters, Bundles: h.Bundles,
		Renders: h.Renders, Failed: len(h.Problems), Held: h.Gates}
	if hf.branchPerWave {
		summary.Result, summary.Waves, err = hf.writeWaves(cmd, dir, h)
	} else {
		summary.Result, err = hf.write(cmd, dir, h)
	}
	if err != nil {
		return err
	}
	if err := hf.out.write(cmd.OutOrStdout(), summary, func(w io.Writer) error { return summary.text(w, hf) }); err != nil {
		return err
	}
	if len(h.Problems) > 0 {
		return &reportedError{fmt.Errorf("%s failed and kept their last hydrated state", english.Count(len(h.Problems), "bundle or cluster"))}
	}
	return nil
}

// hydrate renders every known cluster (secrets refused: a hydrated branch
// is read by others, so never a decrypted or a masked, unusable secret in
// it).
func (hf *hydrateFlags) hydrate(cmd *cobra.Command, dir string) (*companion.Output, error) {
	hf.limits.sources.Secrets = sops.ModeRefuse
	opts, closeWorkers, err := hf.limits.options(planrender.Options{})
	if err != nil {
		return nil, err
	}
	defer closeWorkers()
	ho := companion.Options{Dir: dir, Path: hf.fleet.path, Revision: hf.revision, RepoURL: hf.repoURL,
		Render: opts, Flux: hf.flux, ApprovalsBranch: hf.approvals, Progress: func(s string) { fmt.Fprintln(progressTo(cmd), s) }}
	if hf.fluxLockdown {
		url, err := hf.hydratedURL(dir, "--flux-no-cross-namespace-refs")
		if err != nil {
			return nil, err
		}
		ho.Flux.TenantSource = &companion.GitSource{URL: url, Branch: hf.branch, SecretName: hf.fluxSecret}
	}
	if ho.Status, err = hf.known.resolve(); err != nil {
		return nil, err
	}
	if err := hf.fleet.startGuard(cmd.Context()); err != nil {
		return nil, err
	}
	tuneGCForBatch()
	defer hf.fleet.stopGuard()
	return companion.Hydrate(cmd.Context(), ho)
}

// waveResult is one wave's branch as --branch-per-wave wrote it.
type waveResult struct {
	Wave   string `json:"wave"`
	Branch string `json:"branch"`
	Active string `json:"activeBranch"`
	*companion.Result
}

// writeWaves commits each wave's clusters to its branch; the result adds
// the waves' up.
func (hf *hydrateFlags) writeWaves(cmd *cobra.Command, dir string, h *companion.Output) (*companion.Result, []waveResult, error) {
	wbs, err := h.WaveBranches(hf.branch)
	if err != nil {
		return nil, nil, err
	}
	total := &companion.Result{}
	var out []waveResult
	for _, wb := range wbs {
		res, err := hf.commit(cmd, dir, wb.Out, wb.Branch)
		if err != nil {
			return nil, nil, fmt.Errorf("wave %s: %w", wb.Wave, err)
		}
		out = append(out, waveResult{Wave: wb.Wave, Branch: wb.Branch, Active: wb.Active, Result: res})
		total.Changed = total.Changed || res.Changed
		total.Pushed = total.Pushed || res.Pushed
		total.Files += res.Files
		total.Added += res.Added
		total.Updated += res.Updated
		total.Removed += res.Removed
	}
	return total, out, nil
}

// write writes the hydrated tree into the folder, or commits it to the
// branch (and pushes it).
func (hf *hydrateFlags) write(cmd *cobra.Command, dir string, h *companion.Output) (*companion.Result, error) {
	if hf.outDir != "" {
		return companion.WriteFolder(h, hf.outDir)
	}
	return hf.commit(cmd, dir, h, hf.branch)
}

// commit commits a hydration to a branch (and pushes it).
func (hf *hydrateFlags) commit(cmd *cobra.Command, dir string, h *companion.Output, branch string) (*companion.Result, error) {
	co := companion.CommitOptions{Branch: branch, Push: hf.push, Remote: hf.remote, Timeout: hf.pushTimeout}
	co.Committer = &object.Signature{Name: hf.committerName, Email: hf.committerMail}
	if hf.push {
		var err error
		if co.Auth, err = hydrateAuth(dir, hf); err != nil {
			return nil, err
		}
	}
	return companion.CommitBranch(cmd.Context(), dir, h, co)
}

// hydrateLong is hydrate's --help.
const hydrateLong = `Render the fleet in DIR at a commit (--revision, default HEAD; read from Git,
not from the work tree) for every cluster it knows — the inventory and every
cluster that reported on a status branch — into one tree that Argo CD or
Flux applies, Flotilla deciding and the other controller applying:

  hydrator.metadata                      the source commit (Argo CD's format)
  clusters/<cluster>/kustomization.yaml  all of the cluster's bundles, in
                                         apply order: kustomize build gives
                                         what flotilla render gives
  clusters/<cluster>/<bundle>/           manifest.yaml, kustomization.yaml,
                                         hydrator.metadata
  clusters/<cluster>/flux/<bundle>.yaml  a Flux Kustomization per bundle
                                         (path, dependsOn, prune, wait,
                                         timeout, serviceAccountName, force;
                                         the rollout wave as labels)
  clusters/<cluster>/argocd/<bundle>.json
                                         Argo CD Git files generator
                                         parameters (cluster, bundle,
                                         namespace, path, wave, labels, facts)

With --branch, the tree is committed to that branch of the local repository
(without checking it out) only when a file changed; a folder's
hydrator.metadata names the source commit that last changed it, the commit
carries the source commit as trailers (Flotilla-Dry-Sha, Flotilla-Dry-Repo),
and the tip gets a note in refs/notes/hydrator.metadata — Argo CD's source
hydrator and GitOps Promoter conventions. --push fetches the branch and
notes from --remote first and pushes both (starting again on the new tip if
another hydration pushed in between). With --out, the tree is written into
a folder instead. Clusters and bundles that are gone are removed.

When the fleet has rollout waves, each cluster is hydrated at the
revision its wave may take now, decided as the agents decide (the status
branches, written by 'agent --observe flux' beside Flux, and the
approvals branch): a later wave keeps what was hydrated for it before
until the earlier waves are Ready and baked and its approval is there,
and nothing reaches it while an earlier wave failed (halted). Run hydrate
on a schedule too, not only on commits, so waves open without a commit.

A bundle that fails to render, or a cluster whose fleet does not evaluate,
keeps what was hydrated for it before (nothing is pruned because something
failed); the others are written and the exit status is 1.

With --flux-no-cross-namespace-refs (Flux run with that lockdown), the
Kustomization of a bundle applied as a ServiceAccount reads a GitRepository
of the hydrated --branch in its own namespace, written beside it.

With --branch-per-wave, each rollout wave's clusters go to a branch of
their own, BRANCH-<wave>-next, each with its root hydrator.metadata and
notes: a GitOps Promoter environment per wave, whose active branch
BRANCH-<wave> the wave's clusters follow.

--flux-bootstrap CLUSTER prints the one-time GitRepository and root
Kustomization that make Flux in that cluster follow its folder of the
hydrated branch, and hydrates nothing.

--argocd-applicationsets prints the Argo CD ApplicationSets that apply the
hydrated branch, one per rollout (the fleet's, and each bundle's own), with
the rollout's waves as progressive sync steps: a step per wave that has
clusters, maxUpdate: 0 for a wave with approve: true, maxUnavailable as
maxUpdate. It hydrates nothing; apply its output again when waves change.`

// hydrateSummary is what hydrate prints.
type hydrateSummary struct {
	*companion.Result
	Source   string `json:"source"`
	Clusters int    `json:"clusters"`
	Bundles  int    `json:"bundles"`
	Renders  int    `json:"renders"`
	Failed   int    `json:"failed"`
	// Held are the clusters and bundles the rollout keeps at what was
	// hydrated for them before.
	Held []companion.Gate `json:"held,omitempty"`
	// Waves are the branches of --branch-per-wave.
	Waves []waveResult `json:"waves,omitempty"`
}

func (s hydrateSummary) text(w io.Writer, hf *hydrateFlags) error {
	where := hf.outDir
	switch {
	case hf.branchPerWave:
		where = "a branch per wave, " + hf.branch + "-<wave>-next"
	case hf.branch != "":
		where = "branch " + hf.branch
	}
	fmt.Fprintf(w, "hydrated %s for %s (%s) from %s into %s\n",
		english.Count(s.Bundles, "bundle"), english.Count(s.Clusters, "cluster"), english.Count(s.Renders, "distinct render"), gitrev.Abbrev(s.Source, gitrev.HydratorLen), where)
	if len(s.Waves) > 0 {
		for _, wr := range s.Waves {
			fmt.Fprintf(w, "wave %s: %s (GitOps Promoter promotes it to %s): ", wr.Wave, wr.Branch, wr.Active)
			if wr.Changed {
				fmt.Fprintf(w, "committed %s: %s added, %d updated, %d removed", gitrev.Abbrev(wr.Commit, gitrev.HydratorLen), english.Count(wr.Added, "file"), wr.Updated, wr.Removed)
			} else {
				fmt.Fprintf(w, "nothing changed")
			}
			fmt.Fprintf(w, "; %s noted on %s\n", gitrev.Abbrev(s.Source, gitrev.HydratorLen), gitrev.Abbrev(wr.Commit, gitrev.HydratorLen))
		}
		s.heldLines(w)
		return nil
	}
	switch {
	case !s.Changed:
		fmt.Fprintf(w, "nothing changed")
	case hf.outDir != "":
		fmt.Fprintf(w, "%s added, %d updated, %d removed", english.Count(s.Added, "file"), s.Updated, s.Removed)
	default:
		fmt.Fprintf(w, "committed %s: %s added, %d updated, %d removed", gitrev.Abbrev(s.Commit, gitrev.HydratorLen), english.Count(s.Added, "file"), s.Updated, s.Removed)
	}
	if hf.branch != "" {
		fmt.Fprintf(w, "; %s noted on %s", gitrev.Abbrev(s.Source, gitrev.HydratorLen), gitrev.Abbrev(s.Commit, gitrev.HydratorLen))
	}
	if s.Pushed {
		fmt.Fprintf(w, "; pushed to %s", hf.remote)
	}
	fmt.Fprintln(w)
	s.heldLines(w)
	return nil
}

// heldLines says what the rollout held.
func (s hydrateSummary) heldLines(w io.Writer) {
	for _, g := range s.Held {
		what := g.Cluster
		if len(g.Bundles) > 0 {
			what += " (" + strings.Join(g.Bundles, ", ") + ")"
		}
		fmt.Fprintf(w, "held at its last hydrated state: %s: %s\n", what, g.Reason)
	}
}

// hydrateAuth is the credentials for --push, for the remote's URL.
func hydrateAuth(dir string, hf *hydrateFlags) (transport.AuthMethod, error) {
	repo, _, err := source.OpenLocal(dir)
	if err != nil {
		return nil, err
	}
	remote, err := repo.Remote(hf.remote)
	if err != nil {
		return nil, fmt.Errorf("--remote %s: %w", hf.remote, err)
	}
	urls := remote.Config().URLs
	if len(urls) == 0 {
		return nil, fmt.Errorf("--remote %s has no URL", hf.remote)
	}
	return hf.auth.Method(urls[0])
}

// knownCluster checks that --flux-bootstrap names a cluster the fleet
// knows — of its inventory at --revision, or reporting on a status branch
// — and names those it knows when not: bootstrapping a misspelt cluster
// would have Flux follow a folder the hydrated branch never holds.
func (hf *hydrateFlags) knownCluster(cmd *cobra.Command, dir string) error {
	repo, err := snapshot.Open(dir)
	if err != nil {
		return nil // not a repository: --repo-url says where (fluxBootstrap asks for it)
	}
	defer repo.Close()
	snap, err := repo.At(hf.revision)
	if err == nil {
		err = snap.Load(fleet.LoadOptions{Path: hf.fleet.path})
	}
	if err != nil {
		return fmt.Errorf("--flux-bootstrap: reading the fleet at %s: %w", hf.revision, err)
	}
	branches, err := hf.known.resolve()
	if err != nil {
		return err
	}
	k, err := repo.Known(cmd.Context(), branches, snap)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(k.Clusters))
	for _, c := range k.Clusters {
		if c.Name == hf.bootstrap {
			return nil
		}
		names = append(names, c.Name)
	}
	if len(names) == 0 {
		return fmt.Errorf("--flux-bootstrap %s: the fleet knows no cluster (no inventory, no status branch)", hf.bootstrap)
	}
	return fmt.Errorf("--flux-bootstrap %s: not a cluster of the fleet at %s; it knows %s", hf.bootstrap, hf.revision, strings.Join(names, ", "))
}

// applicationSets prints the ApplicationSets for the fleet's waves, from
// the plans of every known cluster at --revision.
func (hf *hydrateFlags) applicationSets(cmd *cobra.Command, dir string) error {
	if hf.branch == "" {
		return errors.New("--argocd-applicationsets needs --branch: the hydrated branch Argo CD is to read")
	}
	url, err := hf.hydratedURL(dir, "--argocd-applicationsets")
	if err != nil {
		return err
	}
	ho := companion.Options{Dir: dir, Path: hf.fleet.path, Revision: hf.revision, ApprovalsBranch: hf.approvals, PlanOnly: true}
	if ho.Status, err = hf.known.resolve(); err != nil {
		return err
	}
	h, err := companion.Hydrate(cmd.Context(), ho)
	if err != nil {
		return err
	}
	for _, p := range h.Problems {
		fmt.Fprintln(cmd.ErrOrStderr(), "warning:", p, "(its waves may be missing)")
	}
	data, err := companion.ApplicationSets(h.Rollouts, companion.ApplicationSetOptions{RepoURL: url, Branch: hf.branch, Namespace: hf.argoNamespace})
	if err != nil {
		return err
	}
	_, err = cmd.OutOrStdout().Write(data)
	return err
}

// hydratedURL is the URL the hydrated branch is read from: --repo-url, or
// the --remote's.
func (hf *hydrateFlags) hydratedURL(dir, flag string) (string, error) {
	if hf.repoURL != "" {
		return hf.repoURL, nil
	}
	repo, _, err := source.OpenLocal(dir)
	if err != nil {
		return "", fmt.Errorf("%s needs the repository's URL: give --repo-url, or run it in the fleet's repository: %w", flag, err)
	}
	url := companion.RemoteURL(repo, hf.remote)
	if url == "" {
		return "", fmt.Errorf("the repository has no remote %s: give --repo-url, the URL the hydrated branch is read from", hf.remote)
	}
	return url, nil
}

// fluxBootstrap prints the one-time Flux objects of a cluster.
func fluxBootstrap(w io.Writer, dir string, hf *hydrateFlags) error {
	if hf.branch == "" {
		return errors.New("--flux-bootstrap needs --branch: the hydrated branch Flux is to follow")
	}
	if err := report.ValidateClusterName(hf.bootstrap); err != nil {
		return fmt.Errorf("--flux-bootstrap: %w", err)
	}
	url, err := hf.hydratedURL(dir, "--flux-bootstrap")
	if err != nil {
		return err
	}
	data, err := companion.FluxBootstrap(hf.bootstrap, companion.BootstrapOptions{FluxOptions: hf.flux, URL: url, Branch: hf.branch, SecretName: hf.fluxSecret})
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}
