package fleet_test

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/fleet"
)

const policyFleet = `
clusters: {
	"eu-1": {labels: class: "regulated"}
	"us-1": {labels: class: "standard"}
}
bundles: web: resources: []
policies: "regulated-baseline": {
	target: clusterSelector: matchLabels: class: "regulated"
	require: [{apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: name: "default-deny"}]
	forbid: [{apiVersion: "v1", kind: "Service", spec: type: "LoadBalancer"}]
	constrain: [{
		match: {apiVersion: "apps/v1", kind: "Deployment"}
		spec: template: spec: securityContext: runAsNonRoot: true
	}]
}
policies: replicas: {
	namespaces: ["shop"]
	constrain: [{match: kind: "Deployment", spec: replicas: >=2 & <=10}]
}
`

func obj(t *testing.T, y string) *unstructured.Unstructured {
	t.Helper()
	o := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(y), &o.Object); err != nil {
		t.Fatal(err)
	}
	return o
}

// TestPolicies: require, forbid and constrain over a cluster's rendered
// objects, for the clusters a policy's target chooses, in the namespaces
// it names; each problem names the policy's entry and line, the cluster,
// the bundle, the object and the field.
func TestPolicies(t *testing.T) {
	f := mustLoad(t, writeFleet(t, policyFleet))
	netpol := obj(t, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: default-deny, namespace: shop}\nspec: {podSelector: {}}\n")
	lb := obj(t, "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {type: LoadBalancer}\n")
	deploy := obj(t, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec: {replicas: 1, template: {spec: {containers: [{name: web, image: web}]}}}\n")
	safe := obj(t, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: shop}\nspec: {replicas: 3, template: {spec: {securityContext: {runAsNonRoot: true}, containers: [{name: api, image: api}]}}}\n")

	eu, err := f.InventoryCluster("eu-1")
	if err != nil {
		t.Fatal(err)
	}
	ds := f.CheckPolicies(eu, []fleet.RenderedBundle{{Name: "net", Objects: []*unstructured.Unstructured{netpol}}, {Name: "web", Objects: []*unstructured.Unstructured{lb, deploy, safe}}})
	got := ds.Error()
	for _, want := range []string{
		"fleet.cue:12:11: cluster eu-1: bundle web: policies.regulated-baseline.forbid[0]: policy regulated-baseline forbids {apiVersion: \"v1\", kind: \"Service\", spec: type: \"LoadBalancer\"}",
		"Service shop/web matches it (spec.type)",
		"cluster eu-1: bundle web: policies.regulated-baseline.constrain[0]: policy regulated-baseline: Deployment shop/web must match",
		"spec.template.spec.securityContext is missing",
		"cluster eu-1: bundle web: policies.replicas.constrain[0]: policy replicas: Deployment shop/web must match",
		"spec.replicas: invalid value 1 (out of bound >=2)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("lacks %q:\n%s", want, got)
		}
	}
	if len(ds) != 3 || strings.Contains(got, "shop/api") || strings.Contains(got, "require") {
		t.Errorf("%d problems:\n%s", len(ds), got)
	}

	// Without the NetworkPolicy, the requirement fails; a standard
	// cluster is not held to the regulated baseline.
	ds = f.CheckPolicies(eu, []fleet.RenderedBundle{{Name: "web", Objects: []*unstructured.Unstructured{safe}}})
	if len(ds) != 1 || !strings.Contains(ds.Error(), "fleet.cue:11:") || !strings.Contains(ds.Error(), "policy regulated-baseline requires an object matching") {
		t.Errorf("require:\n%s", ds.Error())
	}
	us, _ := f.InventoryCluster("us-1")
	ds = f.CheckPolicies(us, []fleet.RenderedBundle{{Name: "web", Objects: []*unstructured.Unstructured{lb, safe}}})
	if len(ds) != 0 {
		t.Errorf("us-1:\n%s", ds.Error())
	}
}

// TestPolicyErrors: a policy is the same for every cluster.
func TestPolicyErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`policies: p: {target: when: true, require: [{kind: "A"}]}`, "cannot use `when`"},
		{`policies: p: {target: when: cluster.region == "x", require: [{kind: "A"}]}`, "policies are the same for every cluster"},
		{`policies: p: require: [{kind: cluster.name}]`, "policies are the same for every cluster"},
		{`policies: p: {require: [{kind: "A"}], _x: cluster.region}`, "policies are the same for every cluster"},
		{`policy: p: {}`, "unknown top-level field"},
	} {
		_, err := fleet.Load(writeFleet(t, "bundles: web: resources: []\n"+tc.src), fleet.LoadOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.src, err)
		}
	}
}

// TestPolicyViolationsByBundle: what the agent fails — a forbid on the
// bundle whose object breaks it; a require on every bundle in the
// policy's scope (its bundles' patterns).
func TestPolicyViolationsByBundle(t *testing.T) {
	f := mustLoad(t, writeFleet(t, `
bundles: web: resources: []
policies: net: {
	bundles: ["net*", "web"]
	require: [{kind: "NetworkPolicy"}]
}
policies: lb: forbid: [{kind: "Service", spec: type: =~"^(LoadBalancer|NodePort)$"}]
`))
	lb := obj(t, "apiVersion: v1\nkind: Service\nmetadata: {name: edge, namespace: shop}\nspec: {type: NodePort}\n")
	cm := obj(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: shop}\n")
	got := f.PolicyViolations(fleet.Cluster{Name: "c1"}, []fleet.RenderedBundle{
		{Name: "netpol", Objects: []*unstructured.Unstructured{cm}},
		{Name: "web", Objects: []*unstructured.Unstructured{cm}},
		{Name: "edge", Objects: []*unstructured.Unstructured{lb}},
	})
	if len(got["netpol"]) != 1 || len(got["web"]) != 1 || !strings.Contains(got["web"].Error(), "policy net requires") {
		t.Errorf("require: %v", got)
	}
	if len(got["edge"]) != 1 || !strings.Contains(got["edge"].Error(), "policy lb forbids") || !strings.Contains(got["edge"].Error(), "Service shop/edge") {
		t.Errorf("edge: %v", got["edge"])
	}
}

// TestPlansSayTheFleetHasPolicies: every plan says so, also those made on
// the parallel planners of a large inventory (the agent relies on it).
func TestPlansSayTheFleetHasPolicies(t *testing.T) {
	var b strings.Builder
	b.WriteString("clusters: {\n")
	for i := range 40 {
		b.WriteString("\t\"c" + strings.Repeat("x", i%3) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "\": {}\n")
	}
	b.WriteString("}\nbundles: web: resources: []\npolicies: p: forbid: [{kind: \"Service\"}]\n")
	f := mustLoad(t, writeFleet(t, b.String()))
	plans, problems, err := f.PlanInventory(t.Context(), nil)
	if err != nil || len(problems) > 0 || len(plans) != 40 {
		t.Fatal(err, problems, len(plans))
	}
	for _, p := range plans {
		if p.Policies != 1 {
			t.Fatalf("cluster %s: plan says %d policies", p.Cluster.Name, p.Policies)
		}
	}
}
