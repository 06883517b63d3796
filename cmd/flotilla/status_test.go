package main

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// TestStatusInACheckout: inside a fleet checkout (in a subfolder too),
// `status` needs no --repo: it reads the checkout's status branches as
// last fetched, and its origin for what must be live (--cluster, --wait),
// saying which. Outside a checkout it asks for --repo.
func TestStatusInACheckout(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": "package fleet\n\nbundles: web: resources: []\n", "charts/README": "charts\n"})
	r, err := report.New(report.Options{URL: repo.URL})
	if err != nil {
		t.Fatal(err)
	}
	st := &report.Status{Cluster: fleet.Cluster{Name: "edge-1", Region: "eu-west-1"}, Phase: report.ClusterReady, Bundles: []report.BundleStatus{}}
	if _, err := r.Publish(t.Context(), st, time.Now()); err != nil {
		t.Fatal(err)
	}
	checkout := filepath.Join(t.TempDir(), "fleet")
	if out, err := exec.Command("git", "clone", "-q", repo.Bare, checkout).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	status := func(dir string, args ...string) (int, string, string) {
		t.Helper()
		t.Chdir(dir)
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), append([]string{"status"}, args...), &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	code, out, errOut := status(filepath.Join(checkout, "charts"))
	if code != exitOK || !strings.Contains(out, "edge-1") || !strings.Contains(errOut, "note: the status branches of this checkout, as last fetched") {
		t.Errorf("status in a checkout: exit %d\n%s%s", code, out, errOut)
	}
	// -o as in the kubectl family: text (table, its old name), wide, json,
	// yaml.
	for format, want := range map[string]string{"wide": "LABELS", "table": "CLUSTER", "yaml": "clusters:", "json": `"clusters": [`} {
		if code, out, errOut := status(checkout, "-o", format); code != exitOK || !strings.Contains(out, want) || !strings.Contains(out, "edge-1") {
			t.Errorf("status -o %s: exit %d\n%s%s", format, code, out, errOut)
		}
	}
	code, out, errOut = status(checkout, "--cluster", "edge-1")
	if code != exitOK || !strings.Contains(out, "cluster edge-1") || !strings.Contains(errOut, "reading the status branches of "+repo.Bare) {
		t.Errorf("status --cluster in a checkout: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut = status(t.TempDir()); code == exitOK || !strings.Contains(errOut, "--repo is required outside a fleet checkout") {
		t.Errorf("status outside a checkout: exit %d\n%s", code, errOut)
	}
}

// TestStatusShowsStatusFilesSafely: any agent's credential can write a
// status branch, so what a status file says is shown without its escape
// sequences and bounded: a terminal is not rewritten, a 20 MB message is
// not printed whole.
func TestStatusShowsStatusFilesSafely(t *testing.T) {
	repo := gittest.New(t)
	r, err := report.New(report.Options{URL: repo.URL})
	if err != nil {
		t.Fatal(err)
	}
	st := &report.Status{Cluster: fleet.Cluster{Name: "edge-1"}, Phase: report.ClusterFailed, Agent: "v1\x1b]0;pwned\x07",
		Message: "\x1b[2J\x1b[Hall clear " + strings.Repeat("x", 20<<20),
		Bundles: []report.BundleStatus{{Name: "web", Phase: "Failed", Message: "\x1b[31mred\x1b[0m"}}}
	if _, err := r.Publish(t.Context(), st, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"status", "--repo", repo.Bare}, {"status", "--repo", repo.Bare, "--cluster", "edge-1"}, {"status", "--repo", repo.Bare, "-o", "wide"}} {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), args, &stdout, &stderr)
		out := stdout.String() + stderr.String()
		if code != exitOK || !strings.Contains(out, "edge-1") {
			t.Errorf("%v: exit %d\n%.2000s", args, code, out)
		}
		if strings.ContainsRune(out, '\x1b') || strings.ContainsRune(out, '\x07') || len(out) > 64<<10 {
			t.Errorf("%v: %d bytes, escape sequences: %v", args, len(out), strings.ContainsRune(out, '\x1b'))
		}
	}
}
