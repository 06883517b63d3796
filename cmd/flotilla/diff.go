package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/sync/apply"
)

func newDiffCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "diff [DIR] --kubeconfig F (--cluster NAME | --name NAME ...)",
		Short: "Show how a cluster differs from the fleet (server-side dry run)",
		Long: `Evaluate and render the fleet in DIR for the cluster, dry-run apply every
object on the cluster's API server, and print what a sync would change: a
diff per object — created, configured (field by field), deleted (left a
bundle, or the bundle left the cluster). Secret values are masked.

Nothing is changed. The exit code is 1 when there are differences (or a
bundle failed), 0 when the cluster matches the fleet.`,
		Example: `  flotilla diff --kubeconfig ~/.kube/prod-eu-1 --cluster prod-eu-1
  flotilla diff --kubeconfig kc --cluster prod-eu-1 --bundle web -o json`,
		Args: cobra.MaximumNArgs(1),
	}
	out := addOutputFlag(cmd, "text", "json")
	sf := addSyncFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		s, err := sf.start(cmd, args, out)
		if err != nil {
			return err
		}
		failed := 0
		for _, b := range s.bundles {
			if b.Err != nil {
				failed++
				fmt.Fprintln(cmd.ErrOrStderr(), b.Err)
			}
		}
		diffs, err := s.manager.Diff(cmd.Context(), s.bundles)
		if err != nil {
			return err
		}
		if diffs == nil {
			diffs = []apply.ObjectDiff{}
		}
		if err := out.write(cmd.OutOrStdout(), diffs, func(w io.Writer) error { return writeDiffs(w, diffs) }); err != nil {
			return err
		}
		if len(diffs) > 0 || failed > 0 {
			return &reportedError{fmt.Errorf("%s, %s failed", english.Count(len(diffs), "difference"), english.Count(failed, "bundle"))}
		}
		return nil
	}
	return cmd
}

// writeDiffs prints each object's difference in unified-diff form: the
// cluster's side with -, the fleet's with +.
func writeDiffs(w io.Writer, diffs []apply.ObjectDiff) error {
	for _, d := range diffs {
		fmt.Fprintf(w, "--- %s (cluster)\n+++ %s (fleet, bundle %s)\n", d.Object, d.Object, d.Bundle)
		switch d.Action {
		case "created":
			data, err := yaml.Marshal(d.Desired.Object)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "@@ created @@\n%s", indent(string(data), "+"))
		case "deleted":
			fmt.Fprintf(w, "@@ deleted @@\n-%s\n", d.Object)
		default:
			for _, c := range d.Changes {
				fmt.Fprintf(w, "@@ %s %s @@\n", c.Op, c.Path)
				if c.Old != nil {
					fmt.Fprint(w, indent(yamlValue(c.Old), "-"))
				}
				if c.New != nil {
					fmt.Fprint(w, indent(yamlValue(c.New), "+"))
				}
			}
		}
	}
	return nil
}

// yamlValue renders one value as YAML lines.
func yamlValue(v any) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Sprint(v) + "\n"
	}
	return string(data)
}
