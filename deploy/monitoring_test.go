package deploy_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/internal/peers"
	"github.com/flotilla-gitops/flotilla/sync/agent"
)

// metricName finds the metrics an expression names (the agent's, and the
// Go and process collectors' it also serves).
var metricName = regexp.MustCompile(`\b((?:flotilla|process|go)_[a-z0-9_]+)`)

// checkMetrics fails for a metric named in expr that no agent serves (a
// histogram's series are its name with _bucket, _sum or _count).
func checkMetrics(t *testing.T, where, expr string, served []string) int {
	t.Helper()
	n := 0
	for _, m := range metricName.FindAllStringSubmatch(expr, -1) {
		name := m[1]
		base := regexp.MustCompile(`_(bucket|sum|count)$`).ReplaceAllString(name, "")
		if !slices.Contains(served, name) && !slices.Contains(served, base) {
			t.Errorf("%s names %s, which the agent does not serve (it serves %s)", where, name, strings.Join(served, ", "))
		}
		n++
	}
	return n
}

// TestMonitoring: deploy/monitoring builds with kustomize into the
// PrometheusRule and the dashboard's ConfigMap; every metric the alerts
// and the dashboard's panels name is one the agent serves; Prometheus's
// own rule checker (promtool) accepts the alerts; the dashboard is JSON a
// Grafana provisioner loads (a title, a uid, panels with targets).
func TestMonitoring(t *testing.T) {
	served := agent.MetricNames()
	if !slices.Contains(served, "flotilla_bundles") || !slices.Contains(served, "flotilla_notifications_total") {
		t.Fatalf("the agent's metrics: %v", served)
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), "monitoring")
	if err != nil {
		t.Fatalf("kustomize build deploy/monitoring: %v", err)
	}
	var rule, dashboard map[string]any
	for _, r := range resMap.Resources() {
		m, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		switch r.GetKind() {
		case "PrometheusRule":
			rule = m
		case "ConfigMap":
			if r.GetLabels()["grafana_dashboard"] != "1" || r.GetNamespace() != "flotilla-system" {
				t.Errorf("the dashboard's ConfigMap: labels %v, namespace %q", r.GetLabels(), r.GetNamespace())
			}
			data, _ := m["data"].(map[string]any)
			text, _ := data["flotilla-agents.json"].(string)
			if err := json.Unmarshal([]byte(text), &dashboard); err != nil {
				t.Fatalf("the dashboard is not JSON: %v", err)
			}
		}
	}
	if rule == nil || dashboard == nil {
		t.Fatalf("kustomize build deploy/monitoring lacks the PrometheusRule or the dashboard: %v", resMap.AllIds())
	}

	// The alerts: promtool checks the rule groups as Prometheus loads them.
	spec, _ := rule["spec"].(map[string]any)
	groups, _ := spec["groups"].([]any)
	named := 0
	for _, g := range groups {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			rule := r.(map[string]any)
			named += checkMetrics(t, "alert "+rule["alert"].(string), rule["expr"].(string), served)
		}
	}
	if named < 8 {
		t.Errorf("the alerts name %d metrics", named)
	}
	rules, err := yaml.Marshal(map[string]any{"groups": groups})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(file, rules, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(peers.Path(t, peers.Promtool), "check", "rules", file).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS: 8 rules found") {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}

	// The dashboard.
	if dashboard["uid"] != "flotilla-agents" || dashboard["title"] == "" {
		t.Errorf("the dashboard's uid and title: %v %v", dashboard["uid"], dashboard["title"])
	}
	panels, _ := dashboard["panels"].([]any)
	named = 0
	for _, p := range panels {
		panel := p.(map[string]any)
		for _, tg := range panel["targets"].([]any) {
			named += checkMetrics(t, "panel "+panel["title"].(string), tg.(map[string]any)["expr"].(string), served)
		}
	}
	if len(panels) < 8 || named < 10 {
		t.Errorf("the dashboard has %d panels naming %d metrics", len(panels), named)
	}
}
