package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/sops"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
)

// clusterSync is what apply and diff share: the fleet planned for the
// cluster, rendered, and a manager connected to the cluster.
type clusterSync struct {
	plan    *fleet.Plan
	manager *apply.Manager
	bundles []apply.Bundle
}

// syncFlags are the flags apply and diff share.
type syncFlags struct {
	fleet    *fleetFlags
	identity *identityFlags
	kube     *kubeFlags
	bundle   string
	opts     apply.Options
	limits   *limitFlags
}

func addSyncFlags(cmd *cobra.Command) *syncFlags {
	sf := &syncFlags{fleet: addFleetFlags(cmd), identity: addIdentityFlags(cmd), kube: addKubeFlags(cmd), opts: apply.DefaultOptions()}
	cmd.Flags().StringVar(&sf.bundle, "bundle", "", "only the bundle `NAME` (the cluster's other bundles are left alone)")
	completeFromFleet(cmd, "bundle", completeBundles)
	cmd.Flags().StringVar(&sf.opts.InventoryNamespace, "inventory-namespace", sf.opts.InventoryNamespace, "namespace of the bundles' inventories")
	sf.limits = addLimitFlags(cmd, false)
	return sf
}

// start validates the output flag and prepares the sync, for apply and diff.
func (sf *syncFlags) start(cmd *cobra.Command, args []string, out *outputFlag) (*clusterSync, error) {
	if err := out.validate(); err != nil {
		return nil, err
	}
	return sf.prepare(cmd.Context(), args)
}

// prepare plans the fleet for the cluster and renders it with the
// cluster's discovery. A fleet that does not evaluate stops here: nothing
// is applied and nothing is pruned.
func (sf *syncFlags) prepare(ctx context.Context, args []string) (*clusterSync, error) {
	opts := sf.opts
	f, err := sf.fleet.load(ctx, args)
	if err != nil {
		return nil, err
	}
	c, err := sf.identity.resolve(f)
	if err != nil {
		return nil, err
	}
	plan, err := planCluster(ctx, f, c)
	if err != nil {
		return nil, fmt.Errorf("the fleet does not evaluate for cluster %s; nothing was applied or pruned:\n%w", c.Name, err)
	}
	if sf.bundle != "" {
		b := plan.Bundle(sf.bundle)
		if b == nil {
			return nil, unselectedBundle(plan, sf.bundle)
		}
		plan.Bundles = []*fleet.Bundle{b}
		opts.KeepUnlisted = true
	}
	cfg, err := sf.kube.restConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	m, err := apply.New(cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", cfg.Host, err)
	}
	// What is applied, or compared with the cluster, is decrypted.
	sf.limits.sources.Secrets = sops.ModeDecrypt
	ropts, closeWorkers, err := sf.limits.options(planrender.Options{Scope: render.MapperScope(m.RESTMapper())})
	if err != nil {
		return nil, err
	}
	defer closeWorkers()
	r := planrender.New(repoDir(args), ropts)
	bundles, err := r.ApplyBundles(ctx, plan, "local")
	if err != nil {
		return nil, fmt.Errorf("nothing was applied or pruned: %w", err)
	}
	sf.fleet.stopGuard() // evaluated and rendered: the rest is the cluster's time
	return &clusterSync{plan: plan, manager: m, bundles: bundles}, nil
}

func newApplyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "apply [DIR] --kubeconfig F (--cluster NAME | --name NAME ...)",
		Short: "Sync a cluster once from a local checkout of the fleet",
		Long: `Do once what the agent does every cycle: evaluate the fleet in DIR for the
cluster, render its bundles, and make the cluster match with server-side
apply (field manager "flotilla"): bundles in dependsOn order, CRDs and
Namespaces first, readiness waits, pruning of objects that left a bundle,
deletion of bundles the cluster no longer gets, and a record of each
bundle's objects (its inventory) in flotilla-system.

Nothing is pruned for a bundle that failed to evaluate or render, and
nothing at all when the fleet does not evaluate. A sync that would delete
more than half of the managed objects deletes nothing unless
--allow-mass-deletion. --dry-run changes nothing and prints what would
change. The exit code is 1 when a bundle failed or was skipped.`,
		Example: `  flotilla apply --kubeconfig ~/.kube/prod-eu-1 --cluster prod-eu-1
  flotilla apply --kubeconfig kc --cluster prod-eu-1 --bundle web --dry-run
  flotilla apply --context lab --name lab-1 --region us-west-2 --label env=lab -o json`,
		Args: cobra.MaximumNArgs(1),
	}
	out := addOutputFlag(cmd, "text", "json")
	sf := addSyncFlags(cmd)
	cmd.Flags().BoolVar(&sf.opts.DryRun, "dry-run", false, "change nothing; print what would change")
	cmd.Flags().BoolVar(&sf.opts.AllowMassDeletion, "allow-mass-deletion", false, "let this sync delete more than half of the managed objects")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		s, err := sf.start(cmd, args, out)
		if err != nil {
			return err
		}
		res, err := s.manager.Sync(cmd.Context(), s.bundles)
		if err != nil {
			return err
		}
		if err := out.write(cmd.OutOrStdout(), res, func(w io.Writer) error {
			return writeSyncResult(w, s.plan.Cluster.Name, res, sf.opts.DryRun)
		}); err != nil {
			return err
		}
		if res.Failed() || res.Guard != "" {
			return &reportedError{errors.New("sync failed")}
		}
		return nil
	}
	return cmd
}

// writeSyncResult prints a sync as a table of bundles and the objects each
// touched.
func writeSyncResult(w io.Writer, cluster string, res *apply.Result, dryRun bool) error {
	verb := "synced"
	if dryRun {
		verb = "dry run of"
	}
	fmt.Fprintf(w, "%s cluster %s in %s (%d API requests)\n\n", verb, cluster, res.Duration.Round(1e6), res.Requests)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BUNDLE\tPHASE\tCREATED\tCONFIGURED\tUNCHANGED\tDELETED\tDRIFTED\tMESSAGE")
	for _, b := range res.Bundles {
		c := b.Counts
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", b.Name, b.Phase, c.Created, c.Configured, c.Unchanged, c.Deleted, c.Drifted, oneLine(b.Message))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, b := range res.Bundles {
		if len(b.Objects) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s\n", b.Name)
		for _, o := range b.Objects {
			fields := ""
			if len(o.Fields) > 0 {
				fields = " (" + strings.Join(o.Fields, ", ") + ")"
			}
			fmt.Fprintf(w, "  %s %s%s\n", o.Object, o.Action, fields)
		}
	}
	if res.Guard != "" {
		fmt.Fprintf(w, "\n%s\n", res.Guard)
	}
	return nil
}

// oneLine keeps the first line of a message for a table cell.
func oneLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
