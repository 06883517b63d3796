package main

import (
	"context"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// What a flag completes from the fleet.
const (
	completeClusters = iota
	completeBundles
	completeWaves
)

// completeFromFleet makes the shell complete a flag with the names of the
// fleet in the command's DIR (or the one the current folder is in), at
// --path: its clusters (the inventory's and those on the local status
// branches), bundles or rollout waves. A fleet that does not load
// completes nothing.
func completeFromFleet(cmd *cobra.Command, flag string, what int) {
	_ = cmd.RegisterFlagCompletionFunc(flag, func(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
		dir := repoDir(args)
		path := "."
		if f := cmd.Flags().Lookup("path"); f != nil {
			path = f.Value.String()
		}
		f, err := fleet.Load(dir, fleet.LoadOptions{Path: path})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		switch what {
		case completeClusters:
			names = clusterNames(cmd.Context(), f, dir)
		case completeBundles:
			names = f.Bundles()
		case completeWaves:
			names = waveNames(f)
		}
		return slices.DeleteFunc(names, func(n string) bool { return !strings.HasPrefix(n, prefix) }), cobra.ShellCompDirectiveNoFileComp
	})
}

// clusterNames are the inventory's clusters and those that reported on the
// local repository's status branches (report.KnownClusters, as preview
// knows them).
func clusterNames(ctx context.Context, f *fleet.Fleet, dir string) []string {
	repo, _, _ := source.OpenLocal(dir) // none outside a Git repository
	k, err := report.KnownClusters(ctx, repo, report.Branches{Prefix: report.DefaultPrefix}, f.Inventory())
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(k.Clusters))
	for _, c := range k.Clusters {
		names = append(names, c.Name)
	}
	return names
}

// waveNames are the waves of the fleet's rollouts (its own and the
// bundles'), in order.
func waveNames(f *fleet.Fleet) []string {
	var names []string
	for _, cr := range f.Rollouts(nil, f.Bundles()) {
		rollouts := []*fleet.Rollout{cr.Fleet}
		for _, r := range cr.Bundles {
			rollouts = append(rollouts, r)
		}
		for _, r := range rollouts {
			if r == nil {
				continue
			}
			for _, w := range r.Waves {
				if !slices.Contains(names, w) {
					names = append(names, w)
				}
			}
		}
	}
	return names
}
