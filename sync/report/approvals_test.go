package report_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// TestConcurrentApprovals: approvals pushed at the same moment are all
// kept (each push is a compare-and-swap on the tip it read, retried on the
// new tip), each in a commit of its own; a short revision is refused.
func TestConcurrentApprovals(t *testing.T) {
	repo := gittest.New(t)
	url := repo.ServeHTTP("approver", "pass")
	rev := strings.Repeat("5e", 20)
	waves := []string{"canary", "eu", "us", "ap"}
	var wg sync.WaitGroup
	errs := make([]error, len(waves))
	for i, w := range waves {
		wg.Go(func() {
			_, errs[i] = report.Approve(context.Background(), report.ApproveOptions{URL: url, Auth: basicAuth("approver", "pass"), Attempts: 20},
				report.Approval{Revision: rev, Wave: w, By: fmt.Sprintf("approver-%d <a%d@example.com>", i, i), At: time.Now()})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("approval of %s: %v", waves[i], err)
		}
	}
	approvals, err := report.ReadApprovals(context.Background(), url, "", basicAuth("approver", "pass"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range waves {
		if !report.Approved(approvals, w, rev, nil) {
			t.Errorf("the approval of %s was lost: %+v", w, approvals)
		}
	}
	if n := len(strings.Fields(gittest.Git(t, repo.Bare, "log", "--format=%H", report.DefaultApprovalsBranch))); n != len(waves) {
		t.Errorf("%d commits for %d approvals", n, len(waves))
	}
	if _, err := report.Approve(context.Background(), report.ApproveOptions{URL: url, Auth: basicAuth("approver", "pass")},
		report.Approval{Revision: "5e5e5e5", Wave: "eu", By: "x <x@example.com>", At: time.Now()}); err == nil || !strings.Contains(err.Error(), "full commit hash") {
		t.Errorf("a short revision: %v", err)
	}
}

// TestControlsActive: a hold names a cluster, a bundle on every cluster,
// or a bundle on one cluster; a pause or hold past its until is over.
func TestControlsActive(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	past, future := now.Add(-time.Minute), now.Add(time.Hour)
	c := report.Controls{
		Pause: &report.Control{By: "Ada", Until: &past},
		Holds: []report.Control{
			{Cluster: "eu-1", By: "Ada"},
			{Bundle: "payments", By: "Ada", Until: &future},
			{Cluster: "us-1", Bundle: "web", By: "Ada"},
			{Cluster: "us-2", By: "Ada", Until: &past},
		},
	}
	pause, holds := c.Active("us-1", now)
	if pause != nil || len(holds) != 2 || holds[0].Bundle != "payments" || holds[1].Bundle != "web" {
		t.Fatalf("us-1: pause %v, holds %+v", pause, holds)
	}
	if !holds[1].Holds("us-1", "web") || holds[1].Holds("us-1", "api") || !holds[0].Holds("us-1", "payments") {
		t.Errorf("which bundles the holds keep")
	}
	if _, holds := c.Active("us-2", now); len(holds) != 1 || holds[0].Bundle != "payments" {
		t.Errorf("us-2's expired hold is over: %+v", holds)
	}
	if got := c.InEffect(now); got.Pause != nil || len(got.Holds) != 3 {
		t.Errorf("in effect: %+v", got)
	}
	if got := (report.Control{Cluster: "us-1", Bundle: "web"}).Target(); got != "bundle web on cluster us-1" {
		t.Errorf("target %q", got)
	}
}
