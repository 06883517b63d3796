package agent_test

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/kustomize"
	"github.com/flotilla-gitops/flotilla/sync/agent"
	"github.com/flotilla-gitops/flotilla/sync/apply"
)

// TestLeastPrivilegeDeployment installs deploy/ (least-privilege RBAC) on a
// real cluster and runs the agent as its ServiceAccount: a team bundle
// applied as the team's ServiceAccount succeeds, a bundle without one is
// forbidden — the RBAC the project ships does what its comments say.
func TestLeastPrivilegeDeployment(t *testing.T) {
	ctx := context.Background()

	// Install deploy/ as an administrator would (kubectl apply -k deploy/).
	out, err := kustomize.New(kustomize.Options{}).Render(ctx, &render.Request{
		Bundle: "install", Namespace: "flotilla-system", RepoDir: "../..",
		Source: render.Source{Kind: render.KindKustomize, Kustomize: &render.Kustomize{Path: "deploy"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The installation's own inventory is kept apart from the agent's
	// (flotilla-system), so that the agent does not see it as a bundle
	// that left its plan.
	adminOpts := apply.DefaultOptions()
	adminOpts.InventoryNamespace = "flotilla-install"
	admin, err := apply.New(cluster.Config, adminOpts)
	if err != nil {
		t.Fatal(err)
	}
	install := apply.Bundle{Name: "install", Namespace: "flotilla-system", Prune: true}
	for _, o := range out.Objects {
		install.Objects = append(install.Objects, o.Object)
	}
	install.Digest = "install"
	if res, err := admin.Sync(ctx, []apply.Bundle{install}); err != nil || res.Failed() {
		t.Fatalf("installing deploy/: %v %+v", err, res)
	}

	// A team namespace whose ServiceAccount may manage ConfigMaps there.
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: "team-a"}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: "team-a"}, Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"},
		}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "deployer", Namespace: "team-a"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "deployer"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "deployer", Namespace: "team-a"}}},
	} {
		if err := kube.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}

	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": `package fleet

bundles: team: {
	namespace: "team-a"
	serviceAccountName: "deployer"
	resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "team-config"}]
}
bundles: platform: resources: [{apiVersion: "v1", kind: "Namespace", metadata: name: "platform"}]
`})
	// The agent runs as its ServiceAccount, keeping its state where its
	// RBAC lets it: flotilla-system.
	cfg := rest.CopyConfig(cluster.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:flotilla-system:flotilla-agent"}
	a := newAgent(t, cfg, repo, "lab-1", map[string]string{"env": "lab"}, func(o *agent.Options) {
		o.Apply.InventoryNamespace = "flotilla-system"
		o.Identity.ConfigMapNamespace = "flotilla-system"
	})
	p := a.RunOnce(ctx)
	if p.Err != nil {
		t.Fatalf("pass: %v", p.Err)
	}
	if b := p.Result.Bundle("team"); b == nil || b.Phase != apply.PhaseReady {
		t.Errorf("team bundle: %+v", b)
	}
	if b := p.Result.Bundle("platform"); b == nil || b.Phase != apply.PhaseFailed || !strings.Contains(b.Message, "forbidden") {
		t.Errorf("platform bundle without a ServiceAccount: %+v", b)
	}
}
