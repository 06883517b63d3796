package fleet

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/flotilla-gitops/flotilla/internal/synthfleet"
)

const onePassClusters = `
clusters: {
	"eu-1": {region: "eu-west-1", labels: {env: "prod", class: "regulated"}}
	"eu-2": {region: "eu-central-1", labels: {env: "staging", class: "standard"}}
	"us-1": {region: "us-east-1", labels: {env: "prod", class: "standard", team: "search"}}
}
`

// TestOnePassPlansLikeTwo plans fleets both ways — in one evaluation where
// planOnePass can, and always in two — for every inventory cluster, and
// requires the same plans. It also checks where one evaluation is used:
// everywhere for ordinary fleets, and nowhere (or not for the clusters
// concerned) where a fleet does what one evaluation cannot decide alike.
func TestOnePassPlansLikeTwo(t *testing.T) {
	cases := []struct {
		name string
		src  string
		// onePass: "all", "none", or the clusters planned in one evaluation.
		onePass string
		// pruned: the bundles a cluster that does not get them may leave
		// out (prune.go).
		pruned string
	}{
		{"ordinary", `
rollout: waves: [{name: "canary", names: ["eu-2"]}, {name: "rest"}]
bundles: web: {
	namespace: "web"
	target: when: cluster.labels.env == "prod" || cluster.region =~ "^eu-"
	values: {replicas: *2 | int, host: "web.\(cluster.region).example.com", tier: *"std" | string}
	resources: cm: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "web", data: {replicas: "\(values.replicas)", tier: values.tier}}
	overlays: [
		{clusterSelector: matchLabels: class: "regulated", values: {replicas: 3, tier: "gold"}},
		{regions: ["eu-*"], values: residency: "eu-\(cluster.name)"},
		{when: cluster.labels.env == "staging", values: replicas: 1},
	]
}
bundles: db: {
	namespace: "db"
	dependsOn: ["web"]
	target: clusterSelector: matchExpressions: [{key: "env", operator: "In", values: ["prod"]}]
	helm: {chart: "charts/db", releaseName: "db-\(cluster.name)"}
	values: size: *"small" | string
	overlays: {
		big: {names: ["us-*"], values: size: "large"}
		eu: {regions: ["eu-*"], helm: version: "1.2.3"}
	}
}
bundles: all: {namespace: "all", manifests: path: "m"}
`, "all", "all db web"},
		{"an overlay reads its own bundle", `
bundles: web: {
	namespace: "web"
	resources: cm: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "web", data: n: "\(values.replicas)"}
	values: {base: 2, replicas: *base | int}
	overlays: [{regions: ["eu-*"], values: replicas: bundles.web.values.base + 1}]
}
`, "none", ""},
		// Without a cluster, cluster.region is its default "": the `when`
		// is concrete (false), and right only for us-1.
		{"a when reads a helper", `
_eu: ["eu-west-1", "eu-central-1"]
bundles: web: {
	namespace: "web"
	target: when: list.Contains(_eu, cluster.region)
	manifests: path: "m"
}
`, "us-1", ""},
		{"a when reads a helper, with no default to read", `
_prod: ["prod"]
bundles: web: {
	namespace: "web"
	target: when: list.Contains(_prod, cluster.labels.env)
	manifests: path: "m"
}
`, "none", ""},
		{"the cluster brings an overlay", `
bundles: web: {namespace: "web", manifests: path: "m", values: x: *0 | int}
if cluster.region == "eu-west-1" {
	bundles: web: overlays: [{values: x: 1}]
}
`, "eu-2 us-1", ""},
		{"the cluster knocks out a default", `
bundles: web: {namespace: "web", manifests: path: "m", target: regions: *["eu-*"] | [...string]}
if cluster.labels.env == "staging" {
	bundles: web: target: regions: ["*"]
}
`, "eu-1 us-1", ""},
		{"the cluster brings an overlay field that reads another bundle", `
bundles: other: {
	namespace: "other"
	manifests: path: "m"
	values: x: *1 | int
	overlays: [{regions: ["eu-*"], values: x: 2}]
}
bundles: web: {
	namespace: "web"
	resources: cm: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "web", data: b: "\(values.b)"}
	values: b: *0 | int
	overlays: [{regions: ["eu-*"], values: a: 1}]
}
if cluster.region == "eu-west-1" {
	bundles: web: overlays: [{values: b: bundles.other.values.x}]
}
`, "eu-2 us-1", ""},
		{"the fleet adds to the schema", `
#Overlay: values: extra: *1 | int
bundles: web: {namespace: "web", manifests: path: "m", overlays: [{regions: ["eu-*"], values: a: 1}]}
`, "none", ""},
		{"a when reads a label some clusters lack", `
bundles: web: {namespace: "web", manifests: path: "m", target: when: cluster.labels.team == "search"}
`, "us-1", "web"},
		// A bundle that reads another: nothing may be left out, for the
		// reader would see a bundle without values.
		{"a bundle reads another", `
bundles: eu: {namespace: "eu", target: regions: ["eu-*"], values: size: 3, manifests: path: "m"}
bundles: web: {
	namespace: "web"
	resources: cm: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "web", data: n: "\(bundles.eu.values.size)"}
}
`, "all", ""},
		// A pattern over every bundle could read what is left out.
		{"a pattern over every bundle", `
bundles: [string]: values: region: cluster.region
bundles: eu: {namespace: "eu", target: regions: ["eu-*"], manifests: path: "m"}
bundles: us: {namespace: "us", target: regions: ["us-*"], manifests: path: "m"}
`, "all", ""},
		// A bundle whose target reads its own values is kept whole; a
		// bundle with a comprehension in its body too.
		{"bundles that must stay whole", `
_eu: ["eu-*"]
bundles: eu: {namespace: "eu", target: regions: _eu, manifests: path: "m"}
bundles: us: {namespace: "us", target: regions: ["us-*"], manifests: path: "m", if cluster.labels.env == "prod" {values: big: true}}
bundles: ap: {namespace: "ap", target: regions: ["ap-*"], manifests: path: "m"}
`, "all", "ap"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := "package fleet\n\nimport \"list\"\n\n_list: list.Contains([], 1)\n" + onePassClusters + tc.src
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "fleet.cue"), []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			once, pruned, _ := comparePlans(t, dir)
			if tc.pruned == "all" {
				tc.pruned = "all db web"
			}
			if got := join(pruned); got != tc.pruned {
				t.Errorf("bundles that may be left out: %q, want %q", got, tc.pruned)
			}
			want := tc.onePass
			switch want {
			case "all":
				want = "eu-1 eu-2 us-1"
			case "none":
				want = ""
			}
			if got := join(once); got != want {
				t.Errorf("planned in one evaluation: %q, want %q", got, want)
			}
		})
	}
}

// TestStaticSelection checks which bundles' targets and overlays count as
// the same for every cluster (so that a plan does not read them back from
// the evaluated fleet), and that plans of a fleet mixing both are the
// general way's.
func TestStaticSelection(t *testing.T) {
	src := "package fleet\n\nimport \"list\"\n" + onePassClusters + `
_eu: ["eu-*"]
bundles: plain: {
	namespace: "plain"
	manifests: path: "m"
	target: regions: ["eu-*", "us-*"]
	overlays: [{clusterSelector: matchLabels: class: "regulated", values: replicas: 3}]
}
bundles: imports: {namespace: "imports", manifests: path: "m", target: when: list.Contains(["a"], "a")}
bundles: when: {namespace: "when", manifests: path: "m", target: when: cluster.labels.env == "prod"}
bundles: helper: {namespace: "helper", manifests: path: "m", target: regions: _eu}
bundles: reads: {
	namespace: "reads"
	manifests: path: "m"
	overlays: [{regions: ["eu-*"], values: region: cluster.region}]
}
bundles: split: {namespace: "split", manifests: path: "m", values: big: *false | bool}
bundles: split: overlays: [{regions: ["eu-*"], values: zone: "\(cluster.region)-a"}]
`
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fleet.cue"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	once, _, _ := comparePlans(t, dir)
	if len(once) != 3 {
		f, _ := Load(dir, LoadOptions{})
		t.Errorf("planned in one evaluation: %v, want every cluster (%s)", once, f.onePassInfo().why)
	}
	f, err := Load(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.withoutInventory(); err != nil {
		t.Fatal(err)
	}
	var static []string
	for name, pb := range f.onePassInfo().bundles {
		if pb.static {
			static = append(static, name)
		}
	}
	slices.Sort(static)
	if got := join(static); got != "imports plain" {
		t.Errorf("bundles whose selection is the same for every cluster: %q, want %q", got, "imports plain")
	}
}

// TestOnePassOnRealFleets checks that the demo fleet, the example fleets
// and the synthetic fleet plan in one evaluation, alike.
func TestOnePassOnRealFleets(t *testing.T) {
	synth := t.TempDir()
	if err := synthfleet.Write(synth, 60, 20); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"..", "../examples/independent", synth} {
		f, err := Load(dir, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		once, pruned, roots := comparePlans(t, dir)
		if len(once) != len(f.Inventory()) || len(once) == 0 {
			t.Errorf("%s: %d of %d clusters planned in one evaluation (%s)", dir, len(once), len(f.Inventory()), f.onePassInfo().why)
		}
		if dir == synth && len(pruned) != 20 {
			t.Errorf("synthetic fleet: %d of 20 bundles may be left out", len(pruned))
		}
		if dir == synth && roots == 0 {
			t.Errorf("synthetic fleet: no cluster planned with bundles left out")
		}
	}
}

// comparePlans plans every inventory cluster of the fleet in dir both ways
// (one way as a batch does, leaving out the bundles a cluster does not get),
// fails on any difference, and returns the clusters planned in one
// evaluation, the bundles that may be left out and how many sets of them
// were.
func comparePlans(t *testing.T, dir string) (once, pruned []string, roots int) {
	t.Helper()
	one := planBothWays(t, dir, func(one *Fleet, c Cluster, _ *Plan, _ error) {
		if one.planOnePass(c.Normalized()) != nil {
			once = append(once, c.Name)
		}
	})
	p := one.onePassInfo().pruning
	if p == nil {
		return once, nil, 0
	}
	for name := range p.prunable {
		pruned = append(pruned, name)
	}
	slices.Sort(pruned)
	return once, pruned, len(p.roots)
}

// planBothWays loads the fleet in dir twice and plans every inventory
// cluster with each, in order: as a batch does, and always the general way
// (in two evaluations, nothing left out or reused); it fails on any
// difference. after, if not nil, is called with each cluster's batch plan.
// It returns the batch's Fleet.
func planBothWays(t *testing.T, dir string, after func(*Fleet, Cluster, *Plan, error)) *Fleet {
	t.Helper()
	one, err := Load(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	two, err := Load(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	two.noOnePass = true
	if err := one.withoutInventory(); err != nil {
		t.Fatal(err)
	}
	for _, c := range one.Inventory() {
		p1, err1 := one.Plan(c)
		p2, err2 := two.Plan(c)
		j1, _ := json.MarshalIndent(struct {
			P *Plan
			E error
		}{p1, err1}, "", " ")
		j2, _ := json.MarshalIndent(struct {
			P *Plan
			E error
		}{p2, err2}, "", " ")
		if !bytes.Equal(j1, j2) {
			t.Errorf("%s: cluster %s planned differently as a batch:\n%s\nthe general way:\n%s", dir, c.Name, j1, j2)
		}
		if after != nil {
			after(one, c, p1, err1)
		}
	}
	return one
}

func join(names []string) string {
	var b bytes.Buffer
	for i, n := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(n)
	}
	return b.String()
}

// TestOnePassIsNotRetriedInVain checks that a cluster whose one evaluation
// did not check out is planned the general way at once the next time (an
// agent plans its cluster every pass).
func TestOnePassIsNotRetriedInVain(t *testing.T) {
	dir := t.TempDir()
	src := "package fleet\n" + onePassClusters + `
bundles: web: {namespace: "web", manifests: path: "m", target: regions: *["eu-*"] | [...string]}
if cluster.labels.env == "staging" {
	bundles: web: target: regions: ["*"]
}
`
	if err := os.WriteFile(filepath.Join(dir, "fleet.cue"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Load(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"eu-1", "eu-2"} {
		c, err := f.InventoryCluster(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Plan(c); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.onePassInfo().evaluatedInVain; !got["eu-2"] || got["eu-1"] {
		t.Errorf("clusters evaluated in vain: %v, want eu-2 only", got)
	}
}

// TestPlansReuseBundles plans a fleet as a batch does, where bundles
// evaluated for one cluster are reused for the next cluster that reads the
// same of `cluster` and matches the same overlays (memo.go), and requires
// the general way's plans. It checks which bundles qualify and how often
// each was reused: a bundle that reads what differs between two clusters
// (a label, a label's default, an overlay's `when`) must not be.
func TestPlansReuseBundles(t *testing.T) {
	src := `package fleet

cluster: labels: tier: *"std" | string
cluster: _zone: "\(cluster.region)-a"
_sizes: {regulated: "large", standard: "small"}
_host: "h.\(_domain)"
_domain: "\(cluster.region).example.com"
_id: "id-\(cluster.name)"

clusters: {
	"eu-1": {region: "eu-west-1", labels: {env: "prod", class: "regulated", team: "a"}}
	"eu-2": {region: "eu-west-1", labels: {env: "prod", class: "regulated", team: "b"}}
	"eu-3": {region: "eu-west-1", labels: {env: "staging", class: "regulated", team: "a"}}
	"eu-4": {region: "eu-west-1", labels: {env: "prod", class: "standard", team: "a"}}
	"eu-5": {region: "eu-west-1", labels: {env: "prod", class: "regulated", team: "a", tier: "gold"}}
	"us-1": {region: "us-east-1", labels: {env: "prod", class: "regulated", team: "a"}}
	"us-2": {region: "us-east-1", labels: {env: "prod", class: "regulated", team: "a"}}
}

bundles: region: {
	namespace: "region"
	values: {host: "x.\(cluster.region).example.com", replicas: *2 | int}
	resources: cm: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "region", data: {host: values.host, n: "\(values.replicas)"}}
	overlays: [{clusterSelector: matchLabels: class: "regulated", values: replicas: 3}]
}
bundles: team: {
	namespace: "team"
	resources: cm: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "team", data: team: cluster.labels["team"]}
}
bundles: tier: {
	namespace: "tier"
	resources: cm: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "tier", data: tier: (cluster).labels.tier}
}
bundles: when: {
	namespace: "when"
	values: {region: cluster.region, replicas: *2 | int}
	resources: cm: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "when", data: {r: values.region, n: "\(values.replicas)"}}
	overlays: [{when: cluster.labels.env == "staging", values: replicas: 1}]
}
bundles: named: {
	namespace: "named"
	resources: cm: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "named", data: n: cluster.name}
}
bundles: helper: {
	namespace: "helper"
	resources: cm: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "helper", data: s: _sizes[cluster.labels.class]}
}
bundles: host: {
	namespace: "host"
	resources: cm: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "host", data: h: _host}
}
bundles: id: {
	namespace: "id"
	resources: cm: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "id", data: i: _id}
}
bundles: whole: {
	namespace: "whole"
	resources: cm: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "whole", data: {for k, v in cluster.labels {(k): v}}, metadata: annotations: c: "\(len(cluster))"}
}
bundles: hidden: {
	namespace: "hidden"
	resources: cm: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "hidden", data: z: cluster._zone}
}
bundles: waves: {
	namespace: "waves"
	rollout: waves: [{name: "eu", regions: ["eu-*"]}, {name: "rest"}]
	resources: cm: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "waves", data: r: cluster.region}
}
`
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fleet.cue"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	one := planBothWays(t, dir, func(_ *Fleet, c Cluster, p *Plan, err error) {
		if err != nil || len(p.Failed()) > 0 {
			t.Fatalf("%s: %v %v", c.Name, err, p.Failed())
		}
	})
	m := one.onePassInfo().memo
	if m == nil {
		t.Fatalf("no reuse: %s", one.onePassInfo().why)
	}
	var qualify []string
	for name := range m.reads {
		qualify = append(qualify, name)
	}
	slices.Sort(qualify)
	if got, want := join(qualify), "helper host region team tier waves when"; got != want {
		t.Errorf("bundles that may be reused: %q, want %q", got, want)
	}
	// Planned in inventory order: eu-1 … eu-5, us-1, us-2.
	want := map[string]int{
		"region": 4, // eu-2, eu-3, eu-5 as eu-1; us-2 as us-1 (eu-4 lacks the overlay)
		"team":   5, // all but eu-1 and eu-2 (team b)
		"tier":   5, // all but eu-1 and eu-5 (tier gold; the others the default)
		"when":   4, // eu-2, eu-4, eu-5 as eu-1; us-2 as us-1 (eu-3 is staging)
		"helper": 5, // all but eu-1 and eu-4 (class standard): _sizes reads nothing
		"host":   5, // eu-2 … eu-5 as eu-1, us-2 as us-1: _host reads the region through _domain
	}
	for _, name := range []string{"region", "team", "tier", "when", "helper", "host", "waves", "named", "id", "whole", "hidden"} {
		if m.hits[name] != want[name] {
			t.Errorf("bundle %s reused %d times, want %d", name, m.hits[name], want[name])
		}
	}
}
