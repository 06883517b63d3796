package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/internal/testenv"
)

// TestAgentOnce runs `flotilla agent --once` against a real cluster and a
// real repository: a good pass exits 0 and logs JSON; a remote that does
// not exist exits 1 and says so.
func TestAgentOnce(t *testing.T) {
	c := testenv.StartT(t, testenv.Options{Name: "cli-agent"})
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": `package fleet

bundles: hello: resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: {name: "hello", namespace: "default"}, data: "from": cluster.name}]
`})
	agent := func(url string) (int, string) {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), []string{"agent", "--once", "--repo", url, "--name", "lab-1", "--label", "env=lab",
			"--kubeconfig", c.Kubeconfig, "--cache-dir", t.TempDir()}, &stdout, &stderr)
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
}
