// Package fleet is Flotilla's fleet model: it loads a fleet repository's
// CUE (its `fleet` package plus the embedded schemas), fills in one
// cluster's identity, and produces that cluster's Plan — which bundles
// select it and why, which overlays apply, and their concrete inputs.
//
// It is pure: no network, no cluster, no writes. It never imports render or
// sync; the agent and the CLI turn a planned bundle into a render request.
package fleet

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Cluster is the identity of one cluster and what is known about it. It is
// the Go form of the schema's #Cluster and is what fills `cluster` in the
// fleet's CUE.
type Cluster struct {
	Name   string            `json:"name"`
	Region string            `json:"region"`
	Labels map[string]string `json:"labels"`
	Facts  Facts             `json:"facts"`
}

// Facts are discovered from the cluster by its agent.
type Facts struct {
	KubernetesVersion string   `json:"kubernetesVersion"`
	APIGroups         []string `json:"apiGroups"`
	APIVersions       []string `json:"apiVersions"`
	Regions           []string `json:"regions"`
	Zones             []string `json:"zones"`
	Nodes             int      `json:"nodes"`
}

// Normalized returns a copy whose nil maps and slices are empty, so that the
// identity encodes to the same CUE (and the same digests) however it was
// built.
func (c Cluster) Normalized() Cluster {
	if c.Labels == nil {
		c.Labels = map[string]string{}
	}
	for _, s := range []*[]string{&c.Facts.APIGroups, &c.Facts.APIVersions, &c.Facts.Regions, &c.Facts.Zones} {
		if *s == nil {
			*s = []string{}
		}
	}
	return c
}

// Validate checks what the schema cannot say as well: the name is a DNS
// label and the labels are valid Kubernetes labels, as label selectors need.
func (c Cluster) Validate() error {
	var problems []string
	if c.Name == "" {
		problems = append(problems, "name is required")
	} else if errs := validation.IsDNS1123Label(c.Name); len(errs) > 0 {
		problems = append(problems, fmt.Sprintf("name %q: %s", c.Name, strings.Join(errs, "; ")))
	}
	for _, k := range slices.Sorted(maps.Keys(c.Labels)) {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			problems = append(problems, fmt.Sprintf("label key %q: %s", k, strings.Join(errs, "; ")))
		}
		if errs := validation.IsValidLabelValue(c.Labels[k]); len(errs) > 0 {
			problems = append(problems, fmt.Sprintf("label %s value %q: %s", k, c.Labels[k], strings.Join(errs, "; ")))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("cluster identity %q is invalid: %s", c.Name, strings.Join(problems, ", "))
	}
	return nil
}

// LabelString renders labels as k=v pairs in key order, as `plan` shows
// them.
func LabelString(labels map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(labels)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + labels[k])
	}
	return b.String()
}

// JoinClusters joins identities by name, in name order: those of known
// (clusters as they reported themselves on their status branches) over
// those of the inventory.
func JoinClusters(inventory, known []Cluster) []Cluster {
	byName := map[string]Cluster{}
	for _, c := range inventory {
		if _, ok := byName[c.Name]; !ok {
			byName[c.Name] = c
		}
	}
	for _, c := range known {
		byName[c.Name] = c
	}
	out := make([]Cluster, 0, len(byName))
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		out = append(out, byName[name])
	}
	return out
}
