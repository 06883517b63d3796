package report_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/cuecontext"
	cueyaml "cuelang.org/go/encoding/yaml"
	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/schemas"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// TestStatusMatchesSchema checks that what a reporter writes is valid
// against #Status in schemas/status.cue, the documented contract.
func TestStatusMatchesSchema(t *testing.T) {
	ctx := cuecontext.New()
	var files []string
	for _, name := range []string{schemas.FleetFile, "status.cue"} {
		data, err := schemas.FS.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, string(data))
	}
	// One package in two files: compile them as one source.
	statusSchema := strings.Replace(files[1], "package fleet", "", 1)
	schema := ctx.CompileString(files[0] + "\n" + statusSchema)
	if err := schema.Err(); err != nil {
		t.Fatal(err)
	}
	// The file a reporter really writes.
	repo := gittest.New(t)
	r, err := report.New(report.Options{URL: repo.URL})
	if err != nil {
		t.Fatal(err)
	}
	st := status("prod-eu-1", "Waiting")
	now := time.Now()
	st.Bundles[0].LastTransitionTime = now
	// Every field a waiting cluster of a rollout writes.
	rev := strings.Repeat("ab", 20)
	st.AppliedRevision, st.SeenRevision, st.ReadySince, st.Wave = rev, rev, &now, "eu"
	st.Bundles[0].Revision, st.Bundles[0].ReadySince, st.Bundles[0].Waiting = rev, &now, "wave eu waits for an approval"
	st.Rollout = &report.RolloutStatus{Revision: rev, Waves: []string{"canary", "eu"}, State: report.RolloutWaiting,
		WaitingFor: []string{"canary-1"}, Until: &now, Message: "wave eu waits"}
	if _, err := r.Publish(context.Background(), st, time.Now()); err != nil {
		t.Fatal(err)
	}
	data := []byte(gittest.Git(t, repo.Bare, "show", report.Branch("", "prod-eu-1")+":"+report.Path("prod-eu-1")))
	file, err := cueyaml.Extract("status.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	v := schema.LookupPath(cue.ParsePath("#Status")).Unify(ctx.BuildFile(file))
	if err := v.Validate(cue.Concrete(true)); err != nil {
		t.Errorf("a status file does not match #Status: %v\n%s", err, data)
	}
	bad := schema.LookupPath(cue.ParsePath("#Status")).Unify(ctx.CompileString(`phase: "Happy"`))
	if bad.Validate() == nil {
		t.Error("#Status accepts an unknown phase")
	}
}
