package agent_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/agent"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/sandbox"
)

const policiesFleet = `package fleet

bundles: [string]: namespace: cluster.labels.ns
bundles: netpol: resources: [{apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: name: "default-deny", spec: podSelector: {}}]
bundles: web: resources: [{apiVersion: "v1", kind: "Service", metadata: name: "web", spec: {type: "ClusterIP", ports: [{port: 80}]}}]
policies: baseline: {
	require: [{apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: name: "default-deny"}]
	forbid: [{apiVersion: "v1", kind: "Service", spec: type: "LoadBalancer"}]
}
`

// TestAgentChecksPolicies: before applying, the agent checks the objects
// against the fleet's policies (in a sandbox worker): a commit that turns
// a Service into a LoadBalancer fails that bundle alone — nothing of it
// applied, the Service as it was — and the status branch names the policy;
// the other bundle goes on.
func TestAgentChecksPolicies(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": policiesFleet})
	statusRepo := gittest.New(t)
	a := newAgent(t, cluster.Config, repo, "prod-1", nil, func(o *agent.Options) {
		o.Status = &report.Options{URL: statusRepo.URL}
		o.Sandbox = &sandbox.Options{PlanTimeout: 30 * time.Second}
	})
	serviceType := func() string {
		t.Helper()
		var s corev1.Service
		if err := kube.Get(context.Background(), client.ObjectKey{Namespace: a.NS, Name: "web"}, &s); err != nil {
			t.Fatal(err)
		}
		return string(s.Spec.Type)
	}
	if p := a.RunOnce(context.Background()); p.Failed() {
		t.Fatalf("first pass: %v %+v", p.Err, p.Result)
	}
	if got := serviceType(); got != "ClusterIP" {
		t.Fatalf("service type %s", got)
	}

	fleet := strings.Replace(policiesFleet, `type: "ClusterIP"`, `type: "LoadBalancer"`, 1)
	fleet = strings.Replace(fleet, `podSelector: {}`, `podSelector: matchLabels: app: "web"`, 1)
	repo.Commit(map[string]string{"fleet.cue": fleet})
	p := a.RunOnce(context.Background())
	if p.Result == nil {
		t.Fatalf("pass: %v", p.Err)
	}
	var web, netpol apply.BundleResult
	for _, b := range p.Result.Bundles {
		switch b.Name {
		case "web":
			web = b
		case "netpol":
			netpol = b
		}
	}
	if web.Phase != apply.PhaseFailed || !strings.Contains(web.Message, "violates the fleet's policies") ||
		!strings.Contains(web.Message, "policy baseline forbids") || !strings.Contains(web.Message, "Service "+a.NS+"/web matches it (spec.type)") {
		t.Errorf("web: %+v", web)
	}
	if netpol.Phase == apply.PhaseFailed {
		t.Errorf("netpol failed with web: %s", netpol.Message)
	}
	if got := serviceType(); got != "ClusterIP" {
		t.Errorf("the violating Service was applied: type %s", got)
	}
	st, err := report.ReadCluster(context.Background(), statusRepo.URL, "", "prod-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, b := range st.Bundles {
		if b.Name == "web" && strings.Contains(b.Message, "policy baseline forbids") {
			found = true
		}
	}
	if !found {
		t.Errorf("the status does not say web violates the policy: %+v", st.Bundles)
	}
}
