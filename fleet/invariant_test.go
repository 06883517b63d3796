package fleet_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/fleet"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// invariantFleet: payments is critical; prod-eu-1/-2 are a DR pair, as are
// prod-us-1/-2. The rules keep payments in two regions, one active per
// pair, the same payments image in a pair, and at most 3 prod clusters
// per region.
const invariantFleet = `
clusters: {
	"prod-eu-1": {region: "eu-west-1", labels: {env: "prod", "dr-pair": "eu", role: "active"}}
	"prod-eu-2": {region: "eu-central-1", labels: {env: "prod", "dr-pair": "eu", role: "standby"}}
	"prod-us-1": {region: "us-east-1", labels: {env: "prod", "dr-pair": "us", role: "active"}}
	"prod-us-2": {region: "us-west-2", labels: {env: "prod", "dr-pair": "us", role: %q}}
	"dev-1":     {region: "eu-west-1", labels: env: "dev"}
}
bundles: payments: {
	target: %s
	resources: []
	values: image: tag: [if cluster.name == "prod-us-2" {%q}, "1.4.2"][0]
}
invariants: {
	"critical-in-two-regions": {
		description: "payments survives a region"
		target: clusterSelector: matchLabels: env: "prod"
		bundles: ["pay*"]
		regions: min: 2
	}
	"dr-one-active": {
		groupBy: "labels.dr-pair"
		count: [{clusterSelector: matchLabels: role: "active", min: 1, max: 1}]
	}
	"dr-same-version": {
		groupBy: "labels.dr-pair"
		bundles: ["payments"]
		same: ["values.image.tag"]
	}
	"prod-per-region": {
		target: clusterSelector: matchLabels: env: "prod"
		groupBy: "region"
		clusters: max: 3
	}
}
`

func checkInvariants(t *testing.T, role, target, tag string) fleet.Diagnostics {
	t.Helper()
	src := strings.Replace(invariantFleet, "%q", `"`+role+`"`, 1)
	src = strings.Replace(src, "%s", target, 1)
	src = strings.Replace(src, "%q", `"`+tag+`"`, 1)
	f := mustLoad(t, writeFleet(t, src))
	plans, ds, err := f.PlanInventory(context.Background(), nil)
	if err != nil || len(ds) > 0 {
		t.Fatalf("plan: %v %v", ds, err)
	}
	st := f.NewInvariantState()
	for _, p := range plans {
		st.Add(p)
	}
	return st.Check()
}

// TestInvariants: a fleet that keeps every rule breaks none; each break
// is a positioned diagnostic naming the invariant, the bundle, the group
// and the clusters.
func TestInvariants(t *testing.T) {
	if ds := checkInvariants(t, "standby", `{}`, "1.4.2"); len(ds) != 0 {
		t.Fatalf("a fleet that keeps its invariants: %v", ds)
	}
	for _, tc := range []struct {
		name, role, target, tag string
		want                    []string
	}{
		{"payments in one region", "standby", `names: ["prod-eu-1", "dev-1"]`, "1.4.2", []string{
			"fleet.cue:", "invariants.critical-in-two-regions.regions: invariant critical-in-two-regions (payments survives a region) breaks for bundle payments: 1 cluster in 1 region: eu-west-1 (prod-eu-1), at least 2 required"}},
		{"two actives in a pair", "active", `{}`, "1.4.2", []string{
			"invariants.dr-one-active.count[0]: invariant dr-one-active breaks in group labels.dr-pair=us: 2 clusters of 2 selected by role=active (prod-us-1, prod-us-2), exactly 1 required"}},
		{"a standby at another version", "standby", `{}`, "1.5.0", []string{
			`invariants.dr-same-version.same[0]: invariant dr-same-version breaks for bundle payments in group labels.dr-pair=us: values.image.tag differs: "1.4.2" on prod-us-1; "1.5.0" on prod-us-2`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds := checkInvariants(t, tc.role, tc.target, tc.tag)
			got := ds.Error()
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("want %q in:\n%s", w, got)
				}
			}
		})
	}
}

// TestInvariantErrors: an invariant that refers to `cluster`, selects with
// `when`, compares inputs without bundles, bounds nothing or groups by
// something else than a region or a label is refused at its line.
func TestInvariantErrors(t *testing.T) {
	for src, want := range map[string]string{
		`invariants: x: {regions: min: len(cluster.name)}`:                                     "an invariant refers to `cluster`",
		`invariants: x: {count: [{when: true, min: 1}]}`:                                       "invariants.x.count[0].when: an invariant's selector cannot use `when`",
		`invariants: x: {same: ["values.tag"]}`:                                                "invariants.x.same[0]: `same` compares a bundle's planned inputs: name the bundles with `bundles`",
		`invariants: x: {same: [{match: {kind: "ConfigMap"}}]}`:                                "invariants.x.same[0]: a `same` entry is a path into the planned inputs",
		`invariants: x: {withinOneRevisionOf: names: ["a"]}`:                                   "invariants.x.withinOneRevisionOf: `withinOneRevisionOf` compares the versions of bundles: name the bundles with `bundles`",
		`invariants: x: {description: "nothing"}`:                                              "invariants.x: the invariant bounds nothing",
		`invariants: x: {groupBy: "name", clusters: min: 1}`:                                   "invariants.x.groupBy",
		`invariants: x: {target: when: cluster.region == "eu", clusters: min: 1}`:              "an invariant refers to `cluster`",
		`invariants: x: {target: clusterSelector: matchLabels: env: "prod", regions: min: -1}`: "invariants.x.regions.min",
	} {
		_, err := fleet.Load(writeFleet(t, "bundles: web: resources: []\n"+src), fleet.LoadOptions{})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "fleet.cue:") {
			t.Errorf("%s: %v, want %q with its position", src, err, want)
		}
	}
}

// TestAvailabilityDuringARollout: a plan carries its bundles' availability
// rules (max(min-1, 1) of the group kept Ready while one takes a
// revision); a cluster waits while the others of its group keep too few
// regions Ready, and goes once one is Ready again; never the last.
func TestAvailabilityDuringARollout(t *testing.T) {
	f := mustLoad(t, writeFleet(t, `
clusters: {"eu-1": {region: "eu-west-1"}, "us-1": {region: "us-east-1"}, "ap-1": {region: "ap-south-1"}}
bundles: payments: {namespace: "pay", resources: []}
bundles: web: {namespace: "web", resources: []}
invariants: "two-regions": {description: "survives a region", bundles: ["payments"], regions: min: 2}
`))
	p := mustPlan(t, f, fleet.Cluster{Name: "eu-1", Region: "eu-west-1"})
	if len(p.Availability) != 1 || p.Availability[0].Bundle != "payments" || p.Availability[0].Regions != 1 {
		t.Fatalf("the plan's availability rules: %+v", p.Availability)
	}
	rule := p.Availability[0]
	run := func(name, region string, ready bool) fleet.Running {
		return fleet.Running{Cluster: fleet.Cluster{Name: name, Region: region}, Bundles: map[string]bool{"payments": ready}}
	}
	me := fleet.Cluster{Name: "eu-1", Region: "eu-west-1"}
	if why := rule.Wait(me, []fleet.Running{run("us-1", "us-east-1", true), run("ap-1", "ap-south-1", false)}); why != "" {
		t.Errorf("another region Ready: waits %q", why)
	}
	why := rule.Wait(me, []fleet.Running{run("us-1", "us-east-1", false), run("ap-1", "ap-south-1", false)})
	if why != "invariant two-regions (survives a region): 0 other regions with payments Ready (none), at least 1 while one takes a revision; waits for ap-1, us-1" {
		t.Errorf("no other region Ready: %q", why)
	}
}

// TestRenderedInvariants: a `same` entry over rendered objects compares
// the field of every object its pattern matches (a regular expression in
// it too), per group, and leaves out a cluster without the object; it is
// not checked until rendered objects are added, and a "*" path takes a
// list's items.
func TestRenderedInvariants(t *testing.T) {
	f := mustLoad(t, writeFleet(t, `
clusters: {
	"prod-1": {labels: env: "prod"}
	"prod-2": {labels: env: "prod"}
	"prod-3": {labels: env: "prod"}
	"dev-1": {labels: env: "dev"}
}
bundles: crds: resources: []
invariants: "crd-versions": {
	description: "one CRD version per environment"
	groupBy: "labels.env"
	same: [{match: {kind: "CustomResourceDefinition", metadata: name: =~"[.]example[.]com$"}, field: "spec.versions.*.name"}]
}
`))
	plans, ds, err := f.PlanInventory(context.Background(), nil)
	if err != nil || len(ds) > 0 {
		t.Fatalf("plan: %v %v", ds, err)
	}
	st := f.NewInvariantState()
	for _, p := range plans {
		st.Add(p)
	}
	if ds := st.Check(); len(ds) != 0 || f.RenderedInvariants() != 1 {
		t.Fatalf("before rendering: %v (%d rendered rules)", ds, f.RenderedInvariants())
	}
	crd := func(name string, versions ...string) *unstructured.Unstructured {
		var b strings.Builder
		fmt.Fprintf(&b, "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: %s}\nspec:\n  versions:\n", name)
		for _, v := range versions {
			fmt.Fprintf(&b, "  - {name: %s, served: true}\n", v)
		}
		return obj(t, b.String())
	}
	objects := map[string][]*unstructured.Unstructured{
		"prod-1": {crd("widgets.example.com", "v1"), crd("gadgets.example.com", "v1"), crd("other.example.org", "v1")},
		"prod-2": {crd("widgets.example.com", "v1", "v2"), crd("gadgets.example.com", "v1"), crd("other.example.org", "v9")},
		"prod-3": {crd("gadgets.example.com", "v1")}, // no widgets: not compared
		"dev-1":  {crd("widgets.example.com", "v3")},
	}
	for _, p := range plans {
		st.AddRendered(p.Cluster, []fleet.RenderedBundle{{Name: "crds", Objects: objects[p.Cluster.Name]}})
	}
	got := st.Check()
	want := `invariants.crd-versions.same[0]: invariant crd-versions (one CRD version per environment) breaks in group labels.env=prod: CustomResourceDefinition widgets.example.com: spec.versions.*.name differs: ["v1","v2"] on prod-2; ["v1"] on prod-1`
	if len(got) != 1 || !strings.Contains(got.Error(), want) || !strings.Contains(got.Error(), "fleet.cue:") {
		t.Fatalf("got %v\nwant one break: %s", got, want)
	}
	if c := got[0].Clusters; len(c) != 2 || c[0] != "prod-1" || c[1] != "prod-2" {
		t.Errorf("clusters %v, want the two that have the object", c)
	}
}
