package agent

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
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/fleet"
)

// Well-known node labels the facts are read from.
const (
	regionLabel = "topology.kubernetes.io/region"
	zoneLabel   = "topology.kubernetes.io/zone"
)

// IdentityOptions say who the cluster is. Flags give a base; the identity
// ConfigMap, when it exists, overrides it, so a label change there is picked
// up without restarting the agent:
//
//	data:
//	  name: prod-eu-1
//	  region: eu-west-1
//	  label.env: prod
//	  label.class: regulated
type IdentityOptions struct {
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

// identity reads the cluster's identity (flags, then the ConfigMap) and
// discovers its facts.
func (a *Agent) identity(ctx context.Context) (fleet.Cluster, error) {
	id := a.opts.Identity
	c := fleet.Cluster{Name: id.Name, Region: id.Region, Labels: maps.Clone(id.Labels)}
	if c.Labels == nil {
		c.Labels = map[string]string{}
	}
	if id.ConfigMapName != "" {
		var cm corev1.ConfigMap
		err := a.kube.Get(ctx, client.ObjectKey{Namespace: id.ConfigMapNamespace, Name: id.ConfigMapName}, &cm)
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
	facts, err := a.discoverFacts(ctx)
	if err != nil {
		return c, err
	}
	c.Facts = facts
	return c, c.Validate()
}

// discoverFacts asks the cluster for its version, served API groups and
// versions, and its nodes' regions and zones.
func (a *Agent) discoverFacts(ctx context.Context) (fleet.Facts, error) {
	var f fleet.Facts
	v, err := a.disc.ServerVersion()
	if err != nil {
		return f, fmt.Errorf("discovering the Kubernetes version: %w", err)
	}
	f.KubernetesVersion = v.GitVersion
	groups, err := a.disc.ServerGroups()
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
	if err := a.kube.List(ctx, nodes); err != nil {
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

// identityKey is a stable string of an identity and its facts: a change is
// a reason to plan again without a new commit.
func identityKey(c fleet.Cluster) string {
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
