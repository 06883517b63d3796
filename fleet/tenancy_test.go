package fleet_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/fleet"
)

// policy is a tenancy policy as a platform team writes it: closed tenants,
// concrete values.
const policy = `tenancy: {
	platform: ["platform-*"]
	tenants: close({
		"team-a": {
			bundles: ["a-*"]
			namespaces: ["team-a", "team-a-*"]
			serviceAccounts: ["deployer"]
			clusterKinds: ["Namespace"]
			files: ["team-a*.cue"]
		}
		"team-b": {
			bundles: ["b-*"]
			namespaces: ["team-b"]
			serviceAccounts: ["deployer"]
			clusterKinds: []
			files: ["team-b*.cue"]
		}
	})
}
`

// TestTenancyGrants plans a fleet with a tenancy policy: a tenant's bundle
// gets its grant, a platform bundle none.
func TestTenancyGrants(t *testing.T) {
	f := mustLoad(t, writeFleet(t, policy+`
bundles: "a-web": {namespace: "team-a-web", serviceAccountName: "deployer", resources: []}
bundles: "platform-dns": {namespace: "kube-system", resources: []}
`))
	p := mustPlan(t, f, euProd)
	web, dns := p.Bundle("a-web"), p.Bundle("platform-dns")
	if web == nil || web.Failed() || dns == nil || dns.Failed() {
		t.Fatalf("plan: %+v / %+v", web, dns)
	}
	if web.Tenant == nil || web.Tenant.Tenant != "team-a" || !web.Tenant.AllowsNamespace("team-a-web") ||
		web.Tenant.AllowsNamespace("team-b") || !web.Tenant.AllowsClusterKind("Namespace") || web.Tenant.AllowsClusterKind("ClusterRole.rbac.authorization.k8s.io") {
		t.Errorf("team-a's grant: %+v", web.Tenant)
	}
	if dns.Tenant != nil {
		t.Errorf("a platform bundle has a grant: %+v", dns.Tenant)
	}
}

// TestTenancyRefusals checks each way a bundle can break the policy: the
// bundle fails (for every cluster, or for the clusters it breaks it for)
// with the policy's words and the position to fix.
func TestTenancyRefusals(t *testing.T) {
	cases := []struct {
		name, bundles string
		want          []string
	}{
		{"another tenant's namespace",
			`bundles: "a-web": {namespace: "team-b", serviceAccountName: "deployer", resources: []}`,
			[]string{"fleet.cue:23:", "cluster prod-eu-1", "bundle a-web", `namespace "team-b" is not one of tenant team-a's namespaces [team-a, team-a-*]`}},
		{"the namespace only for some clusters",
			`bundles: "a-web": {namespace: *"team-a" | string, serviceAccountName: "deployer", resources: []
	overlays: [{regions: ["eu-*"], namespace: "kube-system"}]}`,
			[]string{"bundle a-web", `namespace "kube-system"`}},
		{"no ServiceAccount",
			`bundles: "a-web": {namespace: "team-a", resources: []}`,
			[]string{"fleet.cue:23:", "must name its serviceAccountName, one of [deployer]", "never applies with the agent's identity"}},
		{"the agent's ServiceAccount",
			`bundles: "a-web": {namespace: "team-a", serviceAccountName: "flotilla-agent", resources: []}`,
			[]string{"fleet.cue:23:", `ServiceAccount "flotilla-agent" is not one of tenant team-a's accounts [deployer]`}},
		{"owned by nobody",
			`bundles: "c-web": {namespace: "team-a", serviceAccountName: "deployer", resources: []}`,
			[]string{"fleet.cue:23:", "fleet.cue:3:", "belongs to no one", "tenancy.platform"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := fleet.Load(writeFleet(t, policy+"\n"+tc.bundles), fleet.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			p := mustPlan(t, f, euProd)
			if len(p.Bundles) != 1 || !p.Bundles[0].Failed() {
				t.Fatalf("the bundle did not fail: %+v", p.Bundles)
			}
			msg := p.Bundles[0].Errors.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			// vet reports it.
			if ds := fleet.Problems([]*fleet.Plan{p}, nil); len(ds) == 0 {
				t.Error("vet found nothing")
			}
		})
	}
}

// TestTenancyOwnedTwice: two owners for one bundle fail it, naming both.
func TestTenancyOwnedTwice(t *testing.T) {
	f := mustLoad(t, writeFleet(t, `tenancy: {
	platform: ["web"]
	tenants: x: {bundles: ["w*"], namespaces: ["x"], serviceAccounts: ["d"], clusterKinds: [], files: []}
}
bundles: web: {resources: []}`))
	b := mustPlan(t, f, euProd).Bundle("web")
	if b == nil || !b.Failed() || !strings.Contains(b.Errors.Error(), "belongs to the platform (tenancy.platform) and tenant x") {
		t.Fatalf("bundle owned twice: %+v", b)
	}
}

// TestTenancyCannotBeWidenedFromAnotherFile: a team's file can neither add
// a tenant to a closed policy nor widen its own tenant: the fleet fails to
// load, so an agent applies nothing from that commit.
func TestTenancyCannotBeWidenedFromAnotherFile(t *testing.T) {
	for name, src := range map[string]string{
		"new tenant":      `tenancy: tenants: evil: {bundles: ["e-*"], namespaces: ["kube-system"], serviceAccounts: ["default"]}`,
		"wider namespace": `tenancy: tenants: "team-a": namespaces: ["kube-system"]`,
		"more accounts":   `tenancy: tenants: "team-a": serviceAccounts: ["deployer", "admin"]`,
		"platform grab":   `tenancy: platform: ["*"]`,
		"cluster kinds":   `tenancy: tenants: "team-b": clusterKinds: ["ClusterRoleBinding.rbac.authorization.k8s.io"]`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := fleet.Load(writeFleet(t, policy, "team.cue", "package fleet\n\n"+src+"\n"), fleet.LoadOptions{})
			if err == nil || !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("a team's file widened the policy: %v", err)
			}
			if !strings.Contains(err.Error(), "tenancy") {
				t.Errorf("the error does not name the policy: %v", err)
			}
		})
	}
}

// TestTenancyMustBeConcrete: a policy that depends on the cluster, or with
// a bad pattern or kind, fails the fleet.
func TestTenancyMustBeConcrete(t *testing.T) {
	for name, tc := range map[string]struct{ src, want string }{
		"depends on cluster": {`tenancy: tenants: x: {bundles: ["x"], namespaces: [cluster.name], serviceAccounts: ["d"]}`, "must be concrete"},
		"bad pattern":        {`tenancy: platform: [], tenancy: tenants: x: {files: [], clusterKinds: [], bundles: ["x["], namespaces: ["x"], serviceAccounts: ["d"]}`, `tenancy.tenants.x.bundles: invalid pattern "x["`},
		"bad kind":           {`tenancy: platform: [], tenancy: tenants: x: {files: [], bundles: ["x"], namespaces: ["x"], serviceAccounts: ["d"], clusterKinds: ["rbac.authorization.k8s.io/ClusterRole"]}`, "is not a kind"},
		"missing field":      {`tenancy: platform: [], tenancy: tenants: x: {bundles: ["x"], namespaces: ["x"], serviceAccounts: ["d"], files: []}`, "tenancy.tenants.x.clusterKinds: required: write it (`[]` for none)"},
		"bad account":        {`tenancy: tenants: x: {bundles: ["x"], namespaces: ["x"], serviceAccounts: ["Admin"]}`, "serviceAccounts"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := fleet.Load(writeFleet(t, tc.src+"\nbundles: x: resources: []"), fleet.LoadOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "fleet.cue:3:") {
				t.Fatalf("got %v, want %q at fleet.cue:3", err, tc.want)
			}
		})
	}
}

// TestNoTenancyNoGrants: without a policy, nothing changes.
func TestNoTenancyNoGrants(t *testing.T) {
	p := mustPlan(t, mustLoad(t, writeFleet(t, `bundles: web: {namespace: "kube-system", serviceAccountName: "x", resources: []}`)), euProd)
	if b := p.Bundle("web"); b == nil || b.Failed() || b.Tenant != nil {
		t.Fatalf("%+v", b)
	}
}

// TestTenantFileAddsOnlyToItsOwnBundles: a tenant's file that adds to a
// bundle of the platform or of another tenant — an overlay with a
// ClusterRoleBinding to cluster-admin, applied with the agent's identity —
// fails that bundle in every plan, positioned in the tenant's file; the
// tenant's own bundles, and the rest of the fleet, are planned.
func TestTenantFileAddsOnlyToItsOwnBundles(t *testing.T) {
	const escalation = `{
	apiVersion: "rbac.authorization.k8s.io/v1"
	kind:       "ClusterRoleBinding"
	metadata: name: "team-a-help"
	roleRef: {apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "cluster-admin"}
	subjects: [{kind: "ServiceAccount", name: "deployer", namespace: "team-a"}]
}`
	platform := policy + `
bundles: "platform-dns": {namespace: "kube-system", resources: []}
bundles: "b-web": {namespace: "team-b", serviceAccountName: "deployer", resources: []}
`
	for name, tc := range map[string]struct{ file, src, victim, whose string }{
		"a platform bundle's keyed overlay": {"team-a.cue", `bundles: "a-web": {namespace: "team-a", serviceAccountName: "deployer", resources: []}
bundles: "platform-dns": overlays: "team-a-help": {resources: [` + escalation + `]}`, "platform-dns", "the platform"},
		"another tenant's bundle": {"team-a-extra.cue", `bundles: {
	"a-web": {namespace: "team-a", serviceAccountName: "deployer", resources: []}
	"b-web": values: x: 1
}`, "b-web", "tenant team-b"},
		"quoted differently": {"team-a.cue", `bundles: "a-web": {namespace: "team-a", serviceAccountName: "deployer", resources: []}
bundles: "platform-\u0064ns": resources: [` + escalation + `]`, "platform-dns", "the platform"},
	} {
		t.Run(name, func(t *testing.T) {
			f := mustLoad(t, writeFleet(t, platform, tc.file, "package fleet\n\n"+tc.src+"\n"))
			p := mustPlan(t, f, euProd)
			victim := p.Bundle(tc.victim)
			if victim == nil || !victim.Failed() {
				t.Fatalf("%s took a tenant's contribution: %+v", tc.victim, victim)
			}
			msg := victim.Errors.Error()
			for _, want := range []string{tc.file + ":", "tenant team-a's file " + tc.file, "belongs to " + tc.whose, "tenancy.tenants.team-a.files"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not say %q", msg, want)
				}
			}
			if web := p.Bundle("a-web"); web == nil || web.Failed() {
				t.Errorf("the tenant's own bundle failed: %+v", web)
			}
			if tc.victim != "platform-dns" {
				if dns := p.Bundle("platform-dns"); dns == nil || dns.Failed() {
					t.Errorf("an untouched bundle failed: %+v", dns)
				}
			}
		})
	}
}

// TestTenantFileCannotReachFurther: a tenant's file whose top level could
// add to any bundle or to the policy — a pattern, a computed label, a
// top-level condition, a helper other files refer to, an embedding — fails
// the fleet, positioned, so an agent applies nothing from that commit.
func TestTenantFileCannotReachFurther(t *testing.T) {
	platform := policy + `
bundles: "platform-dns": {namespace: "kube-system", resources: [], overlays: _extra}
_extra: [string]: {}
`
	for name, src := range map[string]string{
		"pattern":            `bundles: [string]: overlays: x: {resources: []}`,
		"pattern in struct":  `bundles: {[N=string]: overlays: x: {resources: []}}`,
		"computed label":     `let n = "platform-dns"` + "\n" + `bundles: (n): overlays: x: {resources: []}`,
		"interpolated label": `let n = "dns"` + "\n" + `bundles: "platform-\(n)": overlays: x: {resources: []}`,
		"top-level if":       `if cluster.region == "eu-west-1" {bundles: "platform-dns": overlays: x: {resources: []}}`,
		"comprehension":      `bundles: {for k, _ in bundles {(k): overlays: x: {resources: []}}}`,
		"hidden helper":      `_extra: x: {resources: []}`,
		"definition":         `#Bundle: overlays: x: {resources: []}`,
		"embedding":          `{bundles: "platform-dns": overlays: x: {resources: []}}`,
		"bundles reference":  `bundles: _b` + "\n" + `let _b = {}`,
		"policy":             `tenancy: platform: ["platform-*"]`,
		"rollout":            `rollout: waves: []`,
		"quoted top level":   `"bundles": [string]: values: x: 1`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := fleet.Load(writeFleet(t, platform, "team-a.cue", "package fleet\n\n"+src+"\n"), fleet.LoadOptions{})
			if err == nil {
				t.Fatal("a tenant's file reached beyond its bundles and the fleet loaded")
			}
			if !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("not a fleet problem: %v", err)
			}
			if msg := err.Error(); !strings.Contains(msg, "team-a.cue:") || !strings.Contains(msg, "tenant team-a's file (tenancy.tenants.team-a.files) may add only to its own bundles") {
				t.Errorf("the refusal does not name the tenant's file and the rule: %v", err)
			}
		})
	}
}

// TestTenantFilesPolicy: a file two tenants claim fails the fleet; a
// tenant's file of its own bundles, with imports and let clauses, loads.
func TestTenantFilesPolicy(t *testing.T) {
	twice := strings.Replace(policy, `files: ["team-b*.cue"]`, `files: ["team-*.cue"]`, 1)
	_, err := fleet.Load(writeFleet(t, twice, "team-a.cue", "package fleet\n"), fleet.LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), "file team-a.cue belongs to tenants team-a and team-b") {
		t.Fatalf("a file claimed twice: %v", err)
	}
	f := mustLoad(t, writeFleet(t, policy, "team-a.cue", `package fleet

import "strings"

let ns = strings.ToLower("TEAM-A")

// The team's bundle.
bundles: "a-web": {
	namespace:          ns
	serviceAccountName: "deployer"
	if cluster.region == "eu-west-1" {values: eu: true}
	resources: []
}
bundles: {"a-jobs": {namespace: ns, serviceAccountName: "deployer", resources: []}}
`))
	p := mustPlan(t, f, euProd)
	for _, b := range []string{"a-web", "a-jobs"} {
		if got := p.Bundle(b); got == nil || got.Failed() {
			t.Errorf("the tenant's own bundle %s: %+v", b, got)
		}
	}
}

// TestTenantFilesHoweverThePathIsSpelt: the fleet's path as the agent,
// hydrate or preview are given it (./teams, teams/., teams//,
// teams/../teams) changes nothing: a tenant's file is the tenant's, and
// its addition to a platform bundle fails that bundle. A file named like
// the tenant's but for case is the tenant's too.
func TestTenantFilesHoweverThePathIsSpelt(t *testing.T) {
	for _, file := range []string{"team-a-evil.cue", "Team-A-Evil.cue"} {
		dir := writeFleet(t, "", "teams/fleet.cue", "package fleet\n\n"+policy+`
bundles: "platform-dns": {namespace: "kube-system", resources: []}
`, "teams/"+file, "package fleet\n\nbundles: \"platform-dns\": overlays: help: resources: []\n")
		if err := os.Remove(filepath.Join(dir, "fleet.cue")); err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"teams", "./teams", "teams/.", "teams//", "teams/../teams", "teams/"} {
			f, err := fleet.Load(dir, fleet.LoadOptions{Path: path})
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			dns := mustPlan(t, f, euProd).Bundle("platform-dns")
			if dns == nil || !dns.Failed() || !strings.Contains(dns.Errors.Error(), "tenant team-a's file "+file) {
				t.Errorf("--path %s, %s: the platform bundle took a tenant's overlay: %+v", path, file, dns)
			}
		}
	}
}
