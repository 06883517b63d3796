package agent_test

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/kustomize"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/agent"
	"github.com/flotilla-gitops/flotilla/sync/apply"
)

// install applies a kustomization of this repository as an administrator
// would (kubectl apply -k), with an inventory of its own so that the
// agent does not see it as a bundle that left its plan.
func install(t *testing.T, path string) {
	t.Helper()
	ctx := context.Background()
	out, err := kustomize.New(kustomize.Options{}).Render(ctx, &render.Request{
		Bundle: "install", Namespace: "flotilla-system", RepoDir: "../..",
		Source: spec.Source{Kind: spec.KindKustomize, Kustomize: &spec.Kustomize{Path: path}},
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := apply.DefaultOptions()
	opts.InventoryNamespace = "flotilla-install"
	opts.KeepUnlisted = true
	admin, err := apply.New(cluster.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	b := apply.Bundle{Name: strings.ReplaceAll(path, "/", "-"), Namespace: "flotilla-system", ApplyOptions: spec.ApplyOptions{Prune: true}, Digest: path}
	for _, o := range out.Objects {
		b.Objects = append(b.Objects, o.Object)
	}
	if res, err := admin.Sync(ctx, []apply.Bundle{b}); err != nil || res.Failed() {
		t.Fatalf("installing %s: %v %+v", path, err, res)
	}
}

// TestLeastPrivilegeTenancy installs deploy/ (least-privilege RBAC) and
// the example tenant of deploy/tenant/ on a real cluster, and runs the
// agent as its ServiceAccount on a fleet with a tenancy policy:
//
//   - the tenant's bundle applies as the tenant's marked account;
//   - a platform bundle with the agent's identity is forbidden, and one
//     naming an account nobody marked (a kube-system controller) cannot
//     impersonate it: RBAC is the last line, whatever the fleet says;
//   - a tenant's bundle naming the agent's account, or rendering into
//     another namespace, is refused by the policy before anything applies;
//   - when the tenant's bundle leaves the plan it is deleted as the
//     tenant's account (the agent's own identity could not delete it).
func TestLeastPrivilegeTenancy(t *testing.T) {
	ctx := context.Background()
	install(t, "deploy")
	install(t, "deploy/tenant")

	policy := `package fleet

tenancy: {
	platform: ["platform", "escalate"]
	tenants: close({"team-a": {
		bundles: ["team", "team-*"]
		namespaces: ["team-a"]
		serviceAccounts: ["deployer"]
		clusterKinds: []
		files: []
	}})
}
`
	bundles := map[string]string{
		"team.cue": `package fleet

bundles: team: {
	namespace: "team-a"
	serviceAccountName: "deployer"
	resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "team-config"}]
}
`,
		"platform.cue": `package fleet

bundles: platform: resources: [{apiVersion: "v1", kind: "Namespace", metadata: name: "platform"}]
bundles: escalate: {
	namespace: "kube-system"
	serviceAccountName: "clusterrole-aggregation-controller"
	resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "escalated"}]
}
`,
		"sneaky.cue": `package fleet

bundles: "team-as-agent": {
	namespace: "team-a"
	serviceAccountName: "flotilla-agent"
	resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "as-agent"}]
}
bundles: "team-cross": {
	namespace: "team-a"
	serviceAccountName: "deployer"
	resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: {name: "planted", namespace: "flotilla-system"}}]
}
`,
	}
	files := map[string]string{"fleet.cue": policy}
	for name, src := range bundles {
		files[name] = src
	}
	repo := gittest.New(t)
	repo.Commit(files)

	// The agent runs as its ServiceAccount, keeping its state where its
	// RBAC lets it: flotilla-system.
	cfg, err := cluster.ServiceAccountConfig("flotilla-system", "flotilla-agent")
	if err != nil {
		t.Fatal(err)
	}
	a := newAgent(t, cfg, repo, "lab-1", map[string]string{"env": "lab"}, func(o *agent.Options) {
		o.Apply.InventoryNamespace = "flotilla-system"
		o.Identity.ConfigMapNamespace = "flotilla-system"
	})
	p := a.RunOnce(ctx)
	if p.Err != nil {
		t.Fatalf("pass: %v", p.Err)
	}
	want := map[string]struct {
		phase apply.Phase
		says  string
	}{
		"team":          {apply.PhaseReady, ""},
		"platform":      {apply.PhaseFailed, "forbidden"},
		"escalate":      {apply.PhaseFailed, "cannot impersonate"},
		"team-as-agent": {apply.PhaseFailed, `ServiceAccount "flotilla-agent" is not one of tenant team-a's accounts [deployer]`},
		"team-cross":    {apply.PhaseFailed, "ConfigMap flotilla-system/planted (namespace flotilla-system is not the tenant's)"},
	}
	for name, w := range want {
		b := p.Result.Bundle(name)
		if b == nil || b.Phase != w.phase || !strings.Contains(b.Message+strings.Join(b.Errors, "; "), w.says) {
			t.Errorf("bundle %s: %+v; want %s saying %q", name, b, w.phase, w.says)
		}
	}
	for _, key := range []client.ObjectKey{{Namespace: "kube-system", Name: "escalated"}, {Namespace: "team-a", Name: "as-agent"}, {Namespace: "flotilla-system", Name: "planted"}} {
		if err := kube.Get(ctx, key, &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
			t.Errorf("%s exists (or cannot be read: %v)", key, err)
		}
	}
	// The tenant's bundle leaves: deleted as deployer.
	repo.Commit(map[string]string{"team.cue": "package fleet\n"})
	p = a.RunOnce(ctx)
	if p.Err != nil {
		t.Fatalf("pass: %v", p.Err)
	}
	if b := p.Result.Bundle("team"); b == nil || b.Phase != apply.PhasePruned {
		t.Fatalf("the deselected tenant bundle: %+v", b)
	}
	if err := kube.Get(ctx, client.ObjectKey{Namespace: "team-a", Name: "team-config"}, &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
		t.Errorf("the deselected tenant bundle's ConfigMap is still there (%v)", err)
	}
}
