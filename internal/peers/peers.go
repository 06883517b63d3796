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
	t.Logf("installing %s into %s (once)", tool.Package, dir)
	cmd := exec.Command("go", "install", tool.Package)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("installing %s: %v\n%s", tool.Package, err, out)
	}
	return bin
}
