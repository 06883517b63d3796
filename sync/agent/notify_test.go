package agent_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/agent"
	"github.com/flotilla-gitops/flotilla/sync/notify"
)

// TestAgentNotifies: on a real control plane, a pass that fails sends
// ClusterFailed (with the positioned error) to the receiver, the next pass
// that fails again sends nothing new, and the pass that fixes it sends
// ClusterRecovered; a receiver that is down changes nothing of the passes.
func TestAgentNotifies(t *testing.T) {
	var mu sync.Mutex
	var got []notify.Event
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e notify.Event
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &e); err != nil {
			t.Errorf("the receiver got %q: %v", body, err)
		}
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
	}))
	defer srv.Close()
	events := func() []notify.Event { mu.Lock(); defer mu.Unlock(); return append([]notify.Event{}, got...) }

	repo := gittest.New(t)
	good := "package fleet\n\nbundles: web: {namespace: cluster.labels.ns, resources: [{apiVersion: \"v1\", kind: \"ConfigMap\", metadata: name: \"web\"}]}\n"
	repo.Commit(map[string]string{"fleet.cue": "package fleet\n\nbundles: web: {namespace: 5, resources: []}\n"})
	a := newAgent(t, cluster.Config, repo, "lab-1", nil, func(o *agent.Options) {
		o.Notify = &notify.Config{Receivers: []notify.Receiver{
			{Name: "ops", URL: srv.URL, Format: notify.FormatJSON},
			{Name: "down", URL: "http://127.0.0.1:1/never", Format: notify.FormatJSON},
		}}
		o.NotifyOptions = notify.Options{Backoff: 10 * time.Millisecond, RetryFor: time.Second}
	})
	ctx := context.Background()
	wait := func(n int) []notify.Event {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for len(events()) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d events within a minute, want %d: %+v", len(events()), n, events())
			}
			time.Sleep(10 * time.Millisecond)
		}
		return events()
	}
	failed := func(p *agent.Pass) bool { return p.Err != nil || p.Result != nil && p.Result.Failed() }
	if p := a.RunOnce(ctx); !failed(p) {
		t.Fatal("a bundle that does not evaluate: the pass should fail")
	}
	e := wait(1)[0]
	if e.Type != notify.ClusterFailed || e.Cluster != "lab-1" || !strings.Contains(e.Message, "fleet.cue:3:") {
		t.Errorf("the first event: %+v", e)
	}
	if p := a.RunOnce(ctx); !failed(p) {
		t.Fatal("the pass should fail again")
	}
	repo.Commit(map[string]string{"fleet.cue": good})
	if p := a.RunOnce(ctx); p.Err != nil || p.Result.Failed() {
		t.Fatalf("the fixed fleet: %v", p.Err)
	}
	all := wait(2)
	if len(all) != 2 || all[1].Type != notify.ClusterRecovered || !strings.HasPrefix(all[1].Message, "recovered: Ready at ") {
		t.Errorf("events: %+v (want Failed once, then recovered)", all)
	}
}
