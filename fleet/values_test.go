package fleet

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

const valuesSchemaFleet = `package fleet

clusters: {
	"eu-1": {labels: class: "regulated"}
	"us-1": {labels: class: "standard"}
}
bundles: web: {
	helm: chart: "charts/web"
	values: {
		replicas: *2 | int
		mode:     "fast"
		comment:  null
	}
	overlays: [{
		clusterSelector: matchLabels: class: "regulated"
		values: replicas: 0
	}]
}
bundles: plain: resources: []
`

const valuesSchemaJSON = `{
  "type": "object",
  "properties": {
    "replicas": {"type": "integer", "minimum": 1},
    "mode": {"enum": ["fast", "safe"]},
    "comment": {"type": "string"}
  }
}`

// TestValuesCheckedAgainstTheChartSchema: with CheckValues, a value that
// violates the chart's values.schema.json fails its bundle for the
// clusters it is set for, at the fleet.cue line that set it (an overlay's
// here), with the schema's line after it; a null (Helm deletes the key)
// and the clusters whose values hold are not reported; both ways of
// planning agree, and the schema source is asked once per plan only for
// Helm bundles.
func TestValuesCheckedAgainstTheChartSchema(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fleet.cue"), []byte(valuesSchemaFleet), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, onePass := range []bool{true, false} {
		f, err := Load(dir, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		f.noOnePass = !onePass
		var asked atomic.Int64
		f.CheckValues(func(h *spec.Helm) (*ChartSchema, error) {
			asked.Add(1)
			if h.Chart != "charts/web" {
				t.Errorf("asked for chart %q", h.Chart)
			}
			return &ChartSchema{Name: "charts/web/values.schema.json", JSON: []byte(valuesSchemaJSON)}, nil
		})
		plans, problems, err := f.PlanInventory(t.Context(), nil)
		if err != nil || len(problems) > 0 {
			t.Fatal(err, problems)
		}
		if asked.Load() != 2 {
			t.Errorf("schema asked %d times, want once per cluster", asked.Load())
		}
		ds := Problems(plans, nil)
		if len(ds) != 1 {
			t.Fatalf("one pass %t: %d problems, want 1: %v", onePass, len(ds), ds)
		}
		d := ds[0]
		got := d.Error()
		for _, want := range []string{"fleet.cue:16:11: cluster eu-1: bundle web: values.replicas: invalid value 0 (out of bound >=1)", "values.schema.json", "charts/web/values.schema.json:4:"} {
			if !strings.Contains(got, want) {
				t.Errorf("one pass %t: %q lacks %q", onePass, got, want)
			}
		}
		if p := plans[1]; p.Cluster.Name != "us-1" || p.Bundle("web").Failed() {
			t.Errorf("us-1's values hold: %+v", p.Bundle("web").Errors)
		}
		for _, p := range plans {
			if p.Bundle("web").values.Exists() {
				t.Error("a plan keeps the bundle's CUE value")
			}
		}
	}
}

// TestValuesCheckedWhenBundlesAreReused: in a batch, a bundle whose values
// passed the chart's schema is reused for the next cluster with the same
// inputs (no second check: it would pass), and one whose values do not is
// evaluated, checked and positioned again for every cluster. Bundles
// planned before the check was asked for are not reused unchecked.
func TestValuesCheckedWhenBundlesAreReused(t *testing.T) {
	dir := t.TempDir()
	src := strings.Replace(valuesSchemaFleet, `"us-1": {labels: class: "standard"}`,
		`"us-1": {labels: class: "standard"}
	"eu-2": {labels: class: "regulated"}
	"us-2": {labels: class: "standard"}`, 1)
	if err := os.WriteFile(filepath.Join(dir, "fleet.cue"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Load(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.PlanInventory(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	if hits := f.onePassInfo().memo.hits["web"]; hits != 2 {
		t.Fatalf("unchecked: web reused %d times, want twice (eu-2 as eu-1, us-2 as us-1)", hits)
	}
	var asked atomic.Int64
	f.CheckValues(func(h *spec.Helm) (*ChartSchema, error) {
		asked.Add(1)
		return &ChartSchema{Name: "charts/web/values.schema.json", JSON: []byte(valuesSchemaJSON)}, nil
	})
	plans, problems, err := f.PlanInventory(t.Context(), nil)
	if err != nil || len(problems) > 0 {
		t.Fatal(err, problems)
	}
	ds := Problems(plans, nil)
	if len(ds) != 1 || strings.Join(ds[0].Clusters, " ") != "eu-1 eu-2" || !strings.Contains(ds[0].Error(), "fleet.cue:18:11:") {
		t.Fatalf("problems %v, want one, for eu-1 and eu-2, at the overlay's line", ds)
	}
	if hits := f.onePassInfo().memo.hits["web"]; hits != 3 {
		t.Errorf("web reused %d times in all, want once more (us-2 as us-1)", hits)
	}
	if asked.Load() != 3 {
		t.Errorf("schema asked %d times, want 3 (not for the reused bundle)", asked.Load())
	}
	for _, p := range plans {
		if p.Cluster.Name[:2] == "us" && p.Bundle("web").Failed() {
			t.Errorf("%s: %v", p.Cluster.Name, p.Bundle("web").Errors)
		}
	}
}

// TestValuesSchemaThatIsNotCUE: a schema CUE cannot read is not the
// fleet's problem: nothing is reported (Helm checks at render), and
// CompileValuesSchema says why for vet's note.
func TestValuesSchemaThatIsNotCUE(t *testing.T) {
	bad := &ChartSchema{Name: "charts/web/values.schema.json", JSON: []byte(`{"type": "object", "properties": {"a": {"type": 7}}}`)}
	if err := CompileValuesSchema(bad); err == nil || !strings.Contains(err.Error(), "charts/web/values.schema.json") {
		t.Errorf("CompileValuesSchema: %v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fleet.cue"), []byte(valuesSchemaFleet), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Load(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.CheckValues(func(*spec.Helm) (*ChartSchema, error) { return bad, nil })
	p, err := f.Plan(Cluster{Name: "eu-1", Labels: map[string]string{"class": "regulated"}})
	if err != nil || p.Bundle("web").Failed() {
		t.Errorf("plan: %v %v", err, p.Bundle("web").Errors)
	}
}
