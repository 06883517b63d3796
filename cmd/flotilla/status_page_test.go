package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// syntheticFleet is n clusters' statuses with bundles bundles each, as a
// fleet in the middle of a rollout reports them: four regions, three waves,
// the tip Ready on most clusters, one error on every 40th cluster's bundle
// b007 (the same message, naming the cluster), every 97th cluster silent
// for an hour, the last wave waiting for the earlier ones.
func syntheticFleet(n, bundles int, now time.Time, tip, old string) []report.Status {
	regions := []string{"eu-west-1", "eu-central-1", "us-east-1", "ap-south-1"}
	waves := []string{"canary", "early", "rest"}
	var out []report.Status
	for i := range n {
		name := fmt.Sprintf("prod-%s-%04d", regions[i%len(regions)], i)
		wave := waves[min(2, i*10/n)]
		if i < n/50 {
			wave = "canary"
		}
		st := report.Status{APIVersion: report.APIVersion, Kind: report.Kind, Agent: "v0.9.0",
			Cluster:         fleet.Cluster{Name: name, Region: regions[i%len(regions)], Labels: map[string]string{"tier": "prod", "team": fmt.Sprintf("team-%d", i%7)}},
			AppliedRevision: tip, SeenRevision: tip, Phase: report.ClusterReady, Wave: wave, ReportedAt: now.Add(-time.Duration(i%50) * time.Second),
			Rollout: &report.RolloutStatus{Revision: tip, Waves: waves, State: report.RolloutApplied}}
		ready := now.Add(-10 * time.Minute)
		st.ReadySince = &ready
		for b := range bundles {
			bs := report.BundleStatus{Name: fmt.Sprintf("b%03d", b), Phase: apply.PhaseReady, Revision: tip,
				Counts: apply.Counts{Unchanged: 12}, LastTransitionTime: ready}
			if b%9 == 0 {
				bs.Counts.Configured = 2
			}
			st.Bundles = append(st.Bundles, bs)
		}
		switch {
		case wave == "rest":
			st.AppliedRevision, st.Phase, st.ReadySince = old, report.ClusterWaiting, nil
			st.Rollout.State, st.Rollout.Message = report.RolloutWaiting, "waiting for the earlier waves"
			st.Rollout.WaitingFor = []string{"prod-eu-west-1-0004"}
		case i%40 == 3:
			st.Phase, st.ReadySince = report.ClusterFailed, nil
			st.Bundles[7].Phase = apply.PhaseFailed
			st.Bundles[7].Message = "fleet.cue:41:12: bundles.b007.values.replicas: conflicting values 3 and 5 (cluster " + name + ")"
		case i%25 == 5:
			st.Phase, st.ReadySince = report.ClusterProgressing, nil
			st.Bundles[1].Phase, st.Bundles[1].Message = apply.PhaseProgressing, "Deployment/web: 1 of 3 replicas available"
		}
		if i%97 == 11 {
			st.ReportedAt = now.Add(-time.Hour)
		}
		out = append(out, st)
	}
	return out
}

// TestStatusPageInChromium builds the status page of 1,000 clusters × 50
// bundles, checks it is under 2 MB, and uses it in headless Chromium at
// 1,400 px wide as a person would: the counts and the grouped problem are
// at the top, nothing scrolls sideways; typing in the search box, clicking
// the Failed count, picking a wave and a bundle leave exactly the rows
// they should; a cluster's link opens its detail view with its 50 bundles.
// Screenshots go to FLOTILLA_SCREENSHOTS when set (docs/images).
func TestStatusPageInChromium(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("%s is needed to check the status page: make chromium (make test does)", chromium)
	}
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	tip, old := strings.Repeat("a1", 20), strings.Repeat("b2", 20)
	all := syntheticFleet(1000, 50, now, tip, old)
	// Any agent can write its status branch: what it says is text on the
	// page, never markup or script, in the table and in the detail view.
	hostile := `</script><script>window.pwned=1</script><img src=x onerror="window.pwned=2">`
	all[1].Message, all[1].Phase = hostile, report.ClusterFailed
	all[1].Bundles[2].Phase, all[1].Bundles[2].Message = apply.PhaseFailed, hostile
	all[1].Cluster.Labels["x"] = `"><img src=x onerror="window.pwned=3">`
	hostileName := all[1].Cluster.Name
	opts := report.ViewOptions{Now: now, Stale: 30 * time.Minute, Tip: tip, TipTime: now.Add(-25 * time.Minute)}
	// The pause, a hold and a broken invariant come from the approvals
	// branch and the fleet: text too, at the top.
	opts.Controls = &report.Controls{Pause: &report.Control{By: "Ada <ada@example.com>", At: now, Reason: "INC-7 " + hostile},
		Holds: []report.Control{{Cluster: "eu-west-1-0001", By: "Ada <ada@example.com>", At: now, Reason: "migration"}}}
	opts.Invariants = []string{"fleet.cue:9:3: invariant two-regions breaks for bundle b001: 1 cluster in 1 region " + hostile}
	report.SortForView(all, now, opts.Stale)
	view := report.NewFleetView(all, opts)
	var page bytes.Buffer
	if err := writeStatusHTML(&page, statusPageOf(all, view, opts)); err != nil {
		t.Fatal(err)
	}
	t.Logf("the page of 1,000 clusters × 50 bundles: %d bytes", page.Len())
	if page.Len() >= 2<<20 {
		t.Errorf("the page of 1,000 clusters × 50 bundles is %d bytes: want under 2 MB", page.Len())
	}
	file := filepath.Join(t.TempDir(), "status.html")
	if err := os.WriteFile(file, page.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	want := func(keep func(report.Status) bool) int {
		n := 0
		for _, st := range all {
			if keep(st) {
				n++
			}
		}
		return n
	}
	failed := want(func(st report.Status) bool { return report.StandingOf(st, now, opts.Stale) == report.StandingFailed })
	// Every failed cluster but the hostile one has the same error.
	if failed < 2 || len(view.Problems) == 0 || view.Problems[0].Standing != report.StandingFailed || len(view.Problems[0].Clusters) != failed-1 {
		t.Fatalf("the synthetic fleet's first problem should be its %d failed clusters' one error: %+v", failed-1, view.Problems[:1])
	}

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	ctx, cancel = chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.WindowSize(1400, 900), chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true))...)
	defer cancel()
	ctx, cancel = chromedp.NewContext(ctx)
	defer cancel()
	shots := map[string][]byte{}
	do := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("chromium: %v", err)
		}
	}
	visible := func() []string {
		t.Helper()
		return inChromium[[]string](t, ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#clusters tr.cluster")).filter(r => !r.hidden).map(r => r.dataset.cluster + " " + r.dataset.phase + " " + r.dataset.wave)`))
	}
	pick := func(id, value string) {
		t.Helper()
		inChromium[any](t, ctx, chromedp.Evaluate[any](`(() => { const s = document.getElementById("`+id+`"); s.value = "`+value+`"; s.dispatchEvent(new Event("change")); })()`))
	}
	clear := func() { t.Helper(); do(chromedp.Click(chromedp.ID("f-clear"))) }

	do(chromedp.Navigate("file://"+file), chromedp.WaitVisible(chromedp.ID("clusters")))
	if wide := inChromium[int](t, ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); wide > 1400 {
		t.Errorf("the page is %d px wide in a 1,400 px window: it scrolls sideways", wide)
	}
	controls := inChromium[string](t, ctx, chromedp.Text(chromedp.ID("controls")))
	if !strings.Contains(controls, "Rollout paused by Ada <ada@example.com>") || !strings.Contains(controls, "INC-7 "+hostile) ||
		!strings.Contains(controls, "Held: cluster eu-west-1-0001 by Ada <ada@example.com>") {
		t.Errorf("the controls at the top of the page: %q", controls)
	}
	if inv := inChromium[string](t, ctx, chromedp.Text(chromedp.ID("invariants"))); !strings.Contains(inv, "Invariant broken: fleet.cue:9:3: invariant two-regions") || !strings.Contains(inv, hostile) {
		t.Errorf("the broken invariant at the top of the page: %q", inv)
	}
	firstProblem := inChromium[string](t, ctx, chromedp.Text(chromedp.CSS("#problems .problem")))
	if !strings.Contains(inChromium[string](t, ctx, chromedp.Text(chromedp.ID("problems"))), hostile) {
		t.Errorf("the hostile message should show as text among the problems")
	}
	if !strings.Contains(firstProblem, fmt.Sprintf("Failed on %d clusters", failed-1)) || !strings.Contains(firstProblem, "conflicting values 3 and 5 (cluster <cluster>)") {
		t.Errorf("the first problem on the page: %q", firstProblem)
	}
	shots["status-page.png"] = inChromium[[]byte](t, ctx, chromedp.CaptureScreenshot())
	if rows := visible(); len(rows) != 1000 {
		t.Errorf("%d rows shown before filtering, want 1000", len(rows))
	}

	do(chromedp.SendKeys(chromedp.ID("search"), "eu-west-1-00"))
	searched := want(func(st report.Status) bool { return strings.Contains(st.Cluster.Name, "eu-west-1-00") })
	rows := visible()
	if shown := inChromium[string](t, ctx, chromedp.Text(chromedp.ID("shown"))); len(rows) != searched || shown != fmt.Sprintf("%d of 1000 clusters", searched) {
		t.Errorf("searching eu-west-1-00: %d rows (%q), want %d", len(rows), shown, searched)
	}
	for _, r := range rows {
		if !strings.Contains(r, "eu-west-1-00") {
			t.Errorf("searching eu-west-1-00 left %q", r)
		}
	}
	clear()

	do(chromedp.Click(chromedp.CSS(`#counts button[data-phase="Failed"]`)))
	rows = visible()
	if len(rows) != failed {
		t.Errorf("the Failed filter: %d rows, want %d", len(rows), failed)
	}
	for _, r := range rows {
		if !strings.Contains(r, " Failed ") {
			t.Errorf("the Failed filter left %q", r)
		}
	}
	shots["status-page-failed.png"] = inChromium[[]byte](t, ctx, chromedp.CaptureScreenshot())
	clear()

	pick("f-wave", "canary")
	if canary := want(func(st report.Status) bool { return st.Wave == "canary" }); len(visible()) != canary {
		t.Errorf("the canary wave: %d rows, want %d", len(visible()), canary)
	}
	clear()
	pick("f-bundle", "b049")
	if n := len(visible()); n != 1000 {
		t.Errorf("bundle b049 (every cluster has it): %d rows, want 1000", n)
	}
	pick("f-bundle", "b999")
	if n := len(visible()); n != 1000 {
		t.Errorf("an unknown bundle leaves the filter off: %d rows, want 1000", n)
	}
	clear()

	// A cluster's detail view, from its link in the problem.
	name := view.Problems[0].Clusters[0]
	do(chromedp.Click(chromedp.CSS(`#problems details summary`)), chromedp.Click(chromedp.CSS(`#problems a[href="#cluster=`+name+`"]`)),
		chromedp.WaitVisible(chromedp.ID("detail")))
	detailRows := inChromium[int](t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#detail tbody tr").length`))
	detailText := inChromium[string](t, ctx, chromedp.Text(chromedp.ID("detail")))
	if detailRows != 50 || !strings.Contains(detailText, "Cluster "+name) || !strings.Contains(detailText, "conflicting values 3 and 5 (cluster "+name+")") {
		t.Errorf("the detail view of %s: %d bundle rows, text:\n%s", name, detailRows, detailText)
	}
	shots["status-page-cluster.png"] = inChromium[[]byte](t, ctx, chromedp.CaptureScreenshot())
	inChromium[any](t, ctx, chromedp.Evaluate[any](`location.hash = "#cluster=`+hostileName+`"`))
	do(chromedp.WaitVisible(chromedp.ID("detail")))
	if text := inChromium[string](t, ctx, chromedp.Text(chromedp.ID("detail"))); !strings.Contains(text, hostile) {
		t.Errorf("the hostile cluster's detail view should show its messages as text:\n%s", text)
	}
	if pwned := inChromium[string](t, ctx, chromedp.Evaluate[string](`typeof window.pwned + " " + document.images.length`)); pwned != "undefined 0" {
		t.Errorf("a status file's text ran as script or made an element: %s", pwned)
	}
	if dir := os.Getenv("FLOTILLA_SCREENSHOTS"); dir != "" {
		for f, png := range shots {
			if err := os.WriteFile(filepath.Join(dir, f), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// inChromium runs one action in the browser and returns its value.
func inChromium[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	return v
}
