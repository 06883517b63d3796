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

	// A new password: preview says the Secret changed, and shows neither.
	const newPassword = "n3w-s3cret-canary-77aa"
	writeTestFile(t, filepath.Join(repo, "secrets/db.yaml"), string(sopstest.Encrypt(t, "db.yaml",
		"apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: "+newPassword+"\n", "", key.Recipient)))
	gittest.Git(t, repo, "add", ".")
	gittest.Git(t, repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "rotate")
	code, out, errs = cli("preview", repo, "--base", "HEAD~1", "--head", "HEAD", "--age-key-file", key.File)
	if code != 1 || !strings.Contains(out, "bundle db: changed") || strings.Contains(out+errs, secretCanary) || strings.Contains(out+errs, newPassword) {
		t.Errorf("preview: exit %d\n%s\n%s", code, out, errs)
	}
}

// TestVetSecretsPolicy: vet checks every encrypted file each cluster would
// receive — from a manifests folder, a kustomization's base, a values file
// — against the recipients of the cluster's class, reading only the SOPS
// metadata (no key is given).
func TestVetSecretsPolicy(t *testing.T) {
	reg, std := sopstest.NewKey(t), sopstest.NewKey(t)
	repo := t.TempDir()
	secret := "apiVersion: v1\nkind: Secret\nmetadata:\n  name: NAME\nstringData:\n  password: " + secretCanary + "\n"
	enc := func(name string, recipients ...string) string {
		return string(sopstest.Encrypt(t, filepath.Base(name), strings.Replace(secret, "NAME", strings.TrimSuffix(filepath.Base(name), ".yaml"), 1), "", recipients...))
	}
	writeTestFile(t, filepath.Join(repo, "secrets/reg/db.yaml"), enc("db.yaml", reg.Recipient))
	writeTestFile(t, filepath.Join(repo, "secrets/shared/api.yaml"), enc("api.yaml", std.Recipient))
	writeTestFile(t, filepath.Join(repo, "k/base/both.yaml"), enc("both.yaml", reg.Recipient, std.Recipient))
	writeTestFile(t, filepath.Join(repo, "k/base/kustomization.yaml"), "resources: [both.yaml]\n")
	writeTestFile(t, filepath.Join(repo, "k/overlay/kustomization.yaml"), "resources: [../base]\n")
	// The bundle's own component: its files reach the cluster as the
	// kustomization's do.
	writeTestFile(t, filepath.Join(repo, "k/comp/cert.yaml"), enc("cert.yaml", reg.Recipient))
	writeTestFile(t, filepath.Join(repo, "k/comp/kustomization.yaml"), "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources: [cert.yaml]\n")
	// A key of no class.
	stray := sopstest.NewKey(t)
	writeTestFile(t, filepath.Join(repo, "secrets/extra/token.yaml"), enc("token.yaml", std.Recipient, stray.Recipient))
	writeTestFile(t, filepath.Join(repo, "fleet.cue"), `package fleet

clusters: {
	"eu-1": {labels: class: "regulated"}
	"us-1": {labels: class: "standard"}
	"lab-1": {}
}
secrets: {
	by: "class"
	recipients: {
		regulated: ["`+reg.Recipient+`"]
		standard: ["`+std.Recipient+`"]
	}
}
bundles: [string]: namespace: "shop"
bundles: db: {target: clusterSelector: matchLabels: class: "regulated", manifests: path: "secrets/reg"}
bundles: shared: manifests: path: "secrets/shared"
bundles: kust: {target: clusterSelector: matchLabels: class: "standard", kustomize: {path: "k/overlay", components: ["k/comp"]}}
bundles: extra: {target: clusterSelector: matchLabels: class: "standard", manifests: path: "secrets/extra"}
`)
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"vet", repo}, &stdout, &stderr)
	out := stderr.String()
	for _, want := range []string{
		"cluster eu-1: bundle shared: secrets: secrets/shared/api.yaml is not encrypted to " + reg.Recipient + " of class regulated, and is encrypted to " + std.Recipient + " (class standard), which class regulated must not share",
		"cluster lab-1: bundle shared: secrets: secrets/shared/api.yaml is SOPS-encrypted, and the cluster has no class label",
		"cluster us-1: bundle kust: secrets: k/base/both.yaml is encrypted to " + reg.Recipient + " (class regulated), which class standard must not share",
		"cluster us-1: bundle kust: secrets: k/comp/cert.yaml is not encrypted to " + std.Recipient + " of class standard, and is encrypted to " + reg.Recipient + " (class regulated), which class standard must not share",
		"cluster us-1: bundle extra: secrets: secrets/extra/token.yaml is encrypted to " + stray.Recipient + ", of no class of the secrets policy",
		"fleet.cue:11:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("vet lacks %q", want)
		}
	}
	if code != exitFailed || strings.Count(out, "secrets:") != 5 || strings.Contains(out, "bundle db") {
		t.Errorf("vet: exit %d\n%s", code, out)
	}
}
