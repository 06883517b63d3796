package companion_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/flotilla-gitops/flotilla/companion"
	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/sandbox"
)

// TestMain lets the test binary serve as the generator's sandbox workers.
func TestMain(m *testing.M) {
	sandbox.Main()
	os.Exit(m.Run())
}

// httpClient gives up on an answer after a while: a generator that holds a
// request while it plans would fail the request, not hang the test.
var httpClient = &http.Client{Timeout: 10 * time.Second}

// post sends the plugin generator's documented request, as Argo CD's
// ApplicationSet controller does, and decodes the answer.
func post(t *testing.T, url, token string, input map[string]any) (int, []map[string]any, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"applicationSetName": "fleet", "input": map[string]any{"parameters": input}})
	req, err := http.NewRequest(http.MethodPost, url+"/api/v1/getparams.execute", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw bytes.Buffer
	_, _ = raw.ReadFrom(resp.Body)
	var out struct {
		Output struct {
			Parameters []map[string]any `json:"parameters"`
		} `json:"output"`
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw.Bytes(), &out); err != nil {
			t.Fatalf("answer is not the plugin's JSON: %v\n%s", err, raw.String())
		}
	}
	return resp.StatusCode, out.Output.Parameters, raw.String()
}

// TestPluginGenerator speaks Argo CD's plugin generator protocol over
// HTTP: every cluster's bundles as parameters, narrowed by the input; a
// wrong or missing token refused; a bundle that stops evaluating keeps its
// last good parameters.
func TestPluginGenerator(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": fleetV1, "manifests/db/db.yaml": dbManifest})
	g, err := companion.NewGenerator(companion.GeneratorOptions{Dir: repo.Work, Token: "t0ken", Refresh: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	defer srv.Close()

	code, params, raw := post(t, srv.URL, "t0ken", nil)
	if code != http.StatusOK || len(params) != 8 {
		t.Fatalf("status %d, %d parameter sets (want 2 clusters × 4 bundles):\n%s", code, len(params), raw)
	}
	code, params, raw = post(t, srv.URL, "t0ken", map[string]any{"cluster": "eu-1", "bundle": []any{"web", "db"}})
	if code != http.StatusOK || len(params) != 2 {
		t.Fatalf("narrowed: status %d, %d sets:\n%s", code, len(params), raw)
	}
	web := params[0]
	if web["bundle"] != "web" {
		web = params[1]
	}
	if web["cluster"] != "eu-1" || web["namespace"] != "web" || web["hydratedPath"] != "clusters/eu-1/web" || web["wave"] != "eu" ||
		get(web, "source", "kind") != "resources" || get(web, "labels", "class") != "standard" {
		t.Errorf("web's parameters: %v", web)
	}
	code, params, _ = post(t, srv.URL, "t0ken", map[string]any{"wave": "rest"})
	if code != http.StatusOK || len(params) != 4 {
		t.Errorf("wave rest: status %d, %d sets, want us-1's 4", code, len(params))
	}

	for _, token := range []string{"", "wrong", "t0ken-and-more"} {
		code, _, raw := post(t, srv.URL, token, nil)
		if code != http.StatusUnauthorized || strings.Contains(raw, "t0ken") {
			t.Errorf("token %q: status %d, body %s", token, code, raw)
		}
	}
	resp, err := http.Get(srv.URL + "/api/v1/getparams.execute")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d", resp.StatusCode)
	}

	// web stops evaluating in every cluster: its last parameters stay.
	broken := strings.Replace(fleetV1, `namespace: "web"`, `namespace: 5`, 1)
	if err := os.WriteFile(filepath.Join(repo.Work, "fleet.cue"), []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := g.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	code, params, raw = post(t, srv.URL, "t0ken", map[string]any{"bundle": "web"})
	if code != http.StatusOK || len(params) != 2 || params[0]["namespace"] != "web" {
		t.Errorf("a bundle that stops evaluating must keep its parameters: status %d\n%s", code, raw)
	}
}

// runawayFleet's evaluation runs away: a comprehension of 2·10⁹ elements.
const runawayFleet = `package fleet

import "list"

clusters: c1: {}
bundles: web: {resources: [], values: n: len([for i in list.Range(0, 2000000000, 1) {i}])}
`

// TestGeneratorOutlivesARunawayFleet: the generator plans in a sandbox
// worker. A commit whose evaluation runs away holds up no request — each is
// answered at once with the last good parameters while the refresh runs —
// and the refresh fails at its bound (time or memory) in the worker, not
// in the server, which keeps serving.
func TestGeneratorOutlivesARunawayFleet(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": fleetV1, "manifests/db/db.yaml": dbManifest})
	pool, err := sandbox.New(sandbox.Options{PlanTimeout: 30 * time.Second, Memory: 512 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	g, err := companion.NewGenerator(companion.GeneratorOptions{Dir: repo.Work, Token: "t0ken", Refresh: time.Nanosecond, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	defer srv.Close()

	if err := os.WriteFile(filepath.Join(repo.Work, "fleet.cue"), []byte(runawayFleet), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		// Each request starts (or finds) a refresh of the runaway fleet;
		// none waits for it (client gives up after 10 s, the bound is 30).
		code, params, raw := post(t, srv.URL, "t0ken", nil)
		if code != 200 || len(params) != 8 {
			t.Fatalf("during a runaway refresh: status %d, %d parameter sets:\n%s", code, len(params), raw)
		}
	}
	err = g.Refresh(t.Context())
	if err == nil || !strings.Contains(err.Error(), "--eval-timeout") && !errors.Is(err, sandbox.ErrMemory) {
		t.Fatalf("the runaway refresh: %v", err)
	}
	if code, params, _ := post(t, srv.URL, "t0ken", nil); code != 200 || len(params) != 8 {
		t.Errorf("after the runaway refresh: status %d, %d parameter sets", code, len(params))
	}
}

// Behind a proxy, Argo CD's baseUrl carries a path: with PathPrefix the
// generator answers under it, and only there.
func TestGeneratorUnderAPathPrefix(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": fleetV1, "manifests/db/db.yaml": dbManifest})
	g, err := companion.NewGenerator(companion.GeneratorOptions{Dir: repo.Work, Token: "t0ken", PathPrefix: "flotilla/"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	defer srv.Close()
	if code, params, raw := post(t, srv.URL+"/flotilla", "t0ken", nil); code != http.StatusOK || len(params) != 8 {
		t.Errorf("under the prefix: status %d, %d sets\n%s", code, len(params), raw)
	}
	if code, _, _ := post(t, srv.URL, "t0ken", nil); code != http.StatusNotFound {
		t.Errorf("without the prefix: status %d, want 404", code)
	}
	resp, err := http.Get(srv.URL + "/flotilla/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/flotilla/healthz: %d", resp.StatusCode)
	}
}

// The metrics to alert on: parameter sets served from an earlier planning
// because their bundle stopped evaluating, and a fleet that stops
// planning at all while the last good parameters are served.
func TestGeneratorMetricsSayWhatIsStale(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": fleetV1, "manifests/db/db.yaml": dbManifest})
	g, err := companion.NewGenerator(companion.GeneratorOptions{Dir: repo.Work, Token: "t0ken", Refresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	defer srv.Close()
	metric := func(name string) string {
		t.Helper()
		resp, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				return v
			}
		}
		return "absent"
	}
	if err := g.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if metric("flotilla_generator_parameter_sets") != "8" || metric("flotilla_generator_stale_parameter_sets") != "0" || metric("flotilla_generator_refresh_failing") != "0" {
		t.Errorf("healthy: sets %s, stale %s, failing %s", metric("flotilla_generator_parameter_sets"),
			metric("flotilla_generator_stale_parameter_sets"), metric("flotilla_generator_refresh_failing"))
	}
	write := func(src string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(repo.Work, "fleet.cue"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(strings.Replace(fleetV1, `namespace: "web"`, `namespace: 5`, 1))
	if err := g.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := metric("flotilla_generator_stale_parameter_sets"); got != "2" {
		t.Errorf("web stopped evaluating in 2 clusters: stale %s", got)
	}
	write("package fleet\n\nbundles: {")
	if err := g.Refresh(t.Context()); err == nil {
		t.Fatal("a fleet that does not parse planned")
	}
	if got := metric("flotilla_generator_refresh_failing"); got != "1" {
		t.Errorf("failing %s", got)
	}
}

// TestGeneratorIsGatedByTheRollout: the plugin generator takes the gate
// hydration takes. After a change, the canary's parameters are the new
// commit's (revision, and its bundles: old is gone), the later waves keep
// the parameters of the commit their status branches say they applied —
// planned at that commit — until the canary is Ready and baked and the
// wave approved.
func TestGeneratorIsGatedByTheRollout(t *testing.T) {
	repo := gittest.New(t)
	v1 := repo.Commit(map[string]string{"fleet.cue": strings.Replace(gatedFleet, "%s", "1", 1) + oldBundle})
	start := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for _, c := range []string{"canary-1", "eu-1", "us-1"} {
		publishStatus(t, repo, c, v1, v1, report.ClusterReady, start)
	}
	v2 := repo.Commit(map[string]string{"fleet.cue": strings.Replace(gatedFleet, "%s", "2", 1)})
	now := start.Add(time.Minute)
	g, err := companion.NewGenerator(companion.GeneratorOptions{Dir: repo.Work, Token: "t0ken", Refresh: time.Nanosecond,
		Status: report.Branches{URL: repo.URL}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	defer srv.Close()
	// cluster → its bundles' revisions ("web@<rev>")
	served := func() map[string][]string {
		t.Helper()
		if err := g.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
		code, params, raw := post(t, srv.URL, "t0ken", nil)
		if code != http.StatusOK {
			t.Fatalf("status %d: %s", code, raw)
		}
		out := map[string][]string{}
		for _, p := range params {
			c, _ := p["cluster"].(string)
			out[c] = append(out[c], fmt.Sprintf("%s@%s", p["bundle"], p["revision"]))
		}
		for _, v := range out {
			slices.Sort(v)
		}
		return out
	}
	want := func(got map[string][]string, cluster string, bundles ...string) {
		t.Helper()
		slices.Sort(bundles)
		if !slices.Equal(got[cluster], bundles) {
			t.Errorf("%s: served %v, want %v", cluster, got[cluster], bundles)
		}
	}
	got := served()
	want(got, "canary-1", "web@"+v2)
	want(got, "eu-1", "old@"+v1, "web@"+v1)
	want(got, "us-1", "old@"+v1, "web@"+v1)

	// The canary Ready at v2 and baked, eu approved: eu-1 takes v2, us-1
	// waits for eu-1.
	publishStatus(t, repo, "canary-1", v2, v2, report.ClusterReady, start.Add(2*time.Minute))
	if _, err := report.Approve(t.Context(), report.ApproveOptions{URL: repo.URL, Author: object.Signature{Name: "Ops", Email: "ops@example.com", When: time.Now()}},
		report.Approval{Revision: v2, Wave: "eu", By: "Ops <ops@example.com>", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	now = start.Add(15 * time.Minute)
	got = served()
	want(got, "eu-1", "web@"+v2)
	want(got, "us-1", "old@"+v1, "web@"+v1)
}
