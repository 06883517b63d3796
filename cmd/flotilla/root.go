package main

import (
	"io"

	"github.com/flotilla-gitops/flotilla/internal/version"
	"github.com/spf13/cobra"
)

// newRootCmd builds the command tree. Commands are built by constructors so
// that no flag or command lives in a package variable and tests can run many
// command lines in one process.
func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "flotilla",
		Short: "Pull-based GitOps for fleets of Kubernetes clusters",
		Long: `Flotilla deploys one Git repository to many Kubernetes clusters.

An agent in each cluster clones the fleet repository, evaluates fleet.cue
for its own identity (name, region, labels, discovered facts), selects the
bundles meant for it, composes every matching overlay, renders Helm charts,
Kustomize overlays, plain YAML or CUE objects, applies them with server-side
apply, prunes what left, and writes its status back to Git.

The same evaluation runs on a laptop or in CI, so a change can be previewed
for every cluster before it merges.`,
		Example: `  # Check the fleet in the current folder for every cluster of its inventory
  flotilla vet

  # Why does prod-eu-1 get what it gets?
  flotilla plan --cluster prod-eu-1

  # The objects it would get
  flotilla render --cluster prod-eu-1

  # Which build is this?
  flotilla version`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// --version, as `flotilla version` prints it in short.
		Version: version.Get().String(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		newVetCmd(),
		newPlanCmd(),
		newRenderCmd(),
		newDiffCmd(),
		newPreviewCmd(),
		newHydrateCmd(),
		newGeneratorCmd(),
		newApplyCmd(),
		newPublishCmd(),
		newAgentCmd(),
		newStatusCmd(),
		newRolloutCmd(),
		newBootstrapCmd(),
		newUninstallCmd(),
		newVersionCmd(),
	)
	return root
}
