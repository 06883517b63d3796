package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/internal/sopstest"
)

const secretCanary = "s3cret-canary-4b1d"

// secretFleet writes a fleet whose three bundles read SOPS-encrypted files
// (encrypted with the sops command line to key): a manifests folder, a
// kustomization's resource, and a Helm values file.
func secretFleet(t *testing.T, key sopstest.Key) string {
	t.Helper()
	repo := t.TempDir()
	secret := "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: " + secretCanary + "\n"
	writeTestFile(t, filepath.Join(repo, "secrets/db.yaml"), string(sopstest.Encrypt(t, "db.yaml", secret, "", key.Recipient)))
	writeTestFile(t, filepath.Join(repo, "k/secret.yaml"), string(sopstest.Encrypt(t, "secret.yaml", strings.Replace(secret, "name: db", "name: kdb", 1), "", key.Recipient)))
	writeTestFile(t, filepath.Join(repo, "k/kustomization.yaml"), "resources: [secret.yaml]\n")
	writeTestFile(t, filepath.Join(repo, "values/secret.yaml"), string(sopstest.Encrypt(t, "secret.yaml", "password: "+secretCanary+"\n", "^password$", key.Recipient)))
	writeTestFile(t, filepath.Join(repo, "charts/app/Chart.yaml"), "apiVersion: v2\nname: app\nversion: 0.1.0\n")
	writeTestFile(t, filepath.Join(repo, "charts/app/templates/secret.yaml"), "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\nstringData:\n  password: {{ .Values.password | quote }}\n")
	writeTestFile(t, filepath.Join(repo, "fleet.cue"), `package fleet

clusters: c1: {}
bundles: db: {namespace: "shop", manifests: path: "secrets"}
bundles: kdb: {namespace: "shop", kustomize: path: "k"}
bundles: app: {namespace: "shop", helm: {chart: "charts/app", valuesFiles: ["values/secret.yaml"]}}
`)
	return repo
}

// TestSecretsThroughTheCommands: render masks encrypted files unless
// --decrypt with the right identity; a wrong identity fails each bundle
// naming the file and the recipient, never the secret; plan shows no
// secret; hydrate refuses to write one.
func TestSecretsThroughTheCommands(t *testing.T) {
	key, wrong := sopstest.NewKey(t), sopstest.NewKey(t)
	repo := secretFleet(t, key)
	cli := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), args, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}

	code, out, errs := cli("render", repo, "--cluster", "c1")
	if code != exitOK || strings.Contains(out+errs, secretCanary) || strings.Count(out, "sops-encrypted:") != 3 {
		t.Errorf("render (masked): exit %d\n%s\n%s", code, out, errs)
	}

	code, out, errs = cli("render", repo, "--cluster", "c1", "--decrypt", "--age-key-file", key.File)
	if code != exitOK || strings.Count(out, secretCanary) != 3 {
		t.Errorf("render --decrypt: exit %d\n%s\n%s", code, out, errs)
	}

	code, _, errs = cli("render", repo, "--cluster", "c1", "--decrypt")
	if code == exitOK || !strings.Contains(errs, "--age-key-file") {
		t.Errorf("render --decrypt without a key: exit %d\n%s", code, errs)
	}

	code, out, errs = cli("render", repo, "--cluster", "c1", "--decrypt", "--age-key-file", wrong.File)
	for _, want := range []string{"secrets/db.yaml", "k/secret.yaml", "values/secret.yaml", key.Recipient, wrong.Recipient} {
		if !strings.Contains(errs, want) {
			t.Errorf("render --decrypt with another key: stderr lacks %q", want)
		}
	}
	if code == exitOK || strings.Contains(out+errs, secretCanary) || strings.Contains(out+errs, wrong.Identity) {
		t.Errorf("render --decrypt with another key: exit %d\n%s\n%s", code, out, errs)
	}

	code, out, errs = cli("plan", repo, "--cluster", "c1")
	if code != exitOK || strings.Contains(out+errs, secretCanary) {
		t.Errorf("plan: exit %d\n%s\n%s", code, out, errs)
	}

	gittest.Git(t, repo, "init", "-q")
	gittest.Git(t, repo, "add", ".")
	gittest.Git(t, repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "fleet")
	code, out, errs = cli("hydrate", repo, "--out", t.TempDir(), "--age-key-file", key.File)
	if code == exitOK || !strings.Contains(errs, "SOPS-encrypted") || strings.Contains(out+errs, secretCanary) {
		t.Errorf("hydrate: exit %d\n%s\n%s", code, out, errs)
	}
}
