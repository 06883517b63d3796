package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRenderOutDoesNotFollowLinks renders into output folders that hold
// symlinks leading outside (as a committed rendered/ folder of a pull
// request may): a file that is a link is replaced, not written through, a
// folder that leads outside is refused, and the canaries outside are
// untouched.
func TestRenderOutDoesNotFollowLinks(t *testing.T) {
	repo := t.TempDir()
	writeTestFile(t, filepath.Join(repo, "fleet.cue"), `package fleet

clusters: c1: {}
bundles: web: resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: {name: "web", namespace: "default"}}]
`)
	outside := t.TempDir()
	canary := filepath.Join(outside, "canary")
	writeTestFile(t, canary, "untouched\n")

	out := t.TempDir()
	if err := os.Symlink(canary, filepath.Join(out, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"render", repo, "--cluster", "c1", "--out", out}, &stdout, &stderr); code != exitOK {
		t.Fatalf("render --out: exit %d\n%s", code, stderr.String())
	}
	if got := mustRead(t, canary); got != "untouched\n" {
		t.Errorf("the canary outside was written through a link: %q", got)
	}
	fi, err := os.Lstat(filepath.Join(out, "web.yaml"))
	if err != nil || !fi.Mode().IsRegular() || !strings.Contains(mustRead(t, filepath.Join(out, "web.yaml")), "kind: ConfigMap") {
		t.Errorf("web.yaml: %v %v", fi, err)
	}

	all := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(all, "c1")); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	if code := run(t.Context(), []string{"render", repo, "--all", "--out", all}, &stdout, &stderr); code == exitOK {
		t.Errorf("render --all wrote through a folder link:\n%s", stderr.String())
	}
	if _, err := os.Stat(filepath.Join(outside, "web.yaml")); err == nil {
		t.Error("render --all wrote outside its folder")
	}

	// The output folder itself a committed link (`rendered -> elsewhere`),
	// or under one: refused, nothing written there.
	t.Chdir(t.TempDir())
	if err := os.Symlink(outside, "rendered"); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"render", repo, "--cluster", "c1", "--out", "rendered"},
		{"render", repo, "--all", "--out", "rendered/all"},
	} {
		stderr.Reset()
		if code := run(t.Context(), args, &stdout, &stderr); code == exitOK || !strings.Contains(stderr.String(), "is a symbolic link") {
			t.Errorf("%v: exit %d\n%s", args, code, stderr.String())
		}
	}
	if list, _ := os.ReadDir(outside); len(list) != 1 {
		t.Errorf("%d entries in the linked folder, want the canary alone", len(list))
	}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRenderAllRefusesSharedObjects: render --all applies the one-bundle
// rule per cluster, as the agent does: the later bundle fails, naming the
// cluster, the object and the other bundle, and is not written.
func TestRenderAllRefusesSharedObjects(t *testing.T) {
	repo := t.TempDir()
	writeTestFile(t, filepath.Join(repo, "fleet.cue"), `package fleet

clusters: c1: {}
bundles: a: resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: {name: "shared", namespace: "default"}}]
bundles: b: resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: {name: "shared", namespace: "default"}}]
`)
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"render", repo, "--all", "--out", out}, &stdout, &stderr)
	if code != exitFailed || !strings.Contains(stderr.String(), "cluster c1: bundle b: an object belongs to one bundle: ConfigMap default/shared (also in bundle a)") {
		t.Errorf("exit %d\n%s", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(out, "c1", "a.yaml")); err != nil {
		t.Errorf("a not written: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "c1", "b.yaml")); err == nil {
		t.Error("b written")
	}
}
