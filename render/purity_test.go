package render_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestRenderDoesNotImportFleetOrSync checks the layout rule: the renderers
// never import the fleet model or the cluster side.
func TestRenderDoesNotImportFleetOrSync(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/flotilla-gitops/flotilla/render/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		// internal/errtext is a leaf (standard library only) shared by
		// everything that shows errors; schemas/spec the Go form of the
		// bundle spec, a leaf that a render request carries.
		if strings.HasPrefix(dep, "github.com/flotilla-gitops/flotilla/") && !strings.HasPrefix(dep, "github.com/flotilla-gitops/flotilla/render") &&
			dep != "github.com/flotilla-gitops/flotilla/internal/errtext" && dep != "github.com/flotilla-gitops/flotilla/schemas/spec" &&
			dep != "github.com/flotilla-gitops/flotilla/internal/metaschema" && // a leaf naming JSON Schema's meta-schemas
			dep != "github.com/flotilla-gitops/flotilla/internal/english" { // a leaf that writes counts
			t.Errorf("render depends on %s", dep)
		}
	}
}
