package agent_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/agent"
)

// TestRunTriggerAndShutdown runs the loop with a one-hour interval: a
// webhook makes it pass at once, /readyz follows the first successful
// pass, forged webhooks are refused, and ending the context stops it.
func TestRunTriggerAndShutdown(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": fleetV1})
	a := newAgent(t, cluster.Config, repo, "prod-1", map[string]string{"env": "prod"})
	srv := httptest.NewServer(a.Handler([]byte("hook-secret")))
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()

	// The first pass runs at start; /readyz turns 200 once it succeeded.
	waitFor(t, func() bool { return status(t, srv.URL+"/readyz", nil, nil) == http.StatusOK })
	if _, ok := a.configMapData(t, "common"); !ok {
		t.Fatal("first pass applied nothing")
	}

	repo.Commit(map[string]string{"fleet.cue": fleetV1 + "\nbundles: extra: resources: [{apiVersion: \"v1\", kind: \"ConfigMap\", metadata: name: \"extra\"}]\n"})
	body := []byte(`{"ref":"refs/heads/main"}`)
	mac := hmac.New(sha256.New, []byte("hook-secret"))
	mac.Write(body)
	for name, h := range map[string]http.Header{
		"forged HMAC":  {"X-Hub-Signature-256": {"sha256=" + hex.EncodeToString(make([]byte, 32))}},
		"wrong token":  {"X-Gitlab-Token": {"nope"}},
		"no signature": {},
	} {
		if got := status(t, srv.URL+"/trigger", h, body); got != http.StatusUnauthorized {
			t.Errorf("%s: status %d", name, got)
		}
	}
	good := http.Header{"X-Hub-Signature-256": {"sha256=" + hex.EncodeToString(mac.Sum(nil))}}
	if got := status(t, srv.URL+"/trigger", good, body); got != http.StatusAccepted {
		t.Fatalf("signed trigger: status %d", got)
	}
	// The interval is an hour: only the trigger can have applied this.
	waitFor(t, func() bool { _, ok := a.configMapData(t, "extra"); return ok })

	// The metrics tell the passes apart, labelled by bundle. (They are
	// recorded when a pass ends, which may be just after the object
	// appears; drift checks may add passes.)
	var metrics string
	waitFor(t, func() bool {
		metrics = get(t, srv.URL+"/metrics")
		return strings.Contains(metrics, `flotilla_objects_applied_total{action="created",bundle="extra"} 1`)
	})
	for _, want := range []string{`flotilla_passes_total{outcome="applied"}`, `flotilla_bundles{phase="Ready"} 3`,
		"flotilla_applied_revision_info{revision=", "flotilla_sync_duration_seconds_count"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return after its context ended")
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return string(data)
}

func status(t *testing.T, url string, h http.Header, body []byte) int {
	t.Helper()
	method := http.MethodGet
	if body != nil {
		method = http.MethodPost
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitFor polls cond (a real wait on the cluster, not a sleep) for up to a
// minute.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, time.Minute, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatal("condition not met within a minute")
	}
}

// TestDriftIsWatched checks that a hand edit of a managed object is put
// back without a new commit and long before the poll interval, because the
// agent watches the objects it manages.
func TestDriftIsWatched(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": fleetV1})
	a := newAgent(t, cluster.Config, repo, "prod-1", map[string]string{"env": "prod"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = a.Run(ctx) }()
	waitFor(t, func() bool { _, ok := a.configMapData(t, "prod-only"); return ok })

	var cm corev1.ConfigMap
	if err := kube.Get(ctx, client.ObjectKey{Namespace: a.NS, Name: "prod-only"}, &cm); err != nil {
		t.Fatal(err)
	}
	cm.Data["v"] = "edited-by-hand"
	if err := kube.Update(ctx, &cm, client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
	// The interval is an hour: only the watch can bring it back.
	waitFor(t, func() bool { data, _ := a.configMapData(t, "prod-only"); return data["v"] == "1" })
}

// TestWebhookIsSpread: with a trigger spread, a signed webhook still
// brings the pass (an hour's interval cannot), within the window.
func TestWebhookIsSpread(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": fleetV1})
	a := newAgent(t, cluster.Config, repo, "prod-1", map[string]string{"env": "prod"}, func(o *agent.Options) {
		o.Interval, o.TriggerSpread = time.Hour, 2*time.Second
	})
	srv := httptest.NewServer(a.Handler([]byte("hook-secret")))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	waitFor(t, func() bool { return status(t, srv.URL+"/readyz", nil, nil) == http.StatusOK })

	repo.Commit(map[string]string{"fleet.cue": fleetV1 + "\nbundles: extra: resources: [{apiVersion: \"v1\", kind: \"ConfigMap\", metadata: name: \"extra\"}]\n"})
	if got := status(t, srv.URL+"/trigger", http.Header{"Authorization": {"Bearer hook-secret"}}, []byte("{}")); got != http.StatusAccepted {
		t.Fatalf("trigger: status %d", got)
	}
	waitFor(t, func() bool { _, ok := a.configMapData(t, "extra"); return ok })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
