package fleet_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/flotilla-gitops/flotilla/fleet"
)

// FuzzLoadAndPlan loads arbitrary fleet.cue files and plans what loads for
// one cluster, as the agent does with whatever a commit holds: never a
// panic; a failure is ErrInvalid (diagnostics with positions) with a
// bounded message free of escapes; a planned bundle either failed with
// errors or has its inputs digest. Seeds: testdata/fuzz/FuzzLoadAndPlan
// and the cases below.
func FuzzLoadAndPlan(f *testing.F) {
	for _, seed := range []string{
		`bundles: web: {resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "x"}]}`,
		`bundles: web: {helm: chart: "charts/web", values: replicas: *2 | int, overlays: [{regions: ["eu-*"], values: replicas: 3}]}`,
		`bundles: a: {resources: [], dependsOn: ["b"]}, bundles: b: {resources: [], dependsOn: ["a"]}`,
		`clusters: c1: {region: "eu-west-1"}, bundles: x: {kustomize: path: "k", target: when: cluster.region == "eu-west-1"}`,
		`tenancy: {platform: [], tenants: t: {bundles: ["*"], namespaces: ["t"], serviceAccounts: ["d"], clusterKinds: [], files: []}}, bundles: x: {namespace: "t", serviceAccountName: "d", resources: []}`,
		`bundles: x: {resources: [], values: s: "\x1b[2J"}`,
		"bundles: {",
	} {
		f.Add(seed)
	}
	c := fleet.Cluster{Name: "fuzz-1", Region: "eu-west-1", Labels: map[string]string{"env": "prod"}}
	f.Fuzz(func(t *testing.T, src string) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "fleet.cue"), []byte("package fleet\n\n"+src+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		fl, err := fleet.Load(dir, fleet.LoadOptions{})
		if err != nil {
			checkError(t, err)
			return
		}
		p, err := fl.Plan(c)
		if err != nil {
			checkError(t, err)
			return
		}
		for _, b := range p.Bundles {
			if b.Failed() {
				checkError(t, b.Errors)
			} else if b.InputsDigest == "" {
				t.Fatalf("bundle %s planned without a digest", b.Name)
			}
		}
	})
}

func checkError(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, fleet.ErrInvalid) {
		t.Fatalf("an error that is not ErrInvalid: %v", err)
	}
	for _, d := range fleet.AsDiagnostics(err) {
		msg := d.Error()
		if strings.ContainsRune(msg, 0x1b) || !utf8.ValidString(msg) || len(msg) > 64<<10 {
			t.Fatalf("unsafe diagnostic %q", msg)
		}
	}
}
