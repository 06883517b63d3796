package main

import (
	"bytes"
	"fmt"
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
	for _, args := range [][]string{{"status", "--repo", repo.Bare}, {"status", "--repo", repo.Bare, "--cluster", "edge-1"}, {"status", "--repo", repo.Bare, "-o", "wide"}, {"status", "--repo", repo.Bare, "-o", "html"}} {
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

// TestStatusSummaryAndFilters: the text status starts with the counts, the
// tip's progress and each distinct problem once; --phase, --region,
// --bundle and --selector narrow the clusters (and the counts with them);
// an unknown phase is an error that lists the phases.
func TestStatusSummaryAndFilters(t *testing.T) {
	repo := gittest.New(t)
	tip := repo.Commit(map[string]string{"fleet.cue": "package fleet\n"})
	r, err := report.New(report.Options{URL: repo.URL})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []*report.Status{
		{Cluster: fleet.Cluster{Name: "eu-1", Region: "eu-west-1", Labels: map[string]string{"tier": "prod"}}, Phase: report.ClusterReady, AppliedRevision: tip,
			Bundles: []report.BundleStatus{{Name: "web", Phase: "Ready"}}},
		{Cluster: fleet.Cluster{Name: "eu-2", Region: "eu-west-1"}, Phase: report.ClusterFailed,
			Bundles: []report.BundleStatus{{Name: "web", Phase: "Failed", Message: "fleet.cue:3:1: eu-2: replicas: conflicting values"}}},
		{Cluster: fleet.Cluster{Name: "us-1", Region: "us-east-1"}, Phase: report.ClusterFailed,
			Bundles: []report.BundleStatus{{Name: "web", Phase: "Failed", Message: "fleet.cue:3:1: us-1: replicas: conflicting values"}, {Name: "db", Phase: "Ready"}}},
	} {
		if _, err := r.Publish(t.Context(), st, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	status := func(args ...string) (int, string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), append([]string{"status", "--repo", repo.Bare}, args...), &stdout, &stderr)
		return code, stdout.String() + stderr.String()
	}
	code, out := status()
	for _, want := range []string{
		"3 clusters: 2 Failed, 1 Ready\n",
		"fleet tip " + tip[:7] + ": Ready on 1 of 3 clusters, committed ",
		"1 distinct problem:\n  Failed on 2 clusters, bundle web: fleet.cue:3:1: <cluster>: replicas: conflicting values\n    eu-2, us-1\n",
	} {
		if code != exitOK || !strings.Contains(out, want) {
			t.Errorf("status: exit %d, want %q in\n%s", code, want, out)
		}
	}
	if i, j := strings.Index(out, "\neu-2 "), strings.Index(out, "\neu-1 "); i < 0 || j < 0 || i > j {
		t.Errorf("the failed cluster should come before the ready one:\n%s", out)
	}
	for args, want := range map[string][]string{
		"--phase failed":                          {"eu-2", "us-1"},
		"--region eu-west-1":                      {"eu-2", "eu-1"},
		"--bundle db":                             {"us-1"},
		"--selector tier=prod":                    {"eu-1"},
		"--phase Failed,Ready --region us-east-1": {"us-1"},
	} {
		code, out := status(strings.Fields(args)...)
		var rows []string
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 1 && (f[1] == "eu-west-1" || f[1] == "us-east-1") {
				rows = append(rows, f[0])
			}
		}
		if code != exitOK || strings.Join(rows, " ") != strings.Join(want, " ") || !strings.Contains(out, fmt.Sprintf("%d of 3 clusters (filtered)", len(want))) {
			t.Errorf("status %s: exit %d, rows %v, want %v\n%s", args, code, rows, want, out)
		}
	}
	if code, out := status("--phase", "broken"); code == exitOK || !strings.Contains(out, `--phase "broken": a cluster's phase is one of Failed, RolledBack, Stale, Progressing, Waiting, Ready`) {
		t.Errorf("status --phase broken: exit %d\n%s", code, out)
	}
}
