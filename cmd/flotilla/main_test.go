package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/internal/containertest"
	"github.com/flotilla-gitops/flotilla/internal/testenv"
	"github.com/flotilla-gitops/flotilla/sync/sandbox"
)

// TestMain lets testscript run this package's test binary as the flotilla
// command, so scripts exercise the real argument parsing and exit codes,
// and stops the package's control plane once the tests are done.
func TestMain(m *testing.M) {
	containertest.Main() // the agent "in a pod" (TestAgentRunsFromTheImageAsInProduction)
	sandbox.Main()       // the commands' render workers are this test binary
	quietLibraries()
	testscript.Main(stopControlPlane{m}, map[string]func(){
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

// The package's one control plane, started by the first test that needs
// it (controlPlane) and stopped by TestMain. Tests keep apart by namespace
// and inventory namespace.
var (
	sharedPlane    *testenv.Cluster
	sharedPlaneErr error
	startPlaneOnce sync.Once
)

// controlPlane returns the package's control plane, starting it on first
// use; the test fails (never skips) when it cannot start.
func controlPlane(t *testing.T) *testenv.Cluster {
	t.Helper()
	startPlaneOnce.Do(func() {
		sharedPlane, sharedPlaneErr = testenv.Start(context.Background(), testenv.Options{Name: "cli"})
	})
	if sharedPlaneErr != nil {
		t.Fatal(sharedPlaneErr)
	}
	return sharedPlane
}

// stopControlPlane runs the tests, then stops the control plane if one
// started.
type stopControlPlane struct{ m *testing.M }

func (s stopControlPlane) Run() int {
	code := s.m.Run()
	if sharedPlane != nil {
		if err := sharedPlane.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	return code
}

// testNamespace creates a namespace on the control plane for a test.
func testNamespace(t *testing.T, c *testenv.Cluster, name string) string {
	t.Helper()
	kube, err := client.New(c.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := kube.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

// TestVersionAsksTheCluster checks `flotilla version --kubeconfig` against a
// real API server, which must report a stamped release, not v0.0.0-master.
func TestVersionAsksTheCluster(t *testing.T) {
	c := controlPlane(t)
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
