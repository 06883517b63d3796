package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
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

// chromium is Debian's Chromium, which `make test` installs when missing.
const chromium = "/usr/bin/chromium"

// TestStatusHTMLInChromium renders `flotilla status -o html` for a fleet
// with a healthy and a failed cluster and loads the page in headless
// Chromium: the browser's DOM has a row per cluster and the error.
func TestStatusHTMLInChromium(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("%s is needed to check the status page: make chromium (make test does)", chromium)
	}
	repo := gittest.New(t)
	for _, st := range []*report.Status{
		{Cluster: fleet.Cluster{Name: "prod-eu-1", Region: "eu-west-1"}, Phase: "Ready",
			Bundles: []report.BundleStatus{{Name: "web", Phase: apply.PhaseReady}, {Name: "monitoring", Phase: apply.PhaseReady}}},
		{Cluster: fleet.Cluster{Name: "prod-us-1", Region: "us-east-1"}, Phase: "Failed",
			Bundles: []report.BundleStatus{{Name: "web", Phase: apply.PhaseFailed, Message: "fleet.cue:12:3: values.replicas: conflicting values 3 and 5"}}},
	} {
		r, err := report.New(report.Options{URL: repo.URL})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Publish(context.Background(), st, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	var page, stderr bytes.Buffer
	if code := run(t.Context(), []string{"status", "--repo", repo.Bare, "-o", "html"}, &page, &stderr); code != exitOK {
		t.Fatalf("status -o html: %s", stderr.String())
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "status.html")
	if err := os.WriteFile(file, page.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--dump-dom", "file://"+file)
	dom, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	for _, want := range []string{
		`data-cluster="prod-eu-1"`, `data-cluster="prod-us-1"`,
		`<td class="Failed">Failed</td>`, "conflicting values 3 and 5", `data-bundle="monitoring"`,
	} {
		if !strings.Contains(string(dom), want) {
			t.Errorf("the page Chromium loaded lacks %q", want)
		}
	}
	if n := strings.Count(string(dom), `<tr class="cluster"`); n != 2 {
		t.Errorf("%d cluster rows, want 2", n)
	}
}

// TestStatusShowsWaves: with a rollout, the fleet table has each
// cluster's wave, and a cluster's view says since when it is Ready.
func TestStatusShowsWaves(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	since := now.Add(-time.Hour)
	statuses := []report.Status{
		{Cluster: fleet.Cluster{Name: "canary-1"}, Wave: "canary", Phase: report.ClusterReady, ReadySince: &since, ReportedAt: now},
		{Cluster: fleet.Cluster{Name: "prod-1"}, Wave: "rest", Phase: report.ClusterProgressing, ReportedAt: now},
	}
	var b strings.Builder
	if err := writeFleetStatus(&b, statuses, "", time.Hour, now, false); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^CLUSTER +REGION +WAVE +PHASE`).MatchString(b.String()) || !regexp.MustCompile(`(?m)^canary-1 +- +canary +Ready`).MatchString(b.String()) {
		t.Errorf("fleet table:\n%s", b.String())
	}
	b.Reset()
	if err := writeClusterStatus(&b, statuses[0]); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "wave canary, Ready since 2026-11-27T11:00:00Z") {
		t.Errorf("cluster view:\n%s", b.String())
	}
}
