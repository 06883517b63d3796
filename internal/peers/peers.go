// Package peers installs the reference tools Flotilla's output is compared
// with — the helm and kustomize command lines at the versions whose
// libraries Flotilla uses — into bin/tools, once, through the Go module
// proxy. Equivalence tests and benchmarks use them.
package peers

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/flotilla-gitops/flotilla/internal/checkout"
)

// Tool is a command-line tool installable with `go install`.
type Tool struct {
	Name    string // binary name
	Package string // package@version
}

// The peers, at the versions of the libraries in go.mod.
var (
	Helm      = Tool{Name: "helm", Package: "helm.sh/helm/v3/cmd/helm@v3.22.0"}
	Kustomize = Tool{Name: "kustomize", Package: "sigs.k8s.io/kustomize/kustomize/v5@v5.8.1"}
	// Sops encrypts the fleet's secrets in tests, as users do, at the
	// version of the library Flotilla decrypts them with.
	Sops = Tool{Name: "sops", Package: "github.com/getsops/sops/v3/cmd/sops@v3.13.3"}
	// Promtool is Prometheus's own checker of rule files.
	Promtool = Tool{Name: "promtool", Package: "github.com/prometheus/prometheus/cmd/promtool@v0.316.0"}
)

var mu sync.Mutex

// Path returns the tool's binary, installing it into bin/tools/<version>
// the first time. It fails the test when it cannot: a comparison that
// cannot run must not pass.
func Path(t testing.TB, tool Tool) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	root, err := checkout.Root()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "bin", "tools", filepath.Base(tool.Package))
	bin := filepath.Join(dir, tool.Name)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	// Test binaries of several packages run at once: one installs, the
	// others wait for it (a lock file beside the tools).
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	t.Logf("installing %s into %s (once)", tool.Package, dir)
	cmd := exec.Command("go", "install", tool.Package)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("installing %s: %v\n%s", tool.Package, err, out)
	}
	return bin
}
