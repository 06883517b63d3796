package main

import (
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
			names = clusterNames(f, dir)
		case completeBundles:
			names = f.Bundles()
		case completeWaves:
			names = waveNames(f)
		}
		return slices.DeleteFunc(names, func(n string) bool { return !strings.HasPrefix(n, prefix) }), cobra.ShellCompDirectiveNoFileComp
	})
}

// clusterNames are the inventory's clusters and those that reported on the
// local repository's status branches.
func clusterNames(f *fleet.Fleet, dir string) []string {
	var names []string
	for _, c := range f.Inventory() {
		names = append(names, c.Name)
	}
	if repo, _, err := source.OpenLocal(dir); err == nil {
		if snap, err := report.ReadRepository(repo, report.DefaultPrefix); err == nil {
			for _, st := range snap.Statuses {
				if !slices.Contains(names, st.Cluster.Name) {
					names = append(names, st.Cluster.Name)
				}
			}
		}
	}
	slices.Sort(names)
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
