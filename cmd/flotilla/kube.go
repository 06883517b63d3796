package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/flotilla-gitops/flotilla/internal/version"
)

// kubeFlags are the flags that choose a cluster, shared by every command that
// talks to one. With neither set, the usual kubectl rules apply: $KUBECONFIG,
// then ~/.kube/config, then the in-cluster service account.
type kubeFlags struct {
	kubeconfig string
	context    string
}

func addKubeFlags(cmd *cobra.Command) *kubeFlags {
	k := &kubeFlags{}
	cmd.Flags().StringVar(&k.kubeconfig, "kubeconfig", "", "the kubeconfig `FILE` (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
	cmd.Flags().StringVar(&k.context, "context", "", "the kubeconfig context `NAME` to use (default: the current context)")
	return k
}

// set reports whether the user chose a cluster explicitly.
func (k *kubeFlags) set() bool { return k.kubeconfig != "" || k.context != "" }

// restConfig loads the client configuration the flags select. Requests
// name Flotilla and its version as their user agent, whatever the binary
// is called: what an API server's audit log and request metrics show.
func (k *kubeFlags) restConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = k.kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: k.context}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, err
	}
	info := version.Get()
	cfg.UserAgent = fmt.Sprintf("flotilla/%s (%s)", info.Version, info.Platform)
	return cfg, nil
}
