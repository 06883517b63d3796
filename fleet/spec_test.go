package fleet

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"cuelang.org/go/cue"
	"github.com/flotilla-gitops/flotilla/internal/synthfleet"
)

// The bundle spec is declared once, in schemas/fleet.cue; its Go form is
// package schemas/spec, checked against the schema there. These tests keep
// the fleet's two decoders of it — the fast one and the positioned one —
// reading every field, and reading it the same.

// TestSpecInputsMatchTheSchema checks that the decoders read every field of
// #Spec (values apart, read as JSON) and nothing else.
func TestSpecInputsMatchTheSchema(t *testing.T) {
	want := slices.DeleteFunc(slices.Clone(inputFields()), func(f string) bool { return f == "values" })
	got := slices.Collect(maps.Keys(specInputIndex())) // the JSON names of specInputs
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("specInputs reads %v; #Spec (+dependsOn, -values) has %v", got, want)
	}
	if len(specFields()) < 10 || !slices.Contains(specFields(), "driftPolicy") {
		t.Errorf("specFields %v: not read from #Spec", specFields())
	}
}

// everyFieldFleet sets every field of #Spec, and of each source kind, to a
// value that is not its default (one bundle per source kind, since a
// bundle has one), and has overlays add to the sources.
const everyFieldFleet = `package fleet

clusters: {
	"eu-1": {region: "eu-west-1", labels: class: "regulated"}
	"us-1": {region: "us-east-1", labels: class: "standard"}
}

_apply: {
	namespace:          "apps"
	prune:              false
	wait:               false
	timeout:            "7m"
	renderTimeout:      "90s"
	serviceAccountName: "deployer"
	driftPolicy:        "report"
	force:              true
	adopt:              true
	values: {replicas: 3, region: cluster.region}
}

bundles: "all-helm": _apply & {
	dependsOn: ["all-resources"]
	helm: {
		chart:        "web"
		repo:         "https://charts.example.com"
		version:      "1.2.3"
		releaseName:  "web-release"
		includeHooks: true
		valuesFiles: ["values/base.yaml", "values/\(cluster.region).yaml"]
	}
	overlays: [{regions: ["eu-*"], values: dataResidency: "eu"}]
}

bundles: "all-kustomize": _apply & {
	kustomize: {
		path: "kustomize/app"
		images: [{name: "web", newName: "registry.example.com/web", newTag: "v2", digest: "sha256:0123"}]
		patches: replicas: {
			patch: "[{\"op\": \"replace\", \"path\": \"/spec/replicas\", \"value\": 3}]"
			target: {group: "apps", version: "v1", kind: "Deployment", name: "web", namespace: "apps", labelSelector: "app=web", annotationSelector: "tier=front"}
		}
		labels: team: "storefront"
		components: ["kustomize/components/monitoring"]
	}
	overlays: regulated: {
		clusterSelector: matchLabels: class: "regulated"
		kustomize: labels: audit: "on"
	}
}

bundles: "all-manifests": _apply & {
	manifests: {path: "manifests/base", recursive: true}
}

bundles: "all-resources": _apply & {
	resources: {
		b: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "b", data: region: cluster.region}
		a: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "a"}
	}
}
`

// TestDecodersAgree plans every golden fleet (the demo, the examples, the
// synthetic fleet of the benchmarks) and a fleet that sets every #Spec
// field to a non-default value, once with the fast decoder and once with
// the positioned one alone, and requires the same plans; on the
// every-field fleet the fast decoder must also succeed (not fall back) and
// fill every Go field of the inputs.
func TestDecodersAgree(t *testing.T) {
	every := t.TempDir()
	if err := os.WriteFile(filepath.Join(every, "fleet.cue"), []byte(everyFieldFleet), 0o644); err != nil {
		t.Fatal(err)
	}
	synth := t.TempDir()
	if err := synthfleet.Write(synth, 12, 25); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, dir, path string }{
		{"demo", "..", "."},
		{"independent", "..", "examples/independent"},
		{"synthetic", synth, "."},
		{"every field", every, "."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var plans [2][]byte
			for i, slow := range []bool{false, true} {
				f, err := Load(tc.dir, LoadOptions{Path: tc.path})
				if err != nil {
					t.Fatal(err)
				}
				f.slowDecode = slow
				ps, problems, err := f.PlanInventory(t.Context(), nil)
				if err != nil || len(problems) > 0 {
					t.Fatal(err, problems)
				}
				for _, p := range ps {
					if failed := p.Failed(); len(failed) > 0 {
						t.Fatalf("cluster %s: %v", p.Cluster.Name, failed[0].Errors)
					}
				}
				if plans[i], err = json.Marshal(ps); err != nil {
					t.Fatal(err)
				}
			}
			if string(plans[0]) != string(plans[1]) {
				t.Errorf("the fast decoder's plans differ from the positioned decoder's:\nfast: %.2000s\nslow: %.2000s", plans[0], plans[1])
			}
		})
	}

	// The every-field fleet: the fast path reads each bundle by itself.
	f, err := Load(every, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := f.Plan(Cluster{Name: "eu-1", Region: "eu-west-1", Labels: map[string]string{"class": "regulated"}})
	if err != nil {
		t.Fatal(err)
	}
	bundles := lookup(f.planRoot.FillPath(cue.MakePath(cue.Str(fieldCluster)), f.ctx.Encode(plan.Cluster)), fieldBundles)
	seen := map[string]bool{}
	for _, planned := range plan.Bundles {
		v := lookup(bundles, planned.Name)
		fast, slow := &Bundle{Inputs: Inputs{Name: planned.Name}}, &Bundle{Inputs: Inputs{Name: planned.Name}}
		if !fast.decodeInputsFast(v) {
			t.Errorf("bundle %s: the fast decoder fell back", planned.Name)
			continue
		}
		if err := slow.decodeInputs(v); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fast.Inputs, slow.Inputs) {
			t.Errorf("bundle %s: fast %+v, slow %+v", planned.Name, fast.Inputs, slow.Inputs)
		}
		for _, field := range inputFields() {
			if lookup(v, field).Exists() {
				seen[field] = true
			}
		}
		src := reflect.ValueOf(fast.Source).FieldByName(strings.ToUpper(string(fast.Source.Kind[:1])) + string(fast.Source.Kind[1:]))
		for _, unset := range zeroFields(src, "source."+fast.Source.Kind.String()) {
			t.Errorf("bundle %s: %s is not set: the fleet does not test it", planned.Name, unset)
		}
		for _, unset := range zeroFields(reflect.ValueOf(fast.Apply), "apply") {
			if unset != "apply.prune" && unset != "apply.wait" { // false is not their default
				t.Errorf("bundle %s: %s is not set: the fleet does not test it", planned.Name, unset)
			}
		}
	}
	for _, field := range inputFields() {
		if !seen[field] {
			t.Errorf("the every-field fleet does not set %s", field)
		}
	}
}

// zeroFields lists the fields of v (a struct, or a pointer, slice or map
// of structs) left at Go's zero value, at any depth.
func zeroFields(v reflect.Value, at string) []string {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return []string{at}
		}
		return zeroFields(v.Elem(), at)
	case reflect.Slice, reflect.Map:
		if v.Len() == 0 {
			return []string{at}
		}
		if v.Kind() == reflect.Slice {
			return zeroFields(v.Index(0), at+"[0]")
		}
		return zeroFields(v.MapIndex(v.MapKeys()[0]), at+"[*]")
	case reflect.Struct:
		if v.Type().PkgPath() == "k8s.io/apimachinery/pkg/apis/meta/v1" {
			break
		}
		var out []string
		for i, f := range slices.Collect(v.Type().Fields()) {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			out = append(out, zeroFields(v.Field(i), at+"."+name)...)
		}
		return out
	}
	if v.IsZero() {
		return []string{at}
	}
	return nil
}
