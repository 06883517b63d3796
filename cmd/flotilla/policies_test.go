package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

const policiesFleet = `package fleet

clusters: {
	"eu-1": {labels: class: "regulated"}
	"us-1": {labels: class: "standard"}
}
bundles: [string]: namespace: "shop"
bundles: netpol: {
	target: clusterSelector: matchLabels: class: "regulated"
	resources: [{apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: name: "default-deny", spec: podSelector: {}}]
}
bundles: web: {
	helm: chart: "charts/web"
	values: serviceType: *"ClusterIP" | string
	overlays: [{clusterSelector: matchLabels: class: "standard", values: serviceType: "LoadBalancer"}]
}
policies: "regulated-baseline": {
	target: clusterSelector: matchLabels: class: "regulated"
	require: [{apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: name: "default-deny"}]
	forbid: [{apiVersion: "v1", kind: "Service", spec: type: "LoadBalancer"}]
}
`

// TestVetPolicies: vet --policies renders every cluster and checks the
// fleet's policies over its objects: the fleet as written holds; a change
// that gives the regulated class a LoadBalancer Service, or drops its
// NetworkPolicy, fails with the policy's line, the cluster, the bundle,
// the object and the field. Without --policies, vet says they were not
// checked.
func TestVetPolicies(t *testing.T) {
	repo := t.TempDir()
	writeTestFile(t, filepath.Join(repo, "charts/web/Chart.yaml"), "apiVersion: v2\nname: web\nversion: 0.1.0\n")
	writeTestFile(t, filepath.Join(repo, "charts/web/templates/svc.yaml"), "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: {{ .Values.serviceType }}\n  ports: [{port: 80}]\n")
	writeTestFile(t, filepath.Join(repo, "fleet.cue"), policiesFleet)
	vet := func(args ...string) (int, string) {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), append([]string{"vet", repo}, args...), &stdout, &stderr)
		return code, stdout.String() + stderr.String()
	}
	if code, out := vet(); code != exitOK || !strings.Contains(out, "note: the fleet's policy is not checked") {
		t.Errorf("vet: exit %d\n%s", code, out)
	}
	if code, out := vet("--policies"); code != exitOK {
		t.Errorf("vet --policies on a fleet that holds: exit %d\n%s", code, out)
	}

	writeTestFile(t, filepath.Join(repo, "fleet.cue"), strings.Replace(policiesFleet, `matchLabels: class: "standard", values`, `matchLabels: class: "regulated", values`, 1))
	code, out := vet("--policies")
	if code != exitFailed || !strings.Contains(out, "fleet.cue:20:11: cluster eu-1: bundle web: policies.regulated-baseline.forbid[0]: policy regulated-baseline forbids") ||
		!strings.Contains(out, "Service shop/web matches it (spec.type)") {
		t.Errorf("a LoadBalancer for the regulated class: exit %d\n%s", code, out)
	}

	writeTestFile(t, filepath.Join(repo, "fleet.cue"), strings.Replace(policiesFleet, `class: "regulated"
	resources`, `class: "nobody"
	resources`, 1))
	code, out = vet("--policies")
	if code != exitFailed || !strings.Contains(out, "fleet.cue:19:12: cluster eu-1: policies.regulated-baseline.require[0]: policy regulated-baseline requires an object matching {apiVersion: \"networking.k8s.io/v1\", kind: \"NetworkPolicy\", metadata: name: \"default-deny\"}") {
		t.Errorf("the NetworkPolicy dropped: exit %d\n%s", code, out)
	}

	// A regulated cluster known only from its status branch is checked
	// too, with its real labels.
	writeTestFile(t, filepath.Join(repo, "fleet.cue"), policiesFleet)
	statusRepo := gittest.New(t)
	r, err := report.New(report.Options{URL: statusRepo.URL})
	if err != nil {
		t.Fatal(err)
	}
	edge := &report.Status{Cluster: fleet.Cluster{Name: "edge-9", Labels: map[string]string{"class": "regulated"}},
		Phase: report.ClusterReady, Bundles: []report.BundleStatus{}}
	if _, err := r.Publish(t.Context(), edge, time.Now()); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(repo, "edge.cue"), `package fleet

bundles: edge: {
	target: names: ["edge-*"]
	resources: [{apiVersion: "v1", kind: "Service", metadata: name: "edge", spec: {type: "LoadBalancer", ports: [{port: 80}]}}]
}
`)
	// The edge bundle selects no inventory cluster: a warning, unless the
	// status branches know a cluster it selects.
	if code, out := vet("--strict"); code != exitFailed || !strings.Contains(out, "bundle edge: target: selects none of the 2 clusters") {
		t.Errorf("vet --strict without the status branches: exit %d\n%s", code, out)
	}
	if code, out := vet("--strict", "--status-repo", statusRepo.URL); code != exitOK || strings.Contains(out, "selects none") {
		t.Errorf("vet --strict with the status branches: exit %d\n%s", code, out)
	}
	code, out = vet("--policies", "--status-repo", statusRepo.URL)
	if code != exitFailed || !strings.Contains(out, "cluster edge-9: bundle edge: policies.regulated-baseline.forbid[0]") || strings.Contains(out, "eu-1") {
		t.Errorf("a cluster known from its status branch: exit %d\n%s", code, out)
	}
}
