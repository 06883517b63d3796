package fleet_test

import (
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/fleet"
)

// TestErrorsAPersonReads: the mistakes people make every week are each
// reported once, at the line to fix, in words — not CUE's internals: no
// list-versus-struct account before the error in a list-form overlay, no
// token names (IDENT, EOF), no `uint`, no schema regular expressions, no
// "incomplete value" for two defaults that conflict, an unclosed brace at
// where it opened, a bare word with the hint to quote it, a bad bundle
// name at the fleet's line.
func TestErrorsAPersonReads(t *testing.T) {
	const base = `clusters: "eu-1": {labels: env: "prod"}
`
	cases := []struct {
		name  string
		src   string
		extra []string
		want  []string // each line, in order
	}{
		{"list overlay", `bundles: web: {resources: [], overlays: [
	{clusterSelector: matchLabels: env: "prod", values: x: 1},
	{names: ["lab-*"], prune: "yes"},
]}`, nil, []string{`fleet.cue:6:28: bundle web: overlays.1.prune: conflicting values "yes" and bool (mismatched types string and bool)`}},
		{"typo in a list overlay", `bundles: web: {resources: [], overlays: [{names: ["x"], valeus: {}}]}`, nil,
			[]string{`fleet.cue:4:57: bundle web: overlays.0.valeus: field not allowed`}},
		{"label with a space", `bundles: web: {name space: "web", resources: []}`, nil,
			[]string{`fleet.cue:4:21: expected label or ':', found space`}},
		{"uint", `bundles: web: {values: replicas: uint, values: replicas: "3", resources: []}`, nil,
			[]string{`bundle web: values.replicas: conflicting values an integer >= 0 and "3" (mismatched types int and string)`}},
		{"pattern", `bundles: web: {namespace: "Web_NS", resources: []}`, nil,
			[]string{`fleet.cue:4:27: bundle web: namespace: invalid value "Web_NS" (a name must be lower-case letters, digits and '-', and start and end with a letter or digit)`}},
		{"duration", `rollout: {bake: "5 min", waves: [{name: "all"}]}
bundles: web: resources: []`, nil, []string{`rollout.bake: invalid value "5 min" (a duration must be a number and a unit, such as 30s, 5m or 1h30m)`}},
		{"bundle name", `bundles: Web_App: resources: []`, nil,
			[]string{`fleet.cue:4:10: bundle Web_App: name: invalid value "Web_App" (a name must be`}},
		{"conflicting defaults", `bundles: web: {resources: [], values: tier: *"a" | string}`,
			[]string{"team.cue", "package fleet\n\nbundles: web: values: tier: *\"b\" | string\n"},
			[]string{`fleet.cue:4:39: cluster eu-1: bundle web: values.tier: defaults "a" and "b" conflict, so it has none: keep one default, or give it a value (and team.cue:3:23)`}},
		{"unquoted string", `bundles: web: {namespace: webapp, resources: []}`, nil,
			[]string{`fleet.cue:4:27: bundles.web.namespace: reference "webapp" not found (if it is a string, write it in quotes, with any '-' inside: "webapp")`}},
		{"operator", `bundles: web: {resources: [], target: clusterSelector: matchExpressions: [{key: "env", operator: "in", values: ["prod"]}]}`, nil,
			[]string{`bundle web: target.clusterSelector.matchExpressions.0.operator: "in" is not one of "DoesNotExist", "Exists", "In", "NotIn"`}},
		{"a label the cluster lacks", `bundles: web: {resources: [], values: team: cluster.labels.team}`, nil,
			[]string{`cluster eu-1: bundle web: values.team: undefined field: team (if it reads a label or fact a cluster may not have, give a default: (*cluster.labels.team | ""); inside a struct`}},
		{"unclosed brace", `bundles: web: {
	resources: [{
		apiVersion: "v1"
		kind: "ConfigMap"
		metadata: {name: "web"
		data: x: "y"
	}]
}`, nil, []string{`fleet.cue:8:13: this '{' is not closed: the '}' at 10:2 is indented as an outer one`}},
		{"unclosed after interpolations", `bundles: web: {
	resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "w-\(cluster.name)-\((cluster.region))"}]
	values: {a: 1
}`, nil, []string{`fleet.cue:6:10: this '{' is not closed: the '}' at 7:1 is indented as an outer one`}},
		{"unclosed brace at the end, two files", `bundles: web: {
	resources: []
`, []string{"team.cue", "package fleet\n\nbundles: api: {resources: [}\n"},
			[]string{`fleet.cue:4:15: this '{' is never closed (the file ends on line 6)`, `team.cue:3:27: this '[' is not closed before the '}' at 3:28`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFleet(t, base+tc.src, tc.extra...)
			var ds fleet.Diagnostics
			f, err := fleet.Load(dir, fleet.LoadOptions{})
			if err != nil {
				ds = fleet.AsDiagnostics(err)
			} else {
				plans, problems, err := f.PlanInventory(t.Context(), nil)
				if err != nil {
					t.Fatal(err)
				}
				ds = fleet.Problems(plans, problems)
			}
			var got []string
			for _, d := range ds {
				got = append(got, strings.TrimPrefix(d.Error(), dir+"/"))
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d problems, want %d:\n%s", len(got), len(tc.want), strings.Join(got, "\n"))
			}
			for i, want := range tc.want {
				if !strings.Contains(got[i], want) {
					t.Errorf("problem %d:\n got %s\nwant %s", i, got[i], want)
				}
			}
			for _, internal := range []string{"IDENT", "'EOF'", "uint", "=~", "incomplete value", "mismatched types list and struct"} {
				if strings.Contains(strings.Join(got, "\n"), internal) {
					t.Errorf("says %q:\n%s", internal, strings.Join(got, "\n"))
				}
			}
		})
	}
}
