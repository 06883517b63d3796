package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// TestAgentOnce runs `flotilla agent --once` against a real cluster and a
// real repository: a good pass exits 0 and logs JSON; a remote that does
// not exist exits 1 and says so.
func TestAgentOnce(t *testing.T) {
	c := controlPlane(t)
	ns := testNamespace(t, c, "agent-once")
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": `package fleet

bundles: hello: {
	namespace: cluster.labels.ns
	resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "hello", data: "from": cluster.name}]
}
`})
	agent := func(url string) (int, string) {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), []string{"agent", "--once", "--repo", url, "--name", "lab-1", "--label", "env=lab", "--label", "ns=" + ns,
			"--kubeconfig", c.Kubeconfig, "--cache-dir", t.TempDir(), "--inventory-namespace", ns, "--identity-namespace", ns}, &stdout, &stderr)
		return code, stderr.String()
	}
	code, logs := agent(repo.URL)
	if code != exitOK || !strings.Contains(logs, `"msg":"bundle synced","bundle":"hello","phase":"Ready"`) {
		t.Fatalf("exit %d\n%s", code, logs)
	}
	code, logs = agent("file:///nowhere/fleet.git")
	if code != exitFailed || !strings.Contains(logs, "pass failed") {
		t.Errorf("missing remote: exit %d\n%s", code, logs)
	}
	// A user's error is a message, not a program's crash: no stack trace.
	if strings.Contains(logs, "stacktrace") || strings.Contains(logs, "goroutine ") {
		t.Errorf("the failure is logged with a stack trace:\n%s", logs)
	}
	// A token in the URL (as the user name, as users write it) is in no
	// log line: not at start, not in the failure.
	code, logs = agent("http://s3cret-tok3n@127.0.0.1:1/fleet.git")
	if code != exitFailed || strings.Contains(logs, "s3cret-tok3n") || !strings.Contains(logs, "http://***@127.0.0.1:1/fleet.git") {
		t.Errorf("credentials in the URL: exit %d\n%s", code, logs)
	}
}

// TestStatusCommand runs two agents that report to the fleet repository's
// status branch, then reads it with `flotilla status`: the table, one
// cluster, and --wait for the revision.
func TestStatusCommand(t *testing.T) {
	c := controlPlane(t)
	repo := gittest.New(t)
	rev := repo.Commit(map[string]string{"fleet.cue": `package fleet

bundles: hello: {
	namespace: cluster.labels.ns
	resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "hello"}]
}
`})
	// Two clusters' agents, kept apart on the control plane by namespace.
	for _, name := range []string{"lab-a", "lab-b"} {
		ns := testNamespace(t, c, "status-"+name)
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), []string{"agent", "--once", "--repo", repo.URL, "--name", name, "--label", "ns=" + ns,
			"--region", "eu-west-1", "--kubeconfig", c.Kubeconfig, "--cache-dir", t.TempDir(),
			"--inventory-namespace", ns, "--identity-namespace", ns}, &stdout, &stderr); code != exitOK {
			t.Fatalf("agent: %s", stderr.String())
		}
	}
	status := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), append([]string{"status", "--repo", repo.Bare}, args...), &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	code, out, errOut := status()
	if code != exitOK || !strings.Contains(out, "lab-a") || !strings.Contains(out, "Ready") || !strings.Contains(out, "1/1") {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, _ = status("--cluster", "lab-b"); code != exitOK || !strings.Contains(out, "hello") {
		t.Errorf("status --cluster: exit %d\n%s", code, out)
	}
	if code, _, errOut = status("--wait", "--revision", rev, "--timeout", "30s", "--poll", "100ms"); code != exitOK {
		t.Errorf("status --wait: exit %d\n%s", code, errOut)
	}
	other := strings.Repeat("0", 40)
	if code, _, errOut = status("--wait", "--revision", other, "--timeout", "1s", "--poll", "100ms"); code != exitFailed || !strings.Contains(errOut, "not Ready everywhere") {
		t.Errorf("status --wait for a revision nobody applied: exit %d\n%s", code, errOut)
	}
}

// TestManyAgentsReportAtOnce starts 20 `flotilla agent --once` processes
// together against one fleet repository (each a cluster of its own,
// kept apart by namespace on the control plane): every one exits 0 and
// every cluster's status is on its branch. (With one shared status branch,
// 100 agents started together left 29 statuses, all exiting 0.)
func TestManyAgentsReportAtOnce(t *testing.T) {
	c := controlPlane(t)
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": `package fleet

bundles: hello: {
	namespace: cluster.labels.ns
	resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "hello", data: from: cluster.name}]
}
`})
	const n = 20
	cmds := make([]*exec.Cmd, n)
	logs := make([]*bytes.Buffer, n)
	for i := range n {
		name := fmt.Sprintf("many-%02d", i)
		ns := testNamespace(t, c, name)
		logs[i] = &bytes.Buffer{}
		cmds[i] = exec.Command("flotilla", "agent", "--once", "--repo", repo.URL, "--name", name, "--label", "ns="+ns,
			"--kubeconfig", c.Kubeconfig, "--cache-dir", t.TempDir(), "--inventory-namespace", ns, "--identity-namespace", ns, "--listen", "")
		cmds[i].Stdout, cmds[i].Stderr = logs[i], logs[i]
	}
	for _, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("agent %d: %v\n%s", i, err, logs[i])
		}
	}
	snap, err := report.Read(t.Context(), repo.URL, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Statuses) != n || len(snap.Problems) > 0 {
		t.Fatalf("%d statuses on the status branches, want %d (problems %v)", len(snap.Statuses), n, snap.Problems)
	}
	for _, st := range snap.Statuses {
		if st.Phase != report.ClusterReady {
			t.Errorf("%s: %s %s", st.Cluster.Name, st.Phase, st.Message)
		}
	}
}
