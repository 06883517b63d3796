package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"k8s.io/client-go/discovery"

	"github.com/flotilla-gitops/flotilla/internal/version"
)

// versionOutput is what `flotilla version` prints; Server is filled only when
// a cluster was named.
type versionOutput struct {
	version.Info
	Server string `json:"server,omitempty"`
}

func newVersionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, Go version and Kubernetes API version",
		Long: `Print which build of Flotilla this is: its release version and commit,
the Go toolchain it was built with, and the Kubernetes API version its
clients were compiled against. Agents publish the same information in their
status file.

With --kubeconfig or --context, also ask that cluster for its Kubernetes
version, to check that it is reachable and compatible.`,
		Example: `  flotilla version
  flotilla version -o json
  flotilla version --kubeconfig ~/.kube/prod-eu-1`,
		Args: cobra.NoArgs,
	}
	out := addOutputFlag(cmd, "text", "json", "yaml")
	kube := addKubeFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := out.validate(); err != nil {
			return err
		}
		v := versionOutput{Info: version.Get()}
		if kube.set() {
			server, err := serverVersion(kube)
			if err != nil {
				return err
			}
			v.Server = server
		}
		return out.write(cmd.OutOrStdout(), v, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "version:        %s\ncommit:         %s\ngo:             %s\nplatform:       %s\nkubernetes API: %s\n",
				v.Version, v.Commit, v.GoVersion, v.Platform, v.KubernetesAPI)
			if err == nil && v.Server != "" {
				_, err = fmt.Fprintf(w, "server:         %s\n", v.Server)
			}
			return err
		})
	}
	return cmd
}

// serverVersion asks the selected cluster for its version.
func serverVersion(kube *kubeFlags) (string, error) {
	cfg, err := kube.restConfig()
	if err != nil {
		return "", fmt.Errorf("loading kubeconfig: %w", err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return "", err
	}
	info, err := dc.ServerVersion()
	if err != nil {
		return "", fmt.Errorf("asking %s for its version: %w", cfg.Host, err)
	}
	return info.GitVersion, nil
}
