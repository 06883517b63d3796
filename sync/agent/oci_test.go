package agent_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-git/go-git/v5"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/internal/registrytest"
	"github.com/flotilla-gitops/flotilla/sync/agent"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// TestAgentFollowsAnOCIFleet: on the package's control plane, an agent
// follows a fleet published to a registry with authentication: it applies
// the published commit and reports that commit to its Git status
// repository; an idle pass asks the registry one HEAD request; a newer
// publish is applied at the next pass.
func TestAgentFollowsAnOCIFleet(t *testing.T) {
	repo := gittest.New(t)
	c1 := repo.Commit(map[string]string{"fleet.cue": fleetV1})
	reg := registrytest.Start(t, true)
	pw := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(pw, []byte(reg.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	creds := source.Auth{Username: reg.Username, PasswordFile: pw}
	ref := "oci://" + reg.Host + "/platform/fleet:main"
	publish := func() {
		t.Helper()
		g, err := git.PlainOpen(repo.Work)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := source.Publish(context.Background(), source.PublishOptions{Repo: g, To: ref, Auth: creds}); err != nil {
			t.Fatal(err)
		}
	}
	publish()
	statusRepo := gittest.New(t)
	a := newAgent(t, cluster.Config, repo, "prod-1", map[string]string{"env": "prod"}, func(o *agent.Options) {
		o.Source = source.Options{URL: ref, Auth: creds, CacheDir: t.TempDir()}
		o.Status = &report.Options{URL: statusRepo.URL}
	})
	ctx := context.Background()
	if p := a.RunOnce(ctx); p.Failed() || p.Revision != c1 {
		t.Fatalf("first pass: %v at %s, want %s", p.Err, p.Revision, c1)
	}
	if _, ok := a.configMapData(t, "prod-only"); !ok {
		t.Fatal("the published fleet was not applied")
	}
	st, err := report.ReadCluster(ctx, statusRepo.URL, "", "prod-1", nil)
	if err != nil || st.AppliedRevision != c1 {
		t.Fatalf("status: %+v %v", st, err)
	}
	before := reg.Requests.Load()
	if p := a.RunOnce(ctx); p.Failed() || p.Changed {
		t.Fatalf("idle pass: %v changed %v", p.Err, p.Changed)
	}
	if n := reg.Requests.Load() - before; n != 1 {
		t.Errorf("an idle pass asked the registry %d times, want 1", n)
	}

	c2 := repo.Commit(map[string]string{"fleet.cue": fleetV1 + "\nbundles: two: resources: [{apiVersion: \"v1\", kind: \"ConfigMap\", metadata: name: \"two\"}]\n"})
	publish()
	if p := a.RunOnce(ctx); p.Failed() || p.Revision != c2 {
		t.Fatalf("after a publish: %v at %s", p.Err, p.Revision)
	}
	if _, ok := a.configMapData(t, "two"); !ok {
		t.Error("the newer publish was not applied")
	}

	// An agent that requires signed commits refuses the unsigned one it
	// is given from the registry, and applies nothing.
	_, key := gittest.NewSSHKey(t)
	strict := newAgent(t, cluster.Config, repo, "prod-2", map[string]string{"env": "prod"}, func(o *agent.Options) {
		o.Source = source.Options{URL: ref, Auth: creds, CacheDir: t.TempDir()}
		o.TrustedKeys = []string{key}
	})
	if p := strict.RunOnce(ctx); !p.Failed() || !errors.Is(p.Err, source.ErrUnsigned) {
		t.Fatalf("an unsigned commit from the registry: %v", p.Err)
	}
	if _, ok := strict.configMapData(t, "common"); ok {
		t.Error("an unsigned commit was applied")
	}
}
