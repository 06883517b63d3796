package fleet_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/synthfleet"
)

// writeFleet writes files (fleet.cue by default) of package fleet into a new
// repository folder and returns it.
func writeFleet(t *testing.T, src string, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{"fleet.cue": "package fleet\n\n" + src + "\n"}
	for i := 0; i+1 < len(extra); i += 2 {
		files[extra[i]] = extra[i+1]
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mustLoad(t *testing.T, dir string) *fleet.Fleet {
	t.Helper()
	f, err := fleet.Load(dir, fleet.LoadOptions{})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return f
}

func mustPlan(t *testing.T, f *fleet.Fleet, c fleet.Cluster) *fleet.Plan {
	t.Helper()
	p, err := f.Plan(c)
	if err != nil {
		t.Fatalf("plan for %s: %v", c.Name, err)
	}
	return p
}

// valuesOf decodes a planned bundle's values.
func valuesOf(t *testing.T, b *fleet.Bundle) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(b.Values, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

var euProd = fleet.Cluster{
	Name:   "prod-eu-1",
	Region: "eu-west-1",
	Labels: map[string]string{"env": "prod", "class": "regulated", "tier": "gold"},
}

// TestSelection checks every kind of target condition against one cluster,
// with Kubernetes label-selector semantics.
func TestSelection(t *testing.T) {
	cases := []struct {
		name   string
		target string
		want   bool
	}{
		{"no target", ``, true},
		{"empty selector", `target: {}`, true},
		{"empty clusterSelector", `target: clusterSelector: {}`, true},
		{"matchLabels match", `target: clusterSelector: matchLabels: env: "prod"`, true},
		{"matchLabels all must match", `target: clusterSelector: matchLabels: {env: "prod", class: "standard"}`, false},
		{"matchLabels absent key", `target: clusterSelector: matchLabels: team: "x"`, false},
		{"In match", `target: clusterSelector: matchExpressions: [{key: "tier", operator: "In", values: ["gold", "silver"]}]`, true},
		{"In mismatch", `target: clusterSelector: matchExpressions: [{key: "tier", operator: "In", values: ["bronze"]}]`, false},
		{"In absent key", `target: clusterSelector: matchExpressions: [{key: "team", operator: "In", values: ["a"]}]`, false},
		{"NotIn match", `target: clusterSelector: matchExpressions: [{key: "tier", operator: "NotIn", values: ["bronze"]}]`, true},
		{"NotIn mismatch", `target: clusterSelector: matchExpressions: [{key: "tier", operator: "NotIn", values: ["gold"]}]`, false},
		{"NotIn absent key matches", `target: clusterSelector: matchExpressions: [{key: "team", operator: "NotIn", values: ["a"]}]`, true},
		{"Exists", `target: clusterSelector: matchExpressions: [{key: "class", operator: "Exists"}]`, true},
		{"Exists absent", `target: clusterSelector: matchExpressions: [{key: "team", operator: "Exists"}]`, false},
		{"DoesNotExist", `target: clusterSelector: matchExpressions: [{key: "team", operator: "DoesNotExist"}]`, true},
		{"DoesNotExist present", `target: clusterSelector: matchExpressions: [{key: "env", operator: "DoesNotExist"}]`, false},
		{"labels and expressions both hold", `target: clusterSelector: {matchLabels: env: "prod", matchExpressions: [{key: "tier", operator: "In", values: ["gold"]}]}`, true},
		{"region glob", `target: regions: ["eu-*"]`, true},
		{"region glob mismatch", `target: regions: ["us-*", "ap-*"]`, false},
		{"region exact", `target: regions: ["eu-west-1"]`, true},
		{"region class glob", `target: regions: ["eu-west-[0-9]"]`, true},
		{"empty regions select nothing", `target: regions: []`, false},
		{"name glob", `target: names: ["prod-*"]`, true},
		{"name mismatch", `target: names: ["staging-*"]`, false},
		{"when true", `target: when: cluster.region == "eu-west-1"`, true},
		{"when false", `target: when: cluster.labels.env == "staging"`, false},
		{"when with guarded missing label", `target: when: (*cluster.labels.team | "") == ""`, true},
		{"all conditions must hold", `target: {regions: ["eu-*"], names: ["prod-*"], clusterSelector: matchLabels: env: "staging"}`, false},
		{"all conditions hold", `target: {regions: ["eu-*"], names: ["prod-*"], when: true, clusterSelector: matchLabels: env: "prod"}`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := mustLoad(t, writeFleet(t, `bundles: b: {resources: [], `+tc.target+`}`))
			p := mustPlan(t, f, euProd)
			got := p.Bundle("b") != nil
			if got != tc.want {
				t.Errorf("selected = %v, want %v (plan: %+v)", got, tc.want, p.NotSelected)
			}
			if got {
				if len(p.Bundles[0].SelectedBecause) == 0 || p.Bundles[0].Failed() {
					t.Errorf("selected bundle has no reason or failed: %+v", p.Bundles[0])
				}
			} else if len(p.NotSelected) != 1 || len(p.NotSelected[0].Because) == 0 {
				t.Errorf("not-selected bundle has no reason: %+v", p.NotSelected)
			}
		})
	}
}

// TestOverlaysStackInAnyOrder checks that every matching overlay applies,
// that overlays that do not match do not, and that the result does not
// depend on the order overlays are written in.
func TestOverlaysStackInAnyOrder(t *testing.T) {
	overlays := []string{
		`{name: "regulated", clusterSelector: matchLabels: class: "regulated", values: {podSecurity: "restricted", replicas: int & >=3}}`,
		`{name: "eu", regions: ["eu-*"], values: {residency: "eu", replicas: 4}}`,
		`{name: "gold", clusterSelector: matchLabels: tier: "gold", values: monitoring: scrape: "15s"}`,
		`{name: "us", regions: ["us-*"], values: residency: "us"}`,
	}
	base := `bundles: web: {
	helm: chart: "charts/web"
	values: {replicas: *2 | int, podSecurity: *"baseline" | string, monitoring: scrape: *"60s" | string}
	overlays: [%s]
}`
	forward := strings.Replace(base, "%s", strings.Join(overlays, ", "), 1)
	reversed := []string{overlays[3], overlays[2], overlays[1], overlays[0]}
	backward := strings.Replace(base, "%s", strings.Join(reversed, ", "), 1)

	var digests []string
	for _, src := range []string{forward, backward} {
		p := mustPlan(t, mustLoad(t, writeFleet(t, src)), euProd)
		b := p.Bundle("web")
		if b.Failed() {
			t.Fatalf("web failed: %v", b.Errors)
		}
		want := map[string]any{
			"replicas":    float64(4),
			"podSecurity": "restricted",
			"residency":   "eu",
			"monitoring":  map[string]any{"scrape": "15s"},
		}
		if got := valuesOf(t, b); !reflect.DeepEqual(got, want) {
			t.Errorf("values = %v, want %v", got, want)
		}
		var names []string
		for _, o := range b.Overlays {
			names = append(names, o.Name)
		}
		if len(names) != 3 || strings.Contains(strings.Join(names, ","), "us") {
			t.Errorf("matched overlays %v, want regulated, eu, gold", names)
		}
		digests = append(digests, b.InputsDigest)
	}
	if digests[0] != digests[1] {
		t.Errorf("inputs digest depends on overlay order: %s vs %s", digests[0], digests[1])
	}
}

// TestOverlayReferencesSeeOverlayValues checks that CUE in the bundle that
// refers to values sees the value an overlay set.
func TestOverlayReferencesSeeOverlayValues(t *testing.T) {
	src := `bundles: app: {
	values: replicas: *1 | int
	resources: deploy: {
		apiVersion: "apps/v1", kind: "Deployment"
		metadata: {name: "app", namespace: "default"}
		spec: replicas: values.replicas
	}
	overlays: [{regions: ["eu-*"], values: replicas: 5}]
}`
	b := mustPlan(t, mustLoad(t, writeFleet(t, src)), euProd).Bundle("app")
	if b.Failed() {
		t.Fatal(b.Errors)
	}
	var objects []map[string]any
	if err := json.Unmarshal(b.Source.Resources, &objects); err != nil {
		t.Fatal(err)
	}
	spec := objects[0]["spec"].(map[string]any)
	if spec["replicas"] != float64(5) {
		t.Errorf("resource replicas = %v, want the overlay's 5", spec["replicas"])
	}
}

// TestConflictsNameBothPositions checks that two overlays setting one field
// to different values, or an overlay loosening a class constraint, fail the
// bundle (not the plan) with the bundle, the field and both lines.
func TestConflictsNameBothPositions(t *testing.T) {
	cases := []struct {
		name      string
		overlays  string
		wantLines []string
		wantMsg   string
	}{
		{
			name: "two overlays, two values",
			overlays: `
		{regions: ["eu-*"], values: replicas: 3},
		{clusterSelector: matchLabels: env: "prod", values: replicas: 5},`,
			wantLines: []string{"fleet.cue:7:41", "fleet.cue:8:65"},
			wantMsg:   "conflicting values",
		},
		{
			name: "team overlay loosens a class constraint",
			overlays: `
		{clusterSelector: matchLabels: class: "regulated", values: replicas: int & >=3},
		{names: ["prod-*"], values: replicas: 2},`,
			wantLines: []string{"fleet.cue:7:78", "fleet.cue:8:41"},
			wantMsg:   "invalid value 2 (out of bound >=3)",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := `bundles: web: {
	helm: chart: "charts/web"
	values: replicas: *1 | int
	overlays: [` + tc.overlays + `
	]
}
bundles: other: {resources: []}`
			p := mustPlan(t, mustLoad(t, writeFleet(t, src)), euProd)
			if other := p.Bundle("other"); other == nil || other.Failed() {
				t.Errorf("an independent bundle was affected: %+v", other)
			}
			web := p.Bundle("web")
			if !web.Failed() {
				t.Fatalf("web did not fail: values %s", web.Values)
			}
			msg := web.Errors.Error()
			for _, want := range append(tc.wantLines, tc.wantMsg, "bundle web", "values.replicas", "cluster prod-eu-1") {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
		})
	}
}

// TestUnresolvedConstraintIsPositioned checks the error when a class
// constraint leaves a value without a concrete choice.
func TestUnresolvedConstraintIsPositioned(t *testing.T) {
	src := `bundles: web: {
	helm: chart: "charts/web"
	values: replicas: *2 | int
	overlays: [{clusterSelector: matchLabels: class: "regulated", values: replicas: int & >=3}]
}`
	web := mustPlan(t, mustLoad(t, writeFleet(t, src)), euProd).Bundle("web")
	msg := web.Errors.Error()
	for _, want := range []string{"values.replicas", "incomplete value", "fleet.cue:5:", "fleet.cue:6:", "no default or overlay"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
}

// TestSchemaErrors checks that mistakes in a fleet are reported with the
// file, line and column of the mistake.
func TestSchemaErrors(t *testing.T) {
	cases := []struct {
		name string
		src  string
		// atLoad: the whole fleet is invalid; otherwise only bundle b fails.
		atLoad bool
		want   []string
	}{
		{"misspelt field", `bundles: b: {helm: chart: "c", valeus: x: 1}`, false,
			[]string{"fleet.cue:3:32", "valeus", "field not allowed"}},
		{"two sources", `bundles: b: {
	helm: chart: "c"
	kustomize: path: "k"
}`, false, []string{"fleet.cue:4:2", "fleet.cue:5:2", "exactly one source", "helm and kustomize"}},
		{"no source", `bundles: b: {values: x: 1}`, false, []string{"fleet.cue:3:10", "exactly one source", "has none"}},
		{"wrong type", `bundles: b: {helm: chart: "c", wait: "yes"}`, false,
			[]string{"fleet.cue:3:38", "wait", "mismatched types string and bool"}},
		{"bad operator", `bundles: b: {resources: [], target: clusterSelector: matchExpressions: [{key: "a", operator: "Equals"}]}`, false,
			[]string{"fleet.cue:3:", "operator", `"Equals"`}},
		{"In without values", `bundles: b: {resources: [], target: clusterSelector: matchExpressions: [{key: "a", operator: "In"}]}`, false,
			[]string{"fleet.cue:3:", "target", "values set can't be empty"}},
		{"bad glob", `bundles: b: {resources: [], target: regions: ["eu-["]}`, false,
			[]string{"fleet.cue:3:", "invalid pattern"}},
		{"bad timeout", `bundles: b: {resources: [], timeout: "soon"}`, false,
			[]string{"fleet.cue:3:", "timeout"}},
		{"bad bundle name", `bundles: "Web_App": {resources: []}`, false,
			[]string{"name", "Web_App"}},
		{"unknown top-level field", `bundle: b: {resources: []}`, true,
			[]string{"fleet.cue:3:1", "unknown top-level field", `"bundles"`}},
		{"syntax error", `bundles: b: {resources: []`, true, []string{"fleet.cue:3:13:", "this '{' is never closed"}},
		{"bad inventory entry", `clusters: "eu 1": {region: "x"}`, true, []string{"clusters", "eu 1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := fleet.Load(writeFleet(t, tc.src), fleet.LoadOptions{})
			var msg string
			if tc.atLoad {
				if err == nil {
					t.Fatal("load succeeded")
				}
				if !errors.Is(err, fleet.ErrInvalid) {
					t.Errorf("error does not wrap ErrInvalid: %v", err)
				}
				msg = err.Error()
			} else {
				if err != nil {
					t.Fatalf("a problem inside one bundle failed the whole fleet: %v", err)
				}
				b := mustPlan(t, f, euProd).Bundle("b")
				if b == nil {
					b = mustPlan(t, f, euProd).Bundle("Web_App")
				}
				if b == nil || !b.Failed() {
					t.Fatalf("bundle did not fail: %+v", b)
				}
				msg = b.Errors.Error()
			}
			for _, want := range tc.want {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
		})
	}
}

// TestDependsOn checks ordering and the errors of dependsOn.
func TestDependsOn(t *testing.T) {
	t.Run("order", func(t *testing.T) {
		src := `bundles: {
	app: {resources: [], dependsOn: ["db", "crds"]}
	db: {resources: [], dependsOn: ["crds"]}
	crds: {resources: []}
	zz: {resources: []}
	aa: {resources: []}
}`
		p := mustPlan(t, mustLoad(t, writeFleet(t, src)), euProd)
		var order []string
		for _, b := range p.Bundles {
			order = append(order, b.Name)
			if b.Failed() {
				t.Errorf("%s failed: %v", b.Name, b.Errors)
			}
		}
		if got, want := strings.Join(order, ","), "aa,crds,db,app,zz"; got != want {
			t.Errorf("order %s, want %s", got, want)
		}
	})
	cases := []struct {
		name, src string
		failed    []string
		want      string
	}{
		{"unknown bundle", `bundles: a: {resources: [], dependsOn: ["nope"]}`, []string{"a"}, `depends on "nope", which is not a bundle of the fleet`},
		{"cycle", `bundles: {
	b: {resources: [], dependsOn: ["c"]}
	c: {resources: [], dependsOn: ["a"]}
	a: {resources: [], dependsOn: ["b"]}
	d: {resources: [], dependsOn: ["a"]}
	e: {resources: []}
}`, []string{"a", "b", "c", "d"}, "bundle a: dependsOn: dependency cycle a → b → c → a"},
		{"self", `bundles: a: {resources: [], dependsOn: ["a"]}`, []string{"a"}, "cannot depend on itself"},
		{"dependency not selected", `bundles: {
	a: {resources: [], dependsOn: ["b"]}
	b: {resources: [], target: regions: ["us-*"]}
}`, []string{"a"}, `depends on "b", which does not select this cluster`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := mustPlan(t, mustLoad(t, writeFleet(t, tc.src)), euProd)
			var failed []string
			for _, b := range p.Failed() {
				failed = append(failed, b.Name)
				if !strings.Contains(b.Errors.Error(), tc.want) || !strings.Contains(b.Errors.Error(), "fleet.cue:") {
					t.Errorf("%s: error %q does not say %q at a position", b.Name, b.Errors.Error(), tc.want)
				}
			}
			if strings.Join(failed, ",") != strings.Join(tc.failed, ",") {
				t.Errorf("failed bundles %v, want %v", failed, tc.failed)
			}
			// Each problem is reported once (a cycle too, not once per
			// bundle in it or waiting on it), naming the cluster.
			if ds := fleet.Problems([]*fleet.Plan{p}, nil); len(ds) != 1 || !slices.Equal(ds[0].Clusters, []string{euProd.Name}) {
				t.Errorf("problems: %v", ds)
			}
		})
	}
}

// TestPlainCUEConditionals checks that `cluster` is usable anywhere, with
// `if`, interpolation and facts.
func TestPlainCUEConditionals(t *testing.T) {
	src := `bundles: app: {
	helm: chart: "c"
	values: {
		host: "app.\(cluster.region).example.com"
		if cluster.region =~ "^eu-" {residency: "eu"}
		if list.Contains(cluster.facts.apiGroups, "monitoring.coreos.com") {serviceMonitor: true}
		k8s: cluster.facts.kubernetesVersion
	}
}`
	src = strings.Replace(src, "bundles:", "import \"list\"\n\nbundles:", 1)
	c := euProd
	c.Facts = fleet.Facts{KubernetesVersion: "v1.36.3", APIGroups: []string{"apps", "monitoring.coreos.com"}}
	b := mustPlan(t, mustLoad(t, writeFleet(t, src)), c).Bundle("app")
	if b.Failed() {
		t.Fatal(b.Errors)
	}
	want := map[string]any{"host": "app.eu-west-1.example.com", "residency": "eu", "serviceMonitor": true, "k8s": "v1.36.3"}
	if got := valuesOf(t, b); !reflect.DeepEqual(got, want) {
		t.Errorf("values = %v, want %v", got, want)
	}
}

// TestDeterministic checks that planning twice, or after loading twice,
// gives byte-identical plans.
func TestDeterministic(t *testing.T) {
	dir := filepath.Join("..")
	var outputs []string
	for range 2 {
		f, err := fleet.Load(dir, fleet.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			plans, problems, err := f.PlanInventory(t.Context(), nil)
			if err != nil || len(problems) > 0 {
				t.Fatal(err, problems)
			}
			data, err := json.Marshal(plans)
			if err != nil {
				t.Fatal(err)
			}
			outputs = append(outputs, string(data))
		}
	}
	for i := 1; i < len(outputs); i++ {
		if outputs[i] != outputs[0] {
			t.Fatalf("plan %d differs from plan 0", i)
		}
	}
}

// TestIdentityIsValidated checks identities that label selectors could not
// handle.
func TestIdentityIsValidated(t *testing.T) {
	f := mustLoad(t, writeFleet(t, `bundles: b: {resources: []}`))
	for _, c := range []fleet.Cluster{
		{},
		{Name: "Prod_EU"},
		{Name: "ok", Labels: map[string]string{"bad key!": "x"}},
		{Name: "ok", Labels: map[string]string{"env": "has spaces"}},
	} {
		if _, err := f.Plan(c); err == nil {
			t.Errorf("identity %+v was accepted", c)
		}
	}
}

// TestFleetConstraintsOnCluster checks that a fleet may constrain the
// identities it accepts, and that a violation fails the plan (nothing may be
// applied) rather than one bundle.
func TestFleetConstraintsOnCluster(t *testing.T) {
	f := mustLoad(t, writeFleet(t, `cluster: labels: env: "prod" | "staging"
bundles: b: {resources: []}`))
	if _, err := f.Plan(euProd); err != nil {
		t.Fatalf("prod rejected: %v", err)
	}
	bad := euProd
	bad.Labels = map[string]string{"env": "qa"}
	_, err := f.Plan(bad)
	if err == nil || !strings.Contains(err.Error(), "fleet.cue:3:") || !strings.Contains(err.Error(), "reject this identity") {
		t.Errorf("error %v, want a positioned rejection", err)
	}
}

// TestPlanInventoryInParallel checks that planning the inventory on several
// goroutines (each with its own CUE context) gives exactly the plans of
// planning each cluster in turn. Run with -race.
func TestPlanInventoryInParallel(t *testing.T) {
	dir := t.TempDir()
	if err := synthfleet.Write(dir, 64, 10); err != nil {
		t.Fatal(err)
	}
	f := mustLoad(t, dir)
	plans, problems, err := f.PlanInventory(t.Context(), nil)
	if err != nil || len(problems) > 0 || len(plans) != 64 {
		t.Fatalf("%d plans, problems %v %v", len(plans), problems, err)
	}
	for i, c := range f.Inventory() {
		want, err := json.Marshal(mustPlan(t, f, c))
		if err != nil {
			t.Fatal(err)
		}
		got, err := json.Marshal(plans[i])
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("cluster %s: parallel plan differs from sequential plan", c.Name)
		}
	}
}

// TestEachPlanHandsPlansInOrder checks that plans made on several
// goroutines reach the caller one at a time, in the clusters' order, and
// that an error of the caller stops planning and is returned.
func TestEachPlanHandsPlansInOrder(t *testing.T) {
	dir := t.TempDir()
	if err := synthfleet.Write(dir, 96, 10); err != nil {
		t.Fatal(err)
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	f := mustLoad(t, dir)
	clusters := f.Inventory()
	// On every CPU, and on one planner (EachPlanOn: no copy of the fleet),
	// the same plans in the same order.
	var first []string
	for _, workers := range []int{0, 1} {
		var inside atomic.Int32
		next := 0
		var got []string
		err := f.EachPlanOn(t.Context(), workers, clusters, nil, func(i int, p *fleet.Plan, err error) error {
			if inside.Add(1) != 1 {
				t.Error("use called while another call runs")
			}
			defer inside.Add(-1)
			if i != next || err != nil || p.Cluster.Name != clusters[i].Name {
				t.Fatalf("%d workers: handed cluster %d (%v, %v), want %d (%s)", workers, i, p, err, next, clusters[next].Name)
			}
			data, err := json.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(data))
			next++
			return nil
		})
		if err != nil || next != len(clusters) {
			t.Fatalf("%d workers: %d of %d plans handed over, error %v", workers, next, len(clusters), err)
		}
		if first == nil {
			first = got
		} else if !slices.Equal(got, first) {
			t.Errorf("%d workers planned otherwise than all CPUs", workers)
		}
	}

	stop := errors.New("the output is closed")
	handed := 0
	err := f.EachPlan(t.Context(), clusters, nil, func(i int, _ *fleet.Plan, _ error) error {
		handed++
		if i == 9 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || handed != 10 {
		t.Errorf("after an error at the 10th plan: %d handed over, error %v; want 10, %v", handed, err, stop)
	}
}

// TestPlanInventoryStops checks that ending the context stops planning
// between clusters, sequentially and in parallel: the error is the
// context's cause and no plan is returned, so a caller cannot mistake a
// part of the inventory for all of it.
func TestPlanInventoryStops(t *testing.T) {
	dir := t.TempDir()
	if err := synthfleet.Write(dir, 200, 10); err != nil {
		t.Fatal(err)
	}
	for _, procs := range []int{1, 4} {
		t.Run(fmt.Sprintf("GOMAXPROCS=%d", procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			f := mustLoad(t, dir)
			stop := errors.New("interrupted by the test")
			ctx, cancel := context.WithCancelCause(t.Context())
			defer cancel(nil)
			planned := 0
			plans, problems, err := f.PlanInventory(ctx, func(done, total int) {
				planned = done
				if total != 200 {
					t.Errorf("total %d, want 200", total)
				}
				if done == 10 {
					cancel(stop)
				}
			})
			if !errors.Is(err, stop) || plans != nil || problems != nil {
				t.Fatalf("got %d plans, %v, error %v; want none and %v", len(plans), problems, err, stop)
			}
			// Workers finish the cluster they are planning, no more.
			if planned < 10 || planned > 10+procs {
				t.Errorf("%d clusters planned after the stop at 10", planned)
			}
		})
	}
}

// TestBundlesMayReadTheInventory checks that a fleet that refers to its own
// `clusters` (here, to list a cluster's peers) still plans correctly.
func TestBundlesMayReadTheInventory(t *testing.T) {
	src := `clusters: {
	"prod-eu-1": {region: "eu-west-1"}
	"prod-us-1": {region: "us-east-1"}
}
bundles: mesh: {
	helm: chart: "c"
	values: peers: [for name, c in clusters if name != cluster.name {c.region}]
}`
	f := mustLoad(t, writeFleet(t, src))
	c, err := f.InventoryCluster("prod-eu-1")
	if err != nil {
		t.Fatal(err)
	}
	b := mustPlan(t, f, c).Bundle("mesh")
	if b.Failed() || string(b.Values) != `{"peers":["us-east-1"]}` {
		t.Errorf("values %s, errors %v", b.Values, b.Errors)
	}
}

// TestKeyedOverlaysFromSeveralFiles checks that overlays keyed by name can
// be contributed by several files, and apply in key order.
func TestKeyedOverlaysFromSeveralFiles(t *testing.T) {
	repo := writeFleet(t, `bundles: web: {
	helm: chart: "c"
	values: {replicas: *2 | int, tier: *"bronze" | string}
	overlays: regulated: {clusterSelector: matchLabels: class: "regulated", values: replicas: int & >=3}
}`, "team.cue", `package fleet

bundles: web: overlays: {
	"team-eu": {regions: ["eu-*"], values: replicas: 5}
	"team-gold": {clusterSelector: matchLabels: tier: "gold", values: tier: "gold"}
}
`)
	b := mustPlan(t, mustLoad(t, repo), euProd).Bundle("web")
	if b.Failed() {
		t.Fatal(b.Errors)
	}
	if string(b.Values) != `{"replicas":5,"tier":"gold"}` {
		t.Errorf("values %s", b.Values)
	}
	var names []string
	for _, o := range b.Overlays {
		names = append(names, o.Name+"@"+o.Position.File)
	}
	if got := strings.Join(names, ","); got != "regulated@fleet.cue,team-eu@team.cue,team-gold@team.cue" {
		t.Errorf("overlays %s", got)
	}
}

// TestErrorsHideSecretValues: errors in a bundle's resources never print a
// Secret's data, whether CUE prints the whole `resources` (a schema
// conflict) or a conflict inside a Secret's stringData; the path and the
// position still say where the problem is.
func TestErrorsHideSecretValues(t *testing.T) {
	for name, src := range map[string]string{
		"whole resources printed": `clusters: c1: {}
bundles: app: resources: {
	creds: {apiVersion: "v1", kind: "Secret", metadata: name: "creds", stringData: token: "sup3r-s3cret"}
	broken: 5
}`,
		"conflict in stringData": `clusters: c1: {}
bundles: app: resources: {
	creds: {apiVersion: "v1", kind: "Secret", metadata: name: "creds", stringData: token: "sup3r-s3cret"}
	creds: stringData: token: "an0ther-s3cret"
}`,
		// One hop before the Secret: the helper its data comes from.
		"helper of a Secret": `clusters: c1: {}
_db: password: "sup3r-s3cret" & =~"^[a-z]+$"
bundles: app: resources: [{apiVersion: "v1", kind: "Secret", metadata: name: "db", stringData: password: _db.password}]`,
		"values feeding a Secret": `clusters: c1: {}
bundles: app: {
	values: dbPassword: "sup3r-s3cret" & =~"^[a-z]+$"
	resources: [{apiVersion: "v1", kind: "Secret", metadata: name: "db", stringData: password: values.dbPassword}]
}`,
		"annotation derived from a Secret": `clusters: c1: {}
let pw = "sup3r-s3cret"
bundles: app: resources: [
	{apiVersion: "v1", kind: "Secret", metadata: name: "db", stringData: password: pw},
	{apiVersion: "v1", kind: "ConfigMap", metadata: {name: "db", annotations: checksum: "\(pw)" & =~"^[0-9a-f]+$"}},
]`,
	} {
		t.Run(name, func(t *testing.T) {
			var problems fleet.Diagnostics
			f, err := fleet.Load(writeFleet(t, src), fleet.LoadOptions{})
			if err != nil {
				problems = fleet.AsDiagnostics(err)
			} else {
				plans, ps, err := f.PlanInventory(t.Context(), nil)
				if err != nil {
					t.Fatal(err)
				}
				problems = fleet.Problems(plans, ps)
			}
			if len(problems) == 0 {
				t.Fatal("no problem reported")
			}
			text := problems.Error()
			if strings.Contains(text, "s3cret") {
				t.Errorf("a Secret's value in an error:\n%s", text)
			}
			if !strings.Contains(text, "fleet.cue:") || !strings.Contains(text, "resources") && !strings.Contains(text, "password") && !strings.Contains(text, "dbPassword") {
				t.Errorf("the error lost its path or position:\n%s", text)
			}
		})
	}
}

// TestManyProblemsAreBounded: one mistake in a comprehension of 1,500
// objects is 1,500 diagnostics; the error message shows ten and counts the
// rest (the agent logged 152 KB lines before).
func TestManyProblemsAreBounded(t *testing.T) {
	f := mustLoad(t, writeFleet(t, `import "list"

bundles: web: resources: [for i in list.Range(0, 1500, 1) {apiVersion: "v1", kind: "ConfigMap", metadata: name: "cm-\(i)", data: i: "\(i)"}]`))
	b := mustPlan(t, f, euProd).Bundle("web")
	if b == nil || len(b.Errors) < 100 {
		t.Fatalf("expected a problem per object: %+v", b)
	}
	msg := b.Errors.Error()
	if !strings.Contains(msg, fmt.Sprintf("… and %d more problems", len(b.Errors)-10)) || len(msg) > 16<<10 {
		t.Errorf("%d bytes:\n%.2000s", len(msg), msg)
	}
}
