package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/internal/testenv"
)

// bootstrapPlane is a control plane of its own: bootstrap installs into
// flotilla-system, which the package's shared plane's tests use.
func bootstrapPlane(t *testing.T) (*testenv.Cluster, client.Client) {
	t.Helper()
	return ownPlane(t, "bootstrap")
}

// ownPlane starts a control plane for one test, stopped at its end.
func ownPlane(t *testing.T, name string) (*testenv.Cluster, client.Client) {
	t.Helper()
	c, err := testenv.Start(context.Background(), testenv.Options{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	kube, err := client.New(c.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c, kube
}

func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), args, &stdout, &stderr); code != exitOK {
		t.Fatalf("flotilla %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func runFails(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), args, &stdout, &stderr); code == exitOK {
		t.Fatalf("flotilla %s succeeded:\n%s", strings.Join(args, " "), stdout.String())
	}
	return stdout.String() + stderr.String()
}

// `flotilla bootstrap` installs the agent with server-side apply; run
// again it changes nothing; with other flags, only what they change
// (cluster-admin replaces the least-privilege RBAC, and a re-run without a
// credential keeps the installed one); a credential file that is not one
// fails before anything is applied, without printing it; uninstall removes
// the agent and its RBAC and keeps what it applied.
func TestBootstrapInstallsIdempotentlyAndUninstalls(t *testing.T) {
	c, kube := bootstrapPlane(t)
	ctx := t.Context()
	dir := t.TempDir()
	pw := filepath.Join(dir, "token")
	if err := os.WriteFile(pw, []byte("s3cret-git-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"bootstrap", "--kubeconfig", c.Kubeconfig, "--repo", "https://git.example.com/fleet.git",
		"--cluster", "prod-eu-3", "--region", "eu-west-3", "--label", "env=prod", "--label", "class=regulated",
		"--git-password-file", pw, "--image", "registry.example.com/flotilla:v9.9.9", "--wait=false"}

	out := runOK(t, args...)
	if !said(out, "Deployment/flotilla-system/flotilla-agent", "created") ||
		!strings.Contains(out, "flotilla status --repo https://git.example.com/fleet.git --cluster prod-eu-3") {
		t.Errorf("first run:\n%s", out)
	}
	if strings.Contains(out, "s3cret-git-token") {
		t.Error("the password was printed")
	}
	var secret corev1.Secret
	if err := kube.Get(ctx, client.ObjectKey{Namespace: "flotilla-system", Name: "flotilla-git"}, &secret); err != nil {
		t.Fatal(err)
	}
	if string(secret.Data["password"]) != "s3cret-git-token" {
		t.Errorf("the Secret holds %q", secret.Data["password"])
	}
	var id corev1.ConfigMap
	if err := kube.Get(ctx, client.ObjectKey{Namespace: "flotilla-system", Name: "flotilla-identity"}, &id); err != nil {
		t.Fatal(err)
	}
	if id.Data["name"] != "prod-eu-3" || id.Data["region"] != "eu-west-3" || id.Data["label.class"] != "regulated" || len(id.Data) != 4 {
		t.Errorf("identity: %v", id.Data)
	}
	dep := getDeployment(t, kube)
	if img := dep.Spec.Template.Spec.Containers[0].Image; img != "registry.example.com/flotilla:v9.9.9" {
		t.Errorf("image %s", img)
	}

	again := changeLines.FindAllStringSubmatch(runOK(t, args...), -1)
	if len(again) < 10 {
		t.Errorf("a second run listed %d objects", len(again))
	}
	for _, m := range again {
		if m[2] != "unchanged" {
			t.Errorf("a second identical run changed something: %s", m[0])
		}
	}

	// Other flags: cluster-admin, and no credential flag.
	changed := runOK(t, "bootstrap", "--kubeconfig", c.Kubeconfig, "--repo", "https://git.example.com/fleet.git",
		"--cluster", "prod-eu-3", "--region", "eu-west-3", "--label", "env=prod", "--label", "class=regulated",
		"--image", "registry.example.com/flotilla:v9.9.9", "--wait=false", "--rbac", "cluster-admin")
	if !said(changed, "ClusterRoleBinding/flotilla-agent-cluster-admin", "created") ||
		!said(changed, "ClusterRole/flotilla-agent", "deleted") ||
		!said(changed, "Deployment/flotilla-system/flotilla-agent", "unchanged") {
		t.Errorf("switching to cluster-admin:\n%s", changed)
	}
	if err := kube.Get(ctx, client.ObjectKey{Name: "flotilla-agent"}, &rbacv1.ClusterRole{}); !apierrors.IsNotFound(err) {
		t.Errorf("the least-privilege ClusterRole is still there: %v", err)
	}

	// A key that is not one: refused before anything is applied, and its
	// content never shown.
	bad := filepath.Join(dir, "id")
	known := filepath.Join(dir, "known_hosts")
	_ = os.WriteFile(bad, []byte("NOT-A-KEY-BUT-A-SECRET"), 0o600)
	_ = os.WriteFile(known, []byte("git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"), 0o600)
	msg := runFails(t, "bootstrap", "--kubeconfig", c.Kubeconfig, "--repo", "ssh://git@git.example.com/fleet.git",
		"--cluster", "prod-eu-3", "--git-ssh-key-file", bad, "--git-known-hosts-file", known, "--wait=false")
	if !strings.Contains(msg, "--git-ssh-key-file "+bad+": not an SSH private key") || strings.Contains(msg, "NOT-A-KEY") {
		t.Errorf("a bad key file: %s", msg)
	}
	if d := getDeployment(t, kube); !strings.Contains(strings.Join(d.Spec.Template.Spec.Containers[0].Args, " "), "--repo=https://git.example.com/fleet.git") {
		t.Error("the refused run changed the Deployment")
	}

	// --wait says why the agent is not available: this control plane has
	// no controllers, so no pod is ever made.
	msg = runFails(t, append(args, "--wait", "--timeout", "3s")...)
	if !strings.Contains(msg, "is not available after 3s") || !strings.Contains(msg, "no pod of the agent exists") {
		t.Errorf("waiting on a cluster without controllers: %s", msg)
	}

	// Uninstall keeps the workloads, the namespace and the inventories.
	workload := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "applied-by-the-agent", Namespace: "default"}}
	inventory := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "flotilla-inventory-web", Namespace: "flotilla-system"}}
	mark := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "flotilla-impersonate", Namespace: "default"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "flotilla-impersonate"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "flotilla-agent", Namespace: "flotilla-system"}},
	}
	for _, o := range []client.Object{workload, inventory, mark} {
		if err := kube.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	gone := runOK(t, "uninstall", "--kubeconfig", c.Kubeconfig)
	for _, want := range []string{"Deployment/flotilla-system/flotilla-agent", "Secret/flotilla-system/flotilla-git",
		"ClusterRoleBinding/flotilla-agent", "RoleBinding/default/flotilla-impersonate"} {
		if !said(gone, want, "deleted") {
			t.Errorf("uninstall did not delete %s:\n%s", want, gone)
		}
	}
	if !strings.Contains(gone, "are kept") {
		t.Errorf("uninstall did not say what it keeps:\n%s", gone)
	}
	for _, o := range []client.Object{workload, inventory, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "flotilla-system"}}} {
		if err := kube.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
			t.Errorf("uninstall deleted %s: %v", o.GetName(), err)
		}
	}
	for _, o := range []client.Object{&appsv1.Deployment{}, &corev1.ServiceAccount{}} {
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "flotilla-system", Name: "flotilla-agent"}, o); !apierrors.IsNotFound(err) {
			t.Errorf("%T left: %v", o, err)
		}
	}
	if out := runOK(t, "uninstall", "--kubeconfig", c.Kubeconfig); !strings.Contains(out, "no agent is installed") {
		t.Errorf("a second uninstall: %s", out)
	}
}

// changeLines are bootstrap's and uninstall's "OBJECT  ACTION" lines.
var changeLines = regexp.MustCompile(`(?m)^(\S+/\S+)\s+(created|configured|unchanged|deleted|would be deleted)$`)

// said reports whether out has the line "object  action".
func said(out, object, action string) bool {
	for _, m := range changeLines.FindAllStringSubmatch(out, -1) {
		if m[1] == object && m[2] == action {
			return true
		}
	}
	return false
}

func getDeployment(t *testing.T, kube client.Client) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: "flotilla-system", Name: "flotilla-agent"}, &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

// --add-to-fleet commits the cluster into the fleet's inventory before
// installing: on the branch, or on a new branch for a pull request; again
// with the same identity it commits nothing; with another identity it
// fails before anything is pushed or applied.
func TestBootstrapAddsTheClusterToTheFleet(t *testing.T) {
	c, kube := bootstrapPlane(t)
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": `package fleet

clusters: {
	"prod-eu-1": {region: "eu-west-1", labels: {env: "prod"}}
}
bundles: hello: resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: {name: "hello", namespace: "default"}}]
`})
	url := repo.ServeHTTP("flotilla", "push-token")
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("push-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"bootstrap", "--kubeconfig", c.Kubeconfig, "--repo", url, "--git-password-file", token,
		"--wait=false", "--add-to-fleet", "--by", "Platform Team <platform@example.com>"}
	head := func(branch string) string { return gittest.Git(t, repo.Bare, "rev-parse", branch) }
	before := head("main")

	out := runOK(t, append(base, "--cluster", "prod-eu-2", "--region", "eu-central-1", "--label", "env=prod", "--label", "class=regulated")...)
	if !strings.Contains(out, "added cluster prod-eu-2 to the fleet's inventory") || head("main") == before {
		t.Fatalf("no commit on main:\n%s", out)
	}
	fleetFile := gittest.Git(t, repo.Bare, "show", "main:fleet.cue")
	if !strings.Contains(fleetFile, `clusters: "prod-eu-2": {region: "eu-central-1", labels: {"class": "regulated", "env": "prod"}}`) {
		t.Errorf("fleet.cue:\n%s", fleetFile)
	}
	if author := gittest.Git(t, repo.Bare, "log", "-1", "--format=%an <%ae>", "main"); author != "Platform Team <platform@example.com>" {
		t.Errorf("author %s", author)
	}
	gittest.Git(t, repo.Work, "pull", "-q", "origin", "main")
	plan := runOK(t, "plan", repo.Work, "--all", "-o", "json")
	if !strings.Contains(plan, `"prod-eu-2"`) {
		t.Errorf("plan --all does not name the new cluster:\n%s", lastLines(plan, 10))
	}
	if getDeployment(t, kube).Name != "flotilla-agent" {
		t.Error("the agent was not installed")
	}

	// Again: nothing to commit.
	at := head("main")
	out = runOK(t, append(base, "--cluster", "prod-eu-2", "--region", "eu-central-1", "--label", "env=prod", "--label", "class=regulated")...)
	if !strings.Contains(out, "already in the fleet's inventory") || head("main") != at {
		t.Errorf("a second run committed:\n%s", out)
	}
	// Another identity: refused, nothing pushed.
	msg := runFails(t, append(base, "--cluster", "prod-eu-2", "--region", "us-east-1")...)
	if !strings.Contains(msg, `cluster prod-eu-2 is in the fleet's inventory as region "eu-central-1"`) || head("main") != at {
		t.Errorf("another identity: %s", msg)
	}
	// A pull-request branch: main stays.
	out = runOK(t, append(base, "--cluster", "prod-us-2", "--region", "us-east-1", "--pr-branch", "add-prod-us-2")...)
	if head("main") != at || !strings.Contains(out, "open a pull request from add-prod-us-2 to main") {
		t.Errorf("--pr-branch:\n%s", out)
	}
	if f := gittest.Git(t, repo.Bare, "show", "add-prod-us-2:fleet.cue"); !strings.Contains(f, `clusters: "prod-us-2"`) {
		t.Errorf("the PR branch's fleet.cue:\n%s", f)
	}
}

// A fleet whose fleet.cue is a link (to a canary outside the repository):
// --add-to-fleet writes nothing through it and fails, naming the file.
func TestBootstrapAddToFleetWritesNoLink(t *testing.T) {
	c, _ := bootstrapPlane(t)
	canary := filepath.Join(t.TempDir(), "canary.cue")
	const canaryText = "package fleet\n\nclusters: {}\n"
	if err := os.WriteFile(canary, []byte(canaryText), 0o644); err != nil {
		t.Fatal(err)
	}
	repo := gittest.New(t)
	if err := os.Symlink(canary, filepath.Join(repo.Work, "fleet.cue")); err != nil {
		t.Fatal(err)
	}
	repo.Commit(map[string]string{"other.cue": "package fleet\n"})
	msg := runFails(t, "bootstrap", "--kubeconfig", c.Kubeconfig, "--repo", repo.URL, "--cluster", "x-1",
		"--wait=false", "--add-to-fleet", "--by", "A <a@example.com>")
	if data, _ := os.ReadFile(canary); string(data) != canaryText {
		t.Errorf("the canary outside the repository was written:\n%s", data)
	}
	if !strings.Contains(msg, "--add-to-fleet") || !strings.Contains(msg, "fleet.cue") {
		t.Errorf("the error: %s", msg)
	}
}
