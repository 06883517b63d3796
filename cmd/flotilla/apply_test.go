package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/sync/apply"
)

// TestApplyAndDiff runs `flotilla diff` and `flotilla apply` against a real
// API server with a small fleet: differences, a sync, no differences, a
// change, a broken bundle that prunes nothing.
func TestApplyAndDiff(t *testing.T) {
	c := controlPlane(t)
	inventories := testNamespace(t, c, "apply-inventories")
	repo := t.TempDir()
	writeFleetFile := func(src string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(repo, "fleet.cue"), []byte("package fleet\n\n"+src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), append(args, repo, "--kubeconfig", c.Kubeconfig, "--inventory-namespace", inventories,
			"--name", "lab-1", "--label", "env=lab"), &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	writeFleetFile(`bundles: app: {
	namespace: "app"
	values: replicas: 2
	resources: {
		ns: {apiVersion: "v1", kind: "Namespace", metadata: name: "app"}
		cm: {apiVersion: "v1", kind: "ConfigMap", metadata: name: "settings", data: replicas: "\(values.replicas)"}
		secret: {apiVersion: "v1", kind: "Secret", metadata: name: "creds", stringData: token: "t0p-s3cret"}
	}
}
`)
	code, out, errOut := cli("diff")
	if code != exitFailed || !strings.Contains(out, "+++ ConfigMap/app/settings (fleet, bundle app)") || !strings.Contains(out, "@@ created @@") {
		t.Fatalf("diff before apply: exit %d\n%s\n%s", code, out, errOut)
	}
	if strings.Contains(out, "t0p-s3cret") {
		t.Errorf("diff shows a Secret value:\n%s", out)
	}

	code, out, errOut = cli("apply", "-o", "json")
	if code != exitOK {
		t.Fatalf("apply: exit %d\n%s\n%s", code, out, errOut)
	}
	var res apply.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("apply -o json: %v\n%s", err, out)
	}
	if b := res.Bundle("app"); b == nil || b.Phase != apply.PhaseReady || b.Counts.Created != 3 {
		t.Fatalf("apply result %+v", res.Bundles)
	}
	if strings.Contains(out, "t0p-s3cret") {
		t.Errorf("apply output shows a Secret value")
	}

	if code, out, _ = cli("diff"); code != exitOK || out != "" {
		t.Errorf("diff after apply: exit %d\n%s", code, out)
	}

	writeFleetFile(strings.Replace(mustRead(t, filepath.Join(repo, "fleet.cue")), "replicas: 2", "replicas: 3", 1)[len("package fleet\n\n"):])
	code, out, _ = cli("diff")
	if code != exitFailed || !strings.Contains(out, "@@ replace /data/replicas @@\n-\"2\"\n+\"3\"") {
		t.Errorf("diff of a change: exit %d\n%s", code, out)
	}
	if code, out, _ = cli("apply"); code != exitOK || !strings.Contains(out, "ConfigMap/app/settings configured") {
		t.Errorf("apply of a change: exit %d\n%s", code, out)
	}

	// A broken bundle: exit 1, named with its position, nothing pruned.
	writeFleetFile(`bundles: app: {
	namespace: "app"
	resources: ns: {apiVersion: "v1", kind: "Namespace", metadata: name: "app"}
	overlays: [{names: ["lab-*"], values: x: 1}, {names: ["*"], values: x: 2}]
}
`)
	code, out, errOut = cli("apply")
	if code != exitFailed || !strings.Contains(out, "app     Failed") || !strings.Contains(out, "fleet.cue:6:") {
		t.Errorf("broken apply: exit %d\n%s\n%s", code, out, errOut)
	}
	if code, _, errOut = cli("diff", "--bundle", "app"); code != exitFailed || !strings.Contains(errOut, "conflicting values") {
		t.Errorf("diff of a broken bundle: exit %d, stderr %s", code, errOut)
	}
	// The namespace is still there: a broken bundle prunes nothing.
	if _, out, _ = cli("diff"); strings.Contains(out, "deleted") {
		t.Errorf("a broken bundle would prune:\n%s", out)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
