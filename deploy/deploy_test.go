package deploy_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/flotilla-gitops/flotilla/deploy"
	"github.com/flotilla-gitops/flotilla/render"
)

func byKey(t *testing.T, objs []render.Object) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, o := range objs {
		u := o.Object
		key := u.GetKind() + " " + u.GetNamespace() + "/" + u.GetName()
		if _, dup := out[key]; dup {
			t.Errorf("%s twice", key)
		}
		// Compare as JSON values: kustomize and Helm decode numbers alike.
		data, err := json.Marshal(u.Object)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		out[key] = m
	}
	return out
}

// `helm template` of the chart with its default values gives the objects
// of `kustomize build deploy/`, field for field: the two are one install.
func TestChartEqualsKustomizeBuild(t *testing.T) {
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), ".")
	if err != nil {
		t.Fatal(err)
	}
	yaml, err := resMap.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	kobjs, err := render.DecodeObjects(yaml, "deploy/")
	if err != nil {
		t.Fatal(err)
	}
	hobjs, err := deploy.Render(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(kobjs) < 8 {
		t.Fatalf("kustomize build deploy/ gave %d objects", len(kobjs))
	}
	if diff := cmp.Diff(byKey(t, kobjs), byKey(t, hobjs)); diff != "" {
		t.Errorf("helm template differs from kustomize build deploy/ (-kustomize +helm):\n%s", diff)
	}
}

// helm lint passes: no error and no warning (Helm's own linter, on the
// chart's folder).
func TestChartLints(t *testing.T) {
	l := lint.All(deploy.ChartDir, nil, "flotilla-system", false)
	for _, m := range l.Messages {
		if m.Severity >= support.WarningSev {
			t.Errorf("helm lint: %s", m)
		}
	}
}

func find(objs []render.Object, kind, name string) map[string]any {
	for _, o := range objs {
		if o.Object.GetKind() == kind && o.Object.GetName() == name {
			return o.Object.Object
		}
	}
	return nil
}

// The values a platform team sets: SSH credentials created by the chart,
// cluster-admin, tenancy marks, an age key, a pinned digest, the identity.
func TestChartValues(t *testing.T) {
	objs, err := deploy.Render(map[string]any{
		"git": map[string]any{"repository": "ssh://git@git.example.com/fleet.git", "auth": "ssh",
			"sshKey": "KEY", "knownHosts": "git.example.com ssh-ed25519 AAAA", "existingSecret": ""},
		"status":   map[string]any{"repository": "ssh://git@git.example.com/fleet-status.git"},
		"identity": map[string]any{"name": "prod-eu-3", "region": "eu-west-3", "labels": map[string]any{"class": "regulated"}},
		"rbac":     map[string]any{"mode": "cluster-admin"},
		"tenants":  []any{map[string]any{"namespace": "team-a", "serviceAccounts": []any{"deployer", "migrator"}}},
		"age":      map[string]any{"enabled": true},
		"notify":   map[string]any{"enabled": true},
		"image":    map[string]any{"digest": "sha256:" + strings.Repeat("ab", 32)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if find(objs, "ClusterRoleBinding", "flotilla-agent-cluster-admin") == nil || find(objs, "ClusterRole", "flotilla-agent") != nil {
		t.Error("rbac.mode=cluster-admin did not swap the RBAC")
	}
	secret := find(objs, "Secret", "flotilla-git")
	if secret == nil || secret["data"].(map[string]any)["identity"] != "S0VZ" {
		t.Errorf("the SSH Secret: %v", secret)
	}
	mark := find(objs, "Role", "flotilla-impersonate")
	if mark == nil || !strings.Contains(mustJSON(t, mark), `"resourceNames":["deployer","migrator"]`) {
		t.Errorf("the tenancy mark: %v", mark)
	}
	dep := mustJSON(t, find(objs, "Deployment", "flotilla-agent"))
	for _, want := range []string{
		`--ssh-key=/etc/flotilla/git/identity`, `--known-hosts=/etc/flotilla/git/known_hosts`,
		`--age-key-file=/etc/flotilla/age/keys.txt`, `"image":"ghcr.io/flotilla-gitops/flotilla@sha256:abab`,
		`"value":"prod-eu-3"`, `--notify-config=/etc/flotilla/notify/notify.yaml`, `"secret":{"secretName":"flotilla-notify"}`,
		// The status in a repository of its own by default, with the
		// fleet's credential.
		`--status-repo=ssh://git@git.example.com/fleet-status.git`, `--status-ssh-key=/etc/flotilla/git/identity`,
	} {
		if !strings.Contains(dep, want) {
			t.Errorf("the Deployment lacks %s:\n%s", want, dep)
		}
	}
	if strings.Contains(dep, "--password-file") {
		t.Error("SSH auth still passes --password-file")
	}
	id := mustJSON(t, find(objs, "ConfigMap", "flotilla-identity"))
	if !strings.Contains(id, `"label.class":"regulated"`) || !strings.Contains(id, `"region":"eu-west-3"`) {
		t.Errorf("identity: %s", id)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Wrong values fail with a message that says what to write instead.
func TestChartRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		values map[string]any
		want   string
	}{
		{map[string]any{"rbac": map[string]any{"mode": "admin"}}, "/rbac/mode"},
		{map[string]any{"identity": map[string]any{"name": "Prod EU"}}, "/identity/name"},
		{map[string]any{"git": map[string]any{"auth": "ssh", "sshKey": "K"}}, "git.knownHosts is required"},
		// An install given its own fleet repository but not a status
		// repository (one from before status.repository, upgraded).
		{map[string]any{"git": map[string]any{"repository": "https://git.corp.example/fleet.git"}}, "status.repository is still the example address"},
		{map[string]any{"tenants": []any{
			map[string]any{"namespace": "a", "serviceAccounts": []any{"x"}},
			map[string]any{"namespace": "a", "serviceAccounts": []any{"y"}},
		}}, "namespace a is listed twice"},
	} {
		_, err := deploy.Render(tc.values)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error naming %q", tc.values, err, tc.want)
		}
	}
}

// TestChartFollowsAnOCIFleet: git.repository may be the fleet's OCI
// artifact (flotilla publish); the agent gets it with the registry
// credential and the status repository; status.repository "" keeps the
// status in the fleet repository (no --status-repo).
func TestChartFollowsAnOCIFleet(t *testing.T) {
	objs, err := deploy.Render(map[string]any{
		"git":      map[string]any{"repository": "oci://registry.example.com/platform/fleet:main", "auth": "password", "password": "token", "existingSecret": ""},
		"status":   map[string]any{"repository": "https://git.example.com/platform/status.git"},
		"identity": map[string]any{"name": "prod-eu-3"},
	})
	if err != nil {
		t.Fatal(err)
	}
	dep := mustJSON(t, find(objs, "Deployment", "flotilla-agent"))
	for _, want := range []string{`--repo=oci://registry.example.com/platform/fleet:main`, `--password-file=/etc/flotilla/git/password`,
		`--status-repo=https://git.example.com/platform/status.git`} {
		if !strings.Contains(dep, want) {
			t.Errorf("the Deployment lacks %s:\n%s", want, dep)
		}
	}
	objs, err = deploy.Render(map[string]any{"status": map[string]any{"repository": ""}, "identity": map[string]any{"name": "prod-eu-3"}})
	if err != nil {
		t.Fatal(err)
	}
	if dep := mustJSON(t, find(objs, "Deployment", "flotilla-agent")); strings.Contains(dep, "--status-repo") {
		t.Errorf("status.repository \"\" still passes --status-repo:\n%s", dep)
	}
}
