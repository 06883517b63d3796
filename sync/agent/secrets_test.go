package agent_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/internal/sopstest"
	"github.com/flotilla-gitops/flotilla/sync/agent"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/sandbox"
)

const secretsFleet = `package fleet

bundles: [string]: namespace: cluster.labels.ns
bundles: db: manifests: path: "secrets"
bundles: common: resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "common", data: v: "1"}]
`

// lockedBuffer is a log sink's buffer, written by the agent's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) write(prefix, args string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(prefix + " " + args + "\n")
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAgentDecryptsSecrets: the agent, rendering in its sandbox workers,
// decrypts a SOPS-encrypted Secret of the fleet in memory with its age
// identity and applies it; a commit whose file it cannot decrypt (encrypted
// to another key) fails that bundle alone — naming the file and the
// recipients — and the cluster keeps the Secret it had. Neither secret
// value is in the status branch, the logs or the metrics.
func TestAgentDecryptsSecrets(t *testing.T) {
	key, other := sopstest.NewKey(t), sopstest.NewKey(t)
	const first, second = "first-s3cret-7e21", "second-s3cret-0a9f"
	secret := func(v string) string {
		return "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: " + v + "\n"
	}
	repo := gittest.New(t)
	repo.Commit(map[string]string{
		"fleet.cue":       secretsFleet,
		"secrets/db.yaml": string(sopstest.Encrypt(t, "db.yaml", secret(first), "", key.Recipient)),
	})
	a, statusRepo, logs := decryptingAgent(t, repo, key)
	readSecret := func() string {
		t.Helper()
		var s corev1.Secret
		if err := kube.Get(context.Background(), client.ObjectKey{Namespace: a.NS, Name: "db"}, &s); err != nil {
			t.Fatal(err)
		}
		return string(s.Data["password"])
	}

	p := a.RunOnce(context.Background())
	a.Log(p)
	if p.Failed() {
		t.Fatalf("first pass: %v", p.Err)
	}
	if got := readSecret(); got != first {
		t.Fatalf("the Secret holds %q", got)
	}

	repo.Commit(map[string]string{
		"fleet.cue":       strings.Replace(secretsFleet, `v: "1"`, `v: "2"`, 1),
		"secrets/db.yaml": string(sopstest.Encrypt(t, "db.yaml", secret(second), "", other.Recipient)),
	})
	p = a.RunOnce(context.Background())
	a.Log(p)
	if !p.Failed() || p.Result == nil {
		t.Fatalf("a file the agent cannot decrypt: %+v", p)
	}
	var dbErr string
	for _, b := range p.Result.Bundles {
		switch {
		case b.Name == "db" && b.Phase == apply.PhaseFailed:
			dbErr = b.Message + " " + strings.Join(b.Errors, " ")
		case b.Name == "common" && b.Phase == apply.PhaseFailed:
			t.Errorf("common failed with db: %s", b.Message)
		}
	}
	for _, want := range []string{"secrets/db.yaml", other.Recipient, key.Recipient} {
		if !strings.Contains(dbErr, want) {
			t.Errorf("db's error %q lacks %q", dbErr, want)
		}
	}
	if got := readSecret(); got != first {
		t.Errorf("the Secret became %q: the last state was not kept", got)
	}
	if data, _ := a.configMapData(t, "common"); data["v"] != "2" {
		t.Errorf("common was not applied: %v", data)
	}

	rec := httptest.NewRecorder()
	a.Handler(nil).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	metrics, _ := io.ReadAll(rec.Body)
	st, err := report.ReadCluster(context.Background(), statusRepo.URL, "", "prod-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.Bundles[0].Message+st.Bundles[1].Message, "secrets/db.yaml") {
		t.Errorf("the status does not say which file failed: %+v", st.Bundles)
	}
	for where, text := range map[string]string{
		"status branch": gittest.Git(t, statusRepo.Bare, "log", "-p", "--all"),
		"logs":          logs.String(),
		"metrics":       string(metrics),
		"pass error":    fmt.Sprint(p.Err),
	} {
		for _, v := range []string{first, second, key.Identity, other.Identity} {
			if strings.Contains(text, v) {
				t.Errorf("the %s show a secret (%s…)", where, v[:6])
			}
		}
	}
	if !strings.Contains(logs.String(), "secrets/db.yaml") {
		t.Errorf("the logs do not say which file failed:\n%s", logs.String())
	}
}

// TestDecryptedValueRefusedByTheAPIServer: a decrypted value the API
// server refuses (a Service's externalName, which it quotes in its error)
// fails the bundle, and the refusal reaches the status branch and the log
// redacted: the status says which field, never the value.
func TestDecryptedValueRefusedByTheAPIServer(t *testing.T) {
	key := sopstest.NewKey(t)
	const secret = "Db.Internal!Hunter2-Pr0duction"
	svc := "apiVersion: v1\nkind: Service\nmetadata:\n  name: db\nspec:\n  type: ExternalName\n  externalName: " + secret + "\n"
	repo := gittest.New(t)
	repo.Commit(map[string]string{
		"fleet.cue":       secretsFleet,
		"secrets/db.yaml": string(sopstest.Encrypt(t, "db.yaml", svc, "^externalName$", key.Recipient)),
	})
	a, statusRepo, logs := decryptingAgent(t, repo, key)
	p := a.RunOnce(context.Background())
	a.Log(p)
	if !p.Failed() || p.Result == nil {
		t.Fatalf("the API server took the Service: %+v", p)
	}
	var dbErr string
	for _, b := range p.Result.Bundles {
		if b.Name == "db" {
			dbErr = b.Message + " " + strings.Join(b.Errors, " ")
		}
	}
	if !strings.Contains(dbErr, "externalName") || !strings.Contains(dbErr, "‹decrypted value›") {
		t.Errorf("db's error does not say what the API server refused: %q", dbErr)
	}
	for where, text := range map[string]string{
		"status branch": gittest.Git(t, statusRepo.Bare, "log", "-p", "--all"),
		"logs":          logs.String(),
		"result":        dbErr,
	} {
		if strings.Contains(text, secret) || strings.Contains(text, "Hunter2") {
			t.Errorf("the %s show the decrypted value", where)
		}
	}
}

// decryptingAgent is an agent of cluster prod-1 for repo that decrypts
// with key, renders in its sandbox workers, reports to a status
// repository of its own and logs into the returned buffer.
func decryptingAgent(t *testing.T, repo *gittest.Repo, key sopstest.Key) (*testAgent, *gittest.Repo, *lockedBuffer) {
	t.Helper()
	statusRepo := gittest.New(t)
	logs := &lockedBuffer{}
	log := funcr.New(logs.write, funcr.Options{Verbosity: 2})
	a := newLoggingAgent(t, cluster.Config, repo, "prod-1", nil, log, func(o *agent.Options) {
		o.Status = &report.Options{URL: statusRepo.URL}
		o.Sandbox = &sandbox.Options{PlanTimeout: 30 * time.Second}
		o.Sources.AgeKeyFiles = []string{key.File}
	})
	return a, statusRepo, logs
}
