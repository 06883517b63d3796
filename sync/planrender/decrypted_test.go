package planrender_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/sopstest"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/sops"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
)

// decryptedPassword is a real-looking password that a chart's schema, a
// template's `fail` or a check of the rendered objects would quote.
const decryptedPassword = "Hunter2-Pr0duction-Db!"

// TestDecryptedValuesNeverInErrors: a value decrypted from a SOPS file is
// in no error about the bundle, whoever writes it — a chart's values
// schema (a password that merely mismatches its pattern), a template's
// `fail`, the checks of the rendered objects — as it is, quoted, or in
// base64; the error still says what went wrong.
func TestDecryptedValuesNeverInErrors(t *testing.T) {
	key := sopstest.NewKey(t)
	enc := func(name, plain, regex string) string {
		return string(sopstest.Encrypt(t, name, plain, regex, key.Recipient))
	}
	chart := map[string]string{
		"Chart.yaml":        "apiVersion: v2\nname: db\nversion: 0.1.0\n",
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: db\ndata:\n  user: {{ .Values.user | quote }}\n",
	}
	for name, tc := range map[string]struct {
		files map[string]string
		src   string
		want  string
	}{
		"schema pattern": {
			files: map[string]string{
				"values.schema.json": `{"properties": {"password": {"type": "string", "pattern": "^[a-z]+$"}}}`,
				"secrets/db.yaml":    enc("db.yaml", "user: app\npassword: "+decryptedPassword+"\n", "^password$"),
			},
			src:  `helm: {chart: "charts/db", valuesFiles: ["secrets/db.yaml"]}`,
			want: "password",
		},
		"template fail": {
			files: map[string]string{
				"templates/fail.yaml": `{{ fail (printf "cannot connect with %s, %q, %s" .Values.password .Values.password (b64enc .Values.password)) }}`,
				"secrets/db.yaml":     enc("db.yaml", "user: app\npassword: "+decryptedPassword+"\n", "^password$"),
			},
			src:  `helm: {chart: "charts/db", valuesFiles: ["secrets/db.yaml"]}`,
			want: "cannot connect with",
		},
		"rendered object check": {
			files: map[string]string{
				"manifests/cm.yaml": enc("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: "+decryptedPassword+"\ndata:\n  a: b\n", "^name$"),
			},
			src:  `manifests: path: "manifests"`,
			want: "ConfigMap",
		},
		"kustomize": {
			files: map[string]string{
				"overlay/kustomization.yaml": "resources: [cm.yaml]\nnamespace: \"Bad Namespace\"\n",
				"overlay/cm.yaml":            enc("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: "+decryptedPassword+"\n", "^name$"),
			},
			src:  `kustomize: path: "overlay"`,
			want: "ConfigMap",
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			files := map[string]string{"fleet.cue": "package fleet\n\nbundles: db: {namespace: \"db\", " + tc.src + "}\n"}
			for p, c := range chart {
				files["charts/db/"+p] = c
			}
			for p, c := range tc.files {
				if p == "values.schema.json" || strings.HasPrefix(p, "templates/") {
					p = "charts/db/" + p
				}
				files[p] = c
			}
			for p, c := range files {
				writeFile(t, filepath.Join(dir, p), c)
			}
			p := planOf(t, dir)
			r := planrender.New(dir, planrender.Options{Sources: planrender.Sources{Secrets: sops.ModeDecrypt, AgeKeyFiles: []string{key.File}}})
			bundles, err := r.ApplyBundles(context.Background(), p, "rev")
			if err != nil {
				t.Fatal(err)
			}
			b := bundles[0]
			if b.Err == nil {
				t.Fatalf("the bundle rendered: %v", b.Objects)
			}
			msg := b.Err.Error()
			for _, leak := range []string{decryptedPassword, `Hunter2-Pr0duction-Db\u0021`, "SHVudGVyMi1QcjBkdWN0aW9uLURiIQ=="} {
				if strings.Contains(msg, leak) {
					t.Errorf("the error shows the decrypted value (%s): %s", leak, msg)
				}
			}
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "‹decrypted value›") {
				t.Errorf("the error no longer says what went wrong: %s", msg)
			}
		})
	}
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRenderedSizeIsBounded: a bundle whose objects take more than
// MaxBytes fails alone; the bundles of a cluster together hold at most
// MaxClusterBytes, past which the next bundle fails (in plan order) and
// the ones before it are kept.
func TestRenderedSizeIsBounded(t *testing.T) {
	dir := t.TempDir()
	cm := func(name string, kib int) string {
		return `{apiVersion: "v1", kind: "ConfigMap", metadata: name: "` + name + `", data: v: strings.Repeat("x", ` + strconv.Itoa(kib<<10) + `)}`
	}
	writeFile(t, filepath.Join(dir, "fleet.cue"), `package fleet

import "strings"

bundles: {
	a: {namespace: "x", resources: [`+cm("a", 300)+`]}
	b: {namespace: "x", resources: [`+cm("b", 300)+`], dependsOn: ["a"]}
	c: {namespace: "x", resources: [`+cm("c", 300)+`], dependsOn: ["b"]}
	huge: {namespace: "x", resources: [`+cm("huge", 600)+`, `+cm("huge2", 600)+`]}
}
`)
	p := planOf(t, dir)
	r := planrender.New(dir, planrender.Options{Limits: render.Limits{MaxBytes: 1 << 20, MaxClusterBytes: 700 << 10}})
	bundles, err := r.RenderPlan(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, b := range bundles {
		got[b.Name] = "ok"
		if b.Err != nil {
			got[b.Name] = b.Err.Error()
		}
	}
	if got["a"] != "ok" || got["b"] != "ok" {
		t.Errorf("the first bundles within the bound: %v", got)
	}
	if !strings.Contains(got["c"], "--max-cluster-size") || !errors.Is(bundlesErr(bundles, "c"), render.ErrTooLarge) {
		t.Errorf("the bundle past the cluster's bound: %q", got["c"])
	}
	if !strings.Contains(got["huge"], "more than 1.0 MiB (--max-bundle-size)") {
		t.Errorf("the bundle past its own bound: %q", got["huge"])
	}
}

func bundlesErr(bundles []planrender.Bundle, name string) error {
	for _, b := range bundles {
		if b.Name == name {
			return b.Err
		}
	}
	return nil
}

// planOf loads the fleet in dir and plans it for cluster prod-1.
func planOf(t *testing.T, dir string) *fleet.Plan {
	t.Helper()
	f, err := fleet.Load(dir, fleet.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := f.Plan(fleet.Cluster{Name: "prod-1"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
