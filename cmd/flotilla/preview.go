package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flotilla-gitops/flotilla/preview"
	"github.com/flotilla-gitops/flotilla/render/sops"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
)

// Exit statuses of preview, as diff(1)'s.
const (
	exitPreviewChanges = 1
	exitPreviewTrouble = 2
)

// previewFlags are the flags of `flotilla preview`.
type previewFlags struct {
	base, head string
	clusters   []string
	bundles    []string
}

// previewLong is the command's --help.
const previewLong = `Compare the fleet at --base with the fleet at --head (default: the work tree
as it is) for every cluster the fleet knows: the inventories at both
revisions and every cluster that reported on a status branch, with its real
labels and facts (--status-repo URL, or the local repository's own status
branches — refs/heads/flotilla/status/* or remote-tracking copies of them —
when it has any). REFs are read from the local Git repository without
checking anything out.

For each cluster and bundle: added, removed (its objects would be pruned),
changed (objects added, removed and changed, with a field-level diff;
Secret values masked), unchanged, or failed (with the positioned error);
and a cluster's move to another rollout wave. A bundle whose inputs are
the same at both revisions, and that reads no file that changed (its chart
or manifests folder; for a kustomization, also any non-CUE file outside
those folders), is unchanged without rendering; each distinct input is
rendered once for the whole fleet.

-o markdown writes a pull-request comment: a table of the clusters that
change, do not and newly fail (the fleet, per wave, per region), then new
failures, then each distinct change once with its clusters (listed on
demand), diffs in diff blocks (a multi-line string as a line diff), under
60,000 characters with every changed cluster counted;
-o json is for tools: {"clusters": [{"name", "changed", "bundles":
[{"name", "change", ...}]}]}, every cluster listed.

When the fleet has invariants (rules over every cluster at once), they are
checked over the plans at both revisions — and their rules over rendered
objects over every cluster's objects, rendered at both; one the change
breaks — that held at base — is listed first (in the comment too) and is a
new failure. They are not checked when --cluster narrows the preview.

When the fleet has policies, the objects of every cluster whose bundles
change (of every cluster, when the policies change) are checked against
them at both revisions; a violation found at --head only is reported on
its cluster.

Exit status as diff(1): 0 nothing changes, 1 something changes, 2 an error
— including a bundle or cluster that evaluates or renders at --base but
fails at --head, a new policy violation, and a broken invariant.`

func newPreviewCmd() *cobra.Command {
	pf := &previewFlags{}
	cmd := &cobra.Command{
		Use:   "preview [DIR] --base REF [--head REF]",
		Short: "Show which clusters a change touches, and how: the pull-request view",
		Long:  previewLong,
		Example: `  flotilla preview --base origin/main                  # the work tree against main
  flotilla preview --base main --head HEAD -o markdown > comment.md
  git fetch origin 'refs/heads/flotilla/status/*:refs/remotes/origin/flotilla/status/*'
  flotilla preview --base origin/main --cluster prod-eu-1 --bundle web`,
		Args: cobra.MaximumNArgs(1),
	}
	out := addOutputFlag(cmd, "text", "markdown", "json")
	ff := addFleetFlags(cmd)
	ff.boundExit = exitPreviewTrouble // a stopped preview is trouble, not "changes"
	limits := addLimitFlags(cmd, false)
	fs := cmd.Flags()
	fs.StringVar(&pf.base, "base", "", "the revision to compare against, a `REF` (branch, tag, commit, HEAD~1 …)")
	fs.StringVar(&pf.head, "head", "", "the revision to preview, a `REF` (default: the work tree)")
	known := addKnownClusterFlags(cmd)
	addQuietFlag(cmd)
	fs.StringArrayVar(&pf.clusters, "cluster", nil, "preview only the cluster `NAME` (repeatable)")
	fs.StringArrayVar(&pf.bundles, "bundle", nil, "preview only the bundle `NAME` (repeatable)")
	completeFromFleet(cmd, "cluster", completeClusters)
	completeFromFleet(cmd, "bundle", completeBundles)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		trouble := func(err error) error { return &exitCodeError{code: exitPreviewTrouble, err: err} }
		if err := out.validate(); err != nil {
			return trouble(err)
		}
		if pf.base == "" {
			return trouble(errors.New("--base is required: the revision the change is compared against (for example origin/main)"))
		}
		limits.sources.Secrets = sops.ModeMask
		opts, closeWorkers, err := limits.options(planrender.Options{})
		if err != nil {
			return trouble(err)
		}
		defer closeWorkers()
		po := preview.Options{Dir: repoDir(args), Path: ff.path, Base: pf.base, Head: pf.head,
			Clusters: pf.clusters, Bundles: pf.bundles, Render: opts,
			Progress: func(s string) { fmt.Fprintln(progressTo(cmd), s) }}
		if po.Status, err = known.resolve(); err != nil {
			return trouble(err)
		}
		if err := ff.startGuard(cmd.Context()); err != nil {
			return trouble(err)
		}
		tuneGCForBatch()
		rep, err := preview.Run(cmd.Context(), po)
		ff.stopGuard()
		if err != nil {
			return trouble(err)
		}
		w := cmd.OutOrStdout()
		switch out.format {
		case "markdown":
			err = rep.WriteMarkdown(w)
		case "json", "yaml":
			err = out.write(w, rep, nil)
		default:
			err = rep.WriteText(w)
		}
		if err != nil {
			return trouble(err)
		}
		if failures := rep.NewFailures(); len(failures) > 0 {
			return trouble(fmt.Errorf("%w: %s", preview.ErrNewFailure, strings.Join(failures, ", ")))
		}
		if rep.ChangedClusters() > 0 {
			return &exitCodeError{code: exitPreviewChanges, err: &reportedError{errors.New("the change touches clusters")}}
		}
		return nil
	}
	return cmd
}
