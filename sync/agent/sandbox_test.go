package agent_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/sync/agent"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/sandbox"
)

// TestRunawayBundleFailsAlone runs the agent with its sandbox: a chart
// whose templates never finish fails at its renderTimeout, with the reason,
// while the cluster's other bundle is applied in the same pass; then a
// fleet whose evaluation never finishes fails at the evaluation deadline
// and nothing is pruned.
func TestRunawayBundleFailsAlone(t *testing.T) {
	ctx := context.Background()
	repo := gittest.New(t)
	repo.Commit(map[string]string{
		"charts/forever/Chart.yaml":       "apiVersion: v2\nname: forever\nversion: 0.1.0\n",
		"charts/forever/templates/x.yaml": "{{ range until 100000 }}{{ range until 100000 }}{{ end }}{{ end }}\n",
		"fleet.cue": `package fleet

bundles: forever: {namespace: cluster.labels.ns, helm: chart: "charts/forever", renderTimeout: "2s"}
bundles: ok: {namespace: cluster.labels.ns, resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "ok"}]}
`,
	})
	a := newAgent(t, cluster.Config, repo, "lab-1", nil, func(o *agent.Options) {
		o.Sandbox = &sandbox.Options{PlanTimeout: 10 * time.Second}
		o.Limits = render.Limits{Timeout: time.Minute}
	})
	start := time.Now()
	p := a.RunOnce(ctx)
	if p.Err != nil {
		t.Fatalf("pass: %v", p.Err)
	}
	if b := p.Result.Bundle("forever"); b == nil || b.Phase != apply.PhaseFailed || !strings.Contains(b.Message+strings.Join(b.Errors, " "), "took longer than its render timeout (2s)") {
		t.Errorf("the runaway bundle: %+v", b)
	}
	if b := p.Result.Bundle("ok"); b == nil || b.Phase != apply.PhaseReady {
		t.Errorf("the other bundle: %+v", b)
	}
	if took := time.Since(start); took > 45*time.Second {
		t.Errorf("the pass took %s", took)
	}

	repo.Commit(map[string]string{"fleet.cue": `package fleet

import "list"

bundles: ok: {namespace: cluster.labels.ns, values: n: len([for i in list.Range(0, 2000000000, 1) {i}]), resources: []}
`})
	p = a.RunOnce(ctx)
	if p.Err == nil || (!strings.Contains(p.Err.Error(), "took longer than 10s") && !strings.Contains(p.Err.Error(), "memory")) ||
		!strings.Contains(p.Err.Error(), "nothing applied or pruned") {
		t.Errorf("a runaway fleet: %v", p.Err)
	}
	if err := kube.Get(ctx, client.ObjectKey{Namespace: a.NS, Name: "ok"}, &corev1.ConfigMap{}); err != nil {
		t.Errorf("the applied object is gone: %v", err)
	}
}

// TestWorkersEndOnceRendered: a pass ends its render workers once it has
// rendered (before it applies) even when they could idle for an hour, as
// flotilla_render_workers shows; with --worker-idle-timeout 0 they stay.
func TestWorkersEndOnceRendered(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": `package fleet

bundles: ok: {namespace: cluster.labels.ns, resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "ok"}]}
`})
	for _, idle := range []time.Duration{time.Hour, 0} {
		a := newAgent(t, cluster.Config, repo, "lab-1", nil, func(o *agent.Options) {
			o.Sandbox = &sandbox.Options{IdleTimeout: idle}
		})
		if p := a.RunOnce(context.Background()); p.Err != nil || p.Result.Failed() {
			t.Fatalf("idle timeout %s: pass: %v", idle, p.Err)
		}
		want := "flotilla_render_workers 0\n"
		if idle == 0 {
			want = "flotilla_render_workers 1\n"
		}
		rec := httptest.NewRecorder()
		a.Handler(nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("idle timeout %s: want %q in the metrics, got:\n%s", idle, want, rec.Body.String())
		}
	}
}
