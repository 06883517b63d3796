package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// serveStatus runs `flotilla status serve` with args until the test ends,
// and returns its address.
func serveStatus(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	stderr := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"status", "serve", "--listen", "127.0.0.1:0"}, args...), io.Discard, stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("status serve did not stop within 30 s of its context")
		}
	})
	re := regexp.MustCompile(`on http://(127\.0\.0\.1:\d+)/`)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(stderr.String()); m != nil {
			return m[1]
		}
		select {
		case code := <-done:
			t.Fatalf("status serve exited %d:\n%s", code, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("status serve did not listen within a minute:\n%s", stderr.String())
	return ""
}

// get fetches a path of the server; header is "Name: value" lines.
func get(t *testing.T, method, url string, header ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range header {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

// TestStatusServe: `status serve` serves the page, its JSON and each
// cluster's last reports (alike reports in a row folded into one); it
// reads the branches again each interval (a new cluster appears); a read
// that fails keeps the last page with a warning; it only reads (POST is
// refused); it listens beyond loopback only with a token, and then asks
// for it (bearer, or ?token= once and a cookie after).
func TestStatusServe(t *testing.T) {
	repo := gittest.New(t)
	// A heartbeat a second after the last report: the history has one.
	r, err := report.New(report.Options{URL: repo.URL, Heartbeat: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(st report.Status, at time.Time) {
		t.Helper()
		if _, err := r.Publish(t.Context(), &st, at); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	eu := report.Status{Cluster: fleet.Cluster{Name: "eu-1", Region: "eu-west-1"}, Phase: report.ClusterProgressing, AppliedRevision: "1111111111111111111111111111111111111111",
		Bundles: []report.BundleStatus{{Name: "web", Phase: apply.PhaseProgressing, Message: "Deployment/web: 1 of 3 available"}}}
	publish(eu, now.Add(-3*time.Minute))
	eu.Phase, eu.Bundles[0].Phase, eu.Bundles[0].Message = report.ClusterReady, apply.PhaseReady, ""
	publish(eu, now.Add(-2*time.Minute))
	publish(eu, now.Add(-time.Minute)) // a heartbeat: says the same
	publish(report.Status{Cluster: fleet.Cluster{Name: "us-1", Region: "us-east-1"}, Phase: report.ClusterFailed,
		Bundles: []report.BundleStatus{{Name: "web", Phase: apply.PhaseFailed, Message: "fleet.cue:3:1: conflicting values"}}}, now)

	addr := serveStatus(t, "--repo", repo.Bare, "--interval", "1s")
	base := "http://" + addr
	code, page, header := get(t, "GET", base+"/")
	if code != http.StatusOK || !strings.Contains(page, `data-cluster="eu-1"`) || !strings.Contains(page, `data-cluster="us-1"`) ||
		!strings.Contains(page, `"reload":1`) || !strings.Contains(header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("GET /: %d\n%.3000s", code, page)
	}
	if code, _, _ := get(t, "POST", base+"/"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d, want 405", code)
	}
	code, body, _ := get(t, "GET", base+"/status.json")
	var doc fleetStatus
	if err := json.Unmarshal([]byte(body), &doc); code != http.StatusOK || err != nil || len(doc.Clusters) != 2 || doc.Summary == nil || doc.Summary.Clusters != 2 {
		t.Errorf("GET /status.json: %d %v\n%s", code, err, body)
	}
	code, hist, _ := get(t, "GET", base+"/clusters/eu-1")
	if code != http.StatusOK || strings.Count(hist, "<tr><td>") != 2 || !strings.Contains(hist, "its last 3 reports") ||
		!strings.Contains(hist, "Deployment/web: 1 of 3 available") || !regexp.MustCompile(`<td>2</td><td class="Ready">Ready</td>`).MatchString(hist) {
		t.Errorf("GET /clusters/eu-1: %d\n%s", code, hist)
	}
	// The same history as text.
	var stdout, stderr syncBuffer
	if code := run(t.Context(), []string{"status", "--repo", repo.Bare, "--cluster", "eu-1", "--history", "5"}, &stdout, &stderr); code != exitOK ||
		!regexp.MustCompile(`(?m)^REPORTED +REPORTS +PHASE`).MatchString(stdout.String()) || !regexp.MustCompile(`(?m) 2 +Ready +1111111 `).MatchString(stdout.String()) ||
		!strings.Contains(stdout.String(), "web Progressing: Deployment/web: 1 of 3 available") {
		t.Errorf("status --cluster eu-1 --history 5: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	if code, _, _ := get(t, "GET", base+"/clusters/nobody"); code != http.StatusNotFound {
		t.Errorf("GET /clusters/nobody: %d, want 404", code)
	}

	// A new cluster reports: the page has it after the next read.
	publish(report.Status{Cluster: fleet.Cluster{Name: "ap-1", Region: "ap-south-1"}, Phase: report.ClusterReady, Bundles: []report.BundleStatus{}}, time.Now())
	waitForPage(t, base+"/", `data-cluster="ap-1"`)

	// The repository goes away: the last page stays, with a warning.
	moved := repo.Bare + ".moved"
	if err := os.Rename(repo.Bare, moved); err != nil {
		t.Fatal(err)
	}
	page = waitForPage(t, base+"/", `class="warning"`)
	if !strings.Contains(page, `data-cluster="ap-1"`) || !strings.Contains(page, "failed") {
		t.Errorf("the page after a failed read:\n%.2000s", page)
	}
	if err := os.Rename(moved, repo.Bare); err != nil {
		t.Fatal(err)
	}

	// Beyond loopback, only with a token; with one, only for who has it.
	stderr = syncBuffer{}
	if code := run(t.Context(), []string{"status", "serve", "--repo", repo.Bare, "--listen", ":0"}, io.Discard, &stderr); code == exitOK ||
		!strings.Contains(stderr.String(), "--listen :0 is reachable from other hosts: give --token-file") {
		t.Errorf("serving beyond loopback without a token: exit %d\n%s", code, stderr.String())
	}
	token := "s3cret-status-token-0123456789"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base = "http://" + serveStatus(t, "--repo", repo.Bare, "--token-file", tokenFile)
	if code, body, _ := get(t, "GET", base+"/"); code != http.StatusUnauthorized || strings.Contains(body, "eu-1") {
		t.Errorf("GET / without the token: %d", code)
	}
	if code, _, _ := get(t, "GET", base+"/", "Authorization: Bearer wrong-token-wrong-token"); code != http.StatusUnauthorized {
		t.Errorf("GET / with a wrong token: %d", code)
	}
	if code, body, _ := get(t, "GET", base+"/", "Authorization: Bearer "+token); code != http.StatusOK || !strings.Contains(body, `data-cluster="eu-1"`) {
		t.Errorf("GET / with the token: %d", code)
	}
	code, _, header = get(t, "GET", base+"/?token="+token)
	cookie := header.Get("Set-Cookie")
	if code != http.StatusSeeOther || header.Get("Location") != "/" || !strings.Contains(cookie, "HttpOnly") || !strings.Contains(cookie, "SameSite=Strict") {
		t.Errorf("GET /?token=: %d, Location %q, Set-Cookie %q", code, header.Get("Location"), cookie)
	}
	if code, _, _ := get(t, "GET", base+"/clusters/eu-1", "Cookie: "+strings.Split(cookie, ";")[0]); code != http.StatusOK {
		t.Errorf("GET /clusters/eu-1 with the cookie: %d", code)
	}
}

// waitForPage reads url until it holds want, for a minute at most.
func waitForPage(t *testing.T, url, want string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		_, page, _ := get(t, "GET", url)
		if strings.Contains(page, want) {
			return page
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not show %q within a minute:\n%.2000s", url, want, page)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
