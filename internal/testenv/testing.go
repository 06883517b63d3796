package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sync/errgroup"
)

// StartT starts a cluster for a test and stops it when the test ends. It
// fails the test, never skips it, when the cluster cannot start: a test that
// needs a real API server must not pass without one. The error says how to
// build missing binaries. When the test fails, the end of each process's log
// is printed with it.
func StartT(t testing.TB, opts Options) *Cluster {
	t.Helper()
	return StartFleetT(t, opts)[0]
}

// StartFleetT starts several clusters at once (a fleet in one test) and stops
// them all when the test ends.
func StartFleetT(t testing.TB, opts ...Options) []*Cluster {
	t.Helper()
	clusters := make([]*Cluster, len(opts))
	g, ctx := errgroup.WithContext(t.Context())
	for i, o := range opts {
		if o.Dir == "" {
			o.Dir = filepath.Join(t.TempDir(), "cluster")
		}
		g.Go(func() error {
			c, err := Start(ctx, o)
			clusters[i] = c
			return err
		})
	}
	err := g.Wait()
	for _, c := range clusters {
		if c != nil {
			t.Cleanup(func() { stopT(t, c) })
		}
	}
	if err != nil {
		t.Fatalf("starting test cluster: %v", err)
	}
	return clusters
}

// stopT stops a cluster at the end of a test and, when the test failed,
// prints the end of each of its processes' logs (the folder is a test
// temporary folder, gone after the test).
func stopT(t testing.TB, c *Cluster) {
	if t.Failed() {
		logs, _ := filepath.Glob(filepath.Join(c.Dir, "*.log"))
		for _, l := range logs {
			t.Logf("cluster %s, end of %s:\n%s", c.Name, filepath.Base(l), tail(l, logTailLines))
		}
	}
	if err := c.Stop(); err != nil {
		t.Errorf("stopping cluster %s: %v", c.Name, err)
	}
}

// logTailLines is how much of each log a failed test prints.
const logTailLines = 30

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// RunMain is a test package's TestMain with one control plane for all its
// tests (as fluxcd/pkg/ssa's tests do): it starts the cluster, calls setup
// with it (to keep it, make clients), runs the tests, stops the cluster,
// and returns the exit code for os.Exit. A cluster that cannot start fails
// the package, never skips it; when a test failed, the end of each
// process's log is printed.
func RunMain(m *testing.M, opts Options, setup func(*Cluster) error) int {
	c, err := Start(context.Background(), opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := 1
	if err := setup(c); err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	if code != 0 {
		logs, _ := filepath.Glob(filepath.Join(c.Dir, "*.log"))
		for _, l := range logs {
			fmt.Fprintf(os.Stderr, "cluster %s, end of %s:\n%s\n", c.Name, filepath.Base(l), tail(l, logTailLines))
		}
	}
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return code
}
