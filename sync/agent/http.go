package agent

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"io"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// maxWebhookBody bounds what a /trigger request may send.
const maxWebhookBody = 1 << 20

// Handler serves the agent's endpoints:
//
//	/healthz  200 while the process runs
//	/metrics  Prometheus metrics
//	/readyz   200 once a pass has succeeded (the cluster matches a revision)
//	/trigger  POST: sync within Options.TriggerSpread (a Git host's push
//	          webhook, spread so that a fleet's agents do not all fetch at
//	          once), authenticated
//	          with the shared secret as GitHub/Gitea (X-Hub-Signature-256
//	          HMAC), GitLab (X-Gitlab-Token) or a bearer token do
//
// A trigger while a pass runs is kept for right after it (one at most).
func (a *Agent) Handler(secret []byte) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "no successful pass yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("POST /trigger", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxWebhookBody))
		if err != nil {
			http.Error(w, "unreadable body", http.StatusBadRequest)
			return
		}
		if len(secret) == 0 || !authentic(r, body, secret) {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		a.TriggerWebhook()
		w.WriteHeader(http.StatusAccepted)
	})
	return mux
}

// Trigger asks for a pass now.
func (a *Agent) Trigger() {
	select {
	case a.trigger <- struct{}{}:
	default: // one is already pending
	}
}

// TriggerWebhook asks for a pass within Options.TriggerSpread, as /trigger
// does.
func (a *Agent) TriggerWebhook() {
	select {
	case a.webhook <- struct{}{}:
	default: // one is already pending
	}
}

// authentic checks a webhook against the shared secret, in constant time.
func authentic(r *http.Request, body, secret []byte) bool {
	if sig, ok := strings.CutPrefix(r.Header.Get("X-Hub-Signature-256"), "sha256="); ok {
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		want := hex.EncodeToString(mac.Sum(nil))
		return hmac.Equal([]byte(sig), []byte(want))
	}
	if token := r.Header.Get("X-Gitlab-Token"); token != "" {
		return subtle.ConstantTimeCompare([]byte(token), secret) == 1
	}
	if token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return subtle.ConstantTimeCompare([]byte(token), secret) == 1
	}
	return false
}
