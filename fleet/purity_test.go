package fleet_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestFleetIsPure checks the layout rule that package fleet needs no
// cluster and never imports the renderers or the cluster side: its
// dependencies hold no Kubernetes client and no Flotilla package but
// schemas (and its Go form, schemas/spec).
func TestFleetIsPure(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/flotilla-gitops/flotilla/fleet").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(dep, "k8s.io/client-go"),
			strings.HasPrefix(dep, "sigs.k8s.io/controller-runtime"),
			strings.HasPrefix(dep, "github.com/flotilla-gitops/flotilla/") &&
				dep != "github.com/flotilla-gitops/flotilla/fleet" &&
				dep != "github.com/flotilla-gitops/flotilla/schemas" &&
				dep != "github.com/flotilla-gitops/flotilla/schemas/spec" &&
				// a leaf (standard library only) shared by everything that
				// shows errors
				dep != "github.com/flotilla-gitops/flotilla/internal/errtext" &&
				// a leaf naming the JSON Schema meta-schemas
				dep != "github.com/flotilla-gitops/flotilla/internal/metaschema" &&
				// a leaf that writes counts ("1 cluster")
				dep != "github.com/flotilla-gitops/flotilla/internal/english" &&
				// a leaf that hands a batch's results over in order
				dep != "github.com/flotilla-gitops/flotilla/internal/inorder":
			t.Errorf("fleet depends on %s", dep)
		}
	}
}
