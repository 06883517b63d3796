package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/flotilla-gitops/flotilla/internal/testenv"
)

// TestMain lets testscript run this package's test binary as the flotilla
// command, so scripts exercise the real argument parsing and exit codes.
func TestMain(m *testing.M) {
	quietLibraries()
	testscript.Main(m, map[string]func(){
		"flotilla": func() { os.Exit(Main()) },
		// stuck-on-signal: Main's signal handling around work that ignores
		// the context (TestSecondSignalExitsAtOnce).
		"stuck-on-signal": stuckOnSignal,
	})
}

// TestScripts runs the command-line scripts in testdata/script. Set
// UPDATE_GOLDEN=1 to rewrite their expected files from the current output.
func TestScripts(t *testing.T) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:           "testdata/script",
		UpdateScripts: os.Getenv("UPDATE_GOLDEN") != "",
		// $REPO is the Flotilla checkout, whose demo fleet and examples the
		// scripts vet.
		Setup: func(env *testscript.Env) error {
			env.Setenv("REPO", repo)
			return nil
		},
	})
}

// TestVersionAsksTheCluster checks `flotilla version --kubeconfig` against a
// real API server, which must report a stamped release, not v0.0.0-master.
func TestVersionAsksTheCluster(t *testing.T) {
	c := testenv.StartT(t, testenv.Options{Name: "version"})
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"version", "--kubeconfig", c.Kubeconfig, "-o", "json"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d, stderr: %s", code, stderr.String())
	}
	var got versionOutput
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout.String())
	}
	if !regexp.MustCompile(`^v1\.\d+\.\d+$`).MatchString(got.Server) {
		t.Errorf("server version %q, want a release such as v1.36.3", got.Server)
	}
}
