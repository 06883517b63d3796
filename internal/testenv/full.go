package testenv

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// Labels and annotations of the fake nodes.
const (
	// KwokNodeAnnotation marks the nodes kwok manages; kwok is started with
	// a selector on it so that it never touches other nodes.
	KwokNodeAnnotation = "kwok.x-k8s.io/node"
	// RegionLabel and ZoneLabel are the well-known topology labels that a
	// real cloud provider puts on nodes; Flotilla's facts discovery reads
	// them.
	RegionLabel = "topology.kubernetes.io/region"
	ZoneLabel   = "topology.kubernetes.io/zone"
)

// fullStartTimeout bounds how long a full cluster may take to have Ready
// nodes and running controllers once its API server is up.
const fullStartTimeout = 2 * time.Minute

// startWorkloadComponents registers the fake nodes, starts
// kube-controller-manager, kube-scheduler and kwok against the API server,
// and waits until the nodes are Ready and the controllers are working.
func (c *Cluster) startWorkloadComponents(ctx context.Context, opts Options) error {
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	nodes, err := c.createNodes(ctx, cs, opts)
	if err != nil {
		return err
	}

	kube := []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--authentication-kubeconfig=" + c.Kubeconfig,
		"--authorization-kubeconfig=" + c.Kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
	}
	starts := []struct {
		name string
		args []string
	}{
		// The serviceaccount-token controller needs a signing key the
		// controller-manager does not have; tokens are not needed because
		// envtest's API server runs without the ServiceAccount admission
		// plugin.
		{"kube-controller-manager", append([]string{
			"--controllers=*,-serviceaccount-token",
			"--use-service-account-credentials=false",
			"--cluster-name=" + c.Name,
		}, kube...)},
		{"kube-scheduler", kube},
		{"kwok", []string{
			"--kubeconfig=" + c.Kubeconfig,
			"--manage-all-nodes=false",
			"--manage-nodes-with-annotation-selector=" + KwokNodeAnnotation + "=fake",
			"--config=" + filepath.Join(opts.AssetsDir, "kwok-stages.yaml"),
		}},
	}
	for _, s := range starts {
		comp, err := startComponent(opts.AssetsDir, c.Dir, s.name, s.args...)
		if err != nil {
			return err
		}
		c.components = append(c.components, comp)
	}
	return c.waitWorkloadReady(ctx, cs, nodes)
}

// createNodes registers opts.Nodes fake nodes labelled with the region and
// zone.
func (c *Cluster) createNodes(ctx context.Context, cs kubernetes.Interface, opts Options) ([]string, error) {
	var names []string
	for i := range opts.Nodes {
		name := fmt.Sprintf("%s-node-%d", c.Name, i)
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{KwokNodeAnnotation: "fake"},
			Labels: map[string]string{
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"type":                   "kwok",
				RegionLabel:              opts.Region,
				ZoneLabel:                opts.Zone,
			},
		}}
		if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("creating node %s: %w", name, err)
		}
		names = append(names, name)
	}
	return names, nil
}

// waitWorkloadReady polls until every fake node is Ready (kwok works) and the
// default ServiceAccount exists (the controller-manager's controllers run).
// A component that exits meanwhile ends the wait at once with its log file
// named.
func (c *Cluster) waitWorkloadReady(ctx context.Context, cs kubernetes.Interface, nodes []string) error {
	var pending string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, fullStartTimeout, true, func(ctx context.Context) (bool, error) {
		for _, comp := range c.components {
			if err := comp.errExited(); err != nil {
				return false, err
			}
		}
		for _, name := range nodes {
			node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if !nodeReady(node) {
				pending = "node " + name + " to become Ready (kwok)"
				return false, nil
			}
		}
		_, err := cs.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			pending = "the default ServiceAccount (kube-controller-manager)"
			return false, nil
		}
		return err == nil, err
	})
	if wait.Interrupted(err) && ctx.Err() == nil {
		return fmt.Errorf("waited %s for %s", fullStartTimeout, pending)
	}
	return err
}

func nodeReady(node *corev1.Node) bool {
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}
