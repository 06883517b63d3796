package notify_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/flotilla-gitops/flotilla/sync/notify"
)

// receiver is a real HTTP server on loopback that keeps what it got.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	requests []*http.Request
	bodies   [][]byte
	// answer is the status to answer for the nth request (from 1).
	answer func(n int) int
	delay  time.Duration
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{answer: func(int) int { return http.StatusOK }}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.requests = append(r.requests, req)
		r.bodies = append(r.bodies, body)
		n := len(r.requests)
		r.mu.Unlock()
		if r.delay > 0 {
			select {
			case <-time.After(r.delay):
			case <-req.Context().Done():
			}
		}
		w.WriteHeader(r.answer(n))
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) got() ([]*http.Request, [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*http.Request{}, r.requests...), append([][]byte{}, r.bodies...)
}

// eventually waits for cond, a minute at most.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within a minute: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDeliveryInEachFormat: one event reaches a JSON receiver (with the
// bearer token of its file), a Slack receiver (Slack's incoming-webhook
// body, its address read from a file) and a CloudEvents receiver, whose
// request the CloudEvents SDK reads back as a valid event; a receiver
// that filters events gets only its own.
func TestDeliveryInEachFormat(t *testing.T) {
	js, slack, ce, filtered := newReceiver(t), newReceiver(t), newReceiver(t), newReceiver(t)
	token := writeFile(t, "token", "s3cret-token\n")
	slackURL := writeFile(t, "slack-url", slack.URL+"/services/T000/B000/XXXX\n")
	cfg := writeFile(t, "notify.yaml", `receivers:
- {name: ops, url: "`+js.URL+`/hook", tokenFile: "`+token+`"}
- {name: chat, urlFile: "`+slackURL+`", format: slack}
- {name: bus, url: "`+ce.URL+`", format: cloudevents}
- {name: approvals, url: "`+filtered.URL+`", events: [RolloutApproval]}
`)
	c, err := notify.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := notify.New(c, notify.Options{}, logr.Discard())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go n.Run(ctx)
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	n.Send(notify.Event{Type: notify.ClusterFailed, Cluster: "prod-eu-1", Region: "eu-west-1", Time: at, Revision: strings.Repeat("ab", 20),
		Message: "Failed: bundle web: fleet.cue:3:1: conflicting values", Bundles: []string{"web"}})
	eventually(t, "three deliveries", func() bool { return n.Sent.Load() == 3 })

	reqs, bodies := js.got()
	var e notify.Event
	if len(reqs) != 1 || reqs[0].Header.Get("Authorization") != "Bearer s3cret-token" || json.Unmarshal(bodies[0], &e) != nil ||
		e.Type != notify.ClusterFailed || e.Cluster != "prod-eu-1" || e.Bundles[0] != "web" || !e.Time.Equal(at) {
		t.Errorf("the JSON receiver got %d requests: %s", len(reqs), bodies)
	}
	reqs, bodies = slack.got()
	var msg struct {
		Text string `json:"text"`
	}
	if len(reqs) != 1 || reqs[0].URL.Path != "/services/T000/B000/XXXX" || json.Unmarshal(bodies[0], &msg) != nil ||
		!strings.Contains(msg.Text, "*prod-eu-1 (eu-west-1)* Failed: bundle web") || !strings.Contains(msg.Text, "(revision abababa)") {
		t.Errorf("the Slack receiver got %d requests: %s", len(reqs), bodies)
	}
	reqs, bodies = ce.got()
	if len(reqs) != 1 {
		t.Fatalf("the CloudEvents receiver got %d requests", len(reqs))
	}
	replay, _ := http.NewRequest(http.MethodPost, "/", strings.NewReader(string(bodies[0])))
	replay.Header = reqs[0].Header
	ev, err := cehttp.NewEventFromHTTPRequest(replay)
	if err != nil || ev.Validate() != nil || ev.Type() != "dev.flotilla.clusterfailed" || ev.Source() != "flotilla/agent/prod-eu-1" || ev.Subject() != "prod-eu-1" {
		t.Errorf("the CloudEvents SDK reads %v (%v) from %s", ev, err, bodies[0])
	} else if err := ev.DataAs(&e); err != nil || e.Cluster != "prod-eu-1" {
		t.Errorf("the CloudEvent's data: %v %+v", err, e)
	}
	if reqs, _ := filtered.got(); len(reqs) != 0 {
		t.Errorf("a receiver of approvals only got %d requests", len(reqs))
	}
}

// TestReceiversThatFail: a receiver that answers 500 gets the event again
// (with back-off) until it takes it; one that refuses it (400) is asked
// once; one that is down or too slow is retried until the deadline and
// counted failed; none of them delays the others, Send never waits (a full
// queue drops), and the address — a secret for Slack — is in no log line.
func TestReceiversThatFail(t *testing.T) {
	flaky, refusing, slow, good := newReceiver(t), newReceiver(t), newReceiver(t), newReceiver(t)
	flaky.answer = func(n int) int {
		if n < 3 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}
	refusing.answer = func(int) int { return http.StatusBadRequest }
	slow.delay = time.Minute
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String() + "/secret-path-do-not-log"
	ln.Close()
	cfg := writeFile(t, "notify.yaml", `receivers:
- {name: flaky, url: "`+flaky.URL+`"}
- {name: refusing, url: "`+refusing.URL+`"}
- {name: slow, url: "`+slow.URL+`/secret-path-do-not-log"}
- {name: down, url: "`+down+`"}
- {name: good, url: "`+good.URL+`"}
`)
	c, err := notify.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	var logMu sync.Mutex
	log := funcr.New(func(prefix, args string) { logMu.Lock(); logs.WriteString(prefix + args + "\n"); logMu.Unlock() }, funcr.Options{})
	opts := notify.Options{QueueSize: 2, Timeout: 200 * time.Millisecond, RetryFor: 2 * time.Second, Backoff: 50 * time.Millisecond, Rate: 1000, Burst: 1000}
	n := notify.New(c, opts, log)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go n.Run(ctx)

	var sends atomic.Int64
	start := time.Now()
	for range 50 {
		n.Send(notify.Event{Type: notify.DriftCorrected, Cluster: "prod-eu-1", Message: "put back 2 objects"})
		sends.Add(1)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("50 sends took %s: Send must not wait for receivers", took)
	}
	eventually(t, "the good receiver gets what its queue held", func() bool { r, _ := good.got(); return len(r) >= 2 })
	eventually(t, "the flaky receiver takes an event on its third request", func() bool { r, _ := flaky.got(); return len(r) >= 3 })
	eventually(t, "the slow and down receivers are given up on", func() bool {
		logMu.Lock()
		defer logMu.Unlock()
		given := func(name string) bool {
			return regexp.MustCompile(`an event was not delivered.*"receiver"="` + name + `"`).MatchString(logs.String())
		}
		return given("slow") && given("down")
	})
	if n.Dropped.Load() == 0 {
		t.Errorf("50 events into queues of 2: none dropped")
	}
	if r, _ := refusing.got(); len(r) == 0 {
		t.Errorf("the refusing receiver was never asked")
	}
	logMu.Lock()
	defer logMu.Unlock()
	if strings.Contains(logs.String(), "secret-path-do-not-log") || strings.Contains(logs.String(), "127.0.0.1") {
		t.Errorf("a receiver's address is in the logs:\n%s", logs.String())
	}
}

// TestRefusedOnce: an event a receiver refuses (HTTP 400) is not sent
// again.
func TestRefusedOnce(t *testing.T) {
	refusing := newReceiver(t)
	refusing.answer = func(int) int { return http.StatusBadRequest }
	c, err := notify.Load(writeFile(t, "notify.yaml", `receivers: [{name: refusing, url: "`+refusing.URL+`"}]`))
	if err != nil {
		t.Fatal(err)
	}
	opts := notify.Options{RetryFor: 10 * time.Second, Backoff: 10 * time.Millisecond}
	n := notify.New(c, opts, logr.Discard())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go n.Run(ctx)
	n.Send(notify.Event{Type: notify.RolloutHalted, Cluster: "prod-eu-1", Message: "halted by canary-1"})
	eventually(t, "the refused event counted failed", func() bool { return n.Failed.Load() == 1 })
	if r, _ := refusing.got(); len(r) != 1 {
		t.Errorf("a refused event was sent %d times, want once", len(r))
	}
}

// TestLoadSaysWhatIsWrong: a bad config names the file and the receiver,
// and never repeats an address.
func TestLoadSaysWhatIsWrong(t *testing.T) {
	for body, want := range map[string]string{
		`receivers: []`: "no receivers",
		`receivers: [{url: "https://hooks.example/x"}]`:                              "receivers[0]: a receiver needs a name",
		`receivers: [{name: a, url: "https://h.example/x", urlFile: /x}]`:            "receivers[0] (a): give url or urlFile",
		`receivers: [{name: a, url: "ftp://secret@h.example/x"}]`:                    "receivers[0] (a): the address is not an http:// or https:// URL",
		`receivers: [{name: a, url: "https://h.example/x", format: teams}]`:          `format "teams": json, slack or cloudevents`,
		`receivers: [{name: a, url: "https://h.example/x", events: [Exploded]}]`:     `event "Exploded": one of ClusterFailed, ClusterRecovered`,
		`receivers: [{name: a, url: "https://h.example/x"}, {name: a, urlFile: /x}]`: "receivers[1] (a): the name is taken",
		`receivers: [{name: a, url: "https://h.example/x", tokne: /x}]`:              `unknown field "tokne"`,
	} {
		file := writeFile(t, "notify.yaml", body)
		_, err := notify.Load(file)
		if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "secret@") {
			t.Errorf("%s: %v, want %q naming the file", body, err, want)
		}
	}
}
