// Package identity says who a cluster is: its name, region and labels
// (the agent's flags, overridden by the identity ConfigMap) and the facts
// discovered from it (Kubernetes version, served API versions, node
// regions and zones). The agent and the Flux observer resolve it the same
// way, every pass.
package identity

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/fleet"
)

// Well-known node labels the facts are read from.
const (
	regionLabel = "topology.kubernetes.io/region"
	zoneLabel   = "topology.kubernetes.io/zone"
)

// Options say who the cluster is. Flags give a base; the identity
// ConfigMap, when it exists, overrides it, so a label change there is picked
// up without restarting the agent:
//
//	data:
//	  name: prod-eu-1
//	  region: eu-west-1
//	  label.env: prod
//	  label.class: regulated
type Options struct {
	Name   string
	Region string
	Labels map[string]string
	// ConfigMapNamespace/ConfigMapName locate the identity ConfigMap;
	// empty name means none.
	ConfigMapNamespace string
	ConfigMapName      string
}

// labelPrefix marks label keys in the identity ConfigMap.
const labelPrefix = "label."

// Resolver reads a cluster's identity and discovers its facts.
type Resolver struct {
	opts Options
	kube client.Reader
	disc discovery.DiscoveryInterface
}

// New returns a resolver reading the identity ConfigMap and the nodes
// with kube, and the version and API groups with disc (made once by the
// caller: the facts are read every pass).
func New(opts Options, kube client.Reader, disc discovery.DiscoveryInterface) *Resolver {
	return &Resolver{opts: opts, kube: kube, disc: disc}
}

// Resolve reads the cluster's identity (flags, then the ConfigMap) and
// discovers its facts.
func (r *Resolver) Resolve(ctx context.Context) (fleet.Cluster, error) {
	id := r.opts
	c := fleet.Cluster{Name: id.Name, Region: id.Region, Labels: maps.Clone(id.Labels)}
	if c.Labels == nil {
		c.Labels = map[string]string{}
	}
	if id.ConfigMapName != "" {
		var cm corev1.ConfigMap
		err := r.kube.Get(ctx, client.ObjectKey{Namespace: id.ConfigMapNamespace, Name: id.ConfigMapName}, &cm)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return c, fmt.Errorf("reading identity ConfigMap %s/%s: %w", id.ConfigMapNamespace, id.ConfigMapName, err)
		default:
			for k, v := range cm.Data {
				switch {
				case k == "name":
					c.Name = v
				case k == "region":
					c.Region = v
				case strings.HasPrefix(k, labelPrefix):
					c.Labels[strings.TrimPrefix(k, labelPrefix)] = v
				}
			}
		}
	}
	facts, err := r.discoverFacts(ctx)
	if err != nil {
		return c, err
	}
	c.Facts = facts
	return c, c.Validate()
}

// discoverFacts asks the cluster for its version, served API groups and
// versions, and its nodes' regions and zones.
func (r *Resolver) discoverFacts(ctx context.Context) (fleet.Facts, error) {
	var f fleet.Facts
	v, err := r.disc.ServerVersion()
	if err != nil {
		return f, fmt.Errorf("discovering the Kubernetes version: %w", err)
	}
	f.KubernetesVersion = v.GitVersion
	groups, err := r.disc.ServerGroups()
	if err != nil {
		return f, fmt.Errorf("discovering API groups: %w", err)
	}
	for _, g := range groups.Groups {
		if g.Name != "" {
			f.APIGroups = append(f.APIGroups, g.Name)
		}
		for _, gv := range g.Versions {
			f.APIVersions = append(f.APIVersions, schema.GroupVersion{Group: g.Name, Version: gv.Version}.String())
		}
	}
	// Metadata only: the labels are all that is read, and a pass must stay
	// cheap on clusters with many nodes.
	nodes := &metav1.PartialObjectMetadataList{}
	nodes.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NodeList"))
	if err := r.kube.List(ctx, nodes); err != nil {
		return f, fmt.Errorf("listing nodes: %w", err)
	}
	regions, zones := map[string]bool{}, map[string]bool{}
	for _, n := range nodes.Items {
		if r := n.Labels[regionLabel]; r != "" {
			regions[r] = true
		}
		if z := n.Labels[zoneLabel]; z != "" {
			zones[z] = true
		}
	}
	f.Regions, f.Zones, f.Nodes = slices.Sorted(maps.Keys(regions)), slices.Sorted(maps.Keys(zones)), len(nodes.Items)
	slices.Sort(f.APIGroups)
	slices.Sort(f.APIVersions)
	return f, nil
}

// Key is a stable string of an identity and its facts: a change is a
// reason to plan again without a new commit.
func Key(c fleet.Cluster) string {
	var b strings.Builder
	b.WriteString(c.Name + "|" + c.Region + "|")
	for _, k := range slices.Sorted(maps.Keys(c.Labels)) {
		b.WriteString(k + "=" + c.Labels[k] + ",")
	}
	f := c.Facts
	b.WriteString("|" + f.KubernetesVersion + "|" + strings.Join(f.APIVersions, ",") + "|" +
		strings.Join(f.Regions, ",") + "|" + strings.Join(f.Zones, ",") + "|" + strconv.Itoa(f.Nodes))
	return b.String()
}
