package companion_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	ssautils "github.com/fluxcd/pkg/ssa/utils"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestArgoCDExamplesAreAccepted installs Argo CD's CRDs (from the argo-cd
// module make testenv reads) on a real API server and creates the
// ApplicationSets of docs/argocd/ with strict field validation: a field
// the schema does not know would be refused, as a misspelled one is here.
func TestArgoCDExamplesAreAccepted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, kube := argoCluster(t, ctx)
	strict := client.FieldValidation(metav1.FieldValidationStrict)
	sets := 0
	for _, f := range []string{"../docs/argocd/applicationset-hydrated.yaml", "../docs/argocd/plugin-generator.yaml"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objects, err := ssautils.ReadObjects(strings.NewReader(string(data)))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, o := range objects {
			if err := kube.Create(ctx, o, strict); err != nil {
				t.Errorf("%s: %s %s refused: %v", f, o.GetKind(), o.GetName(), err)
			}
			if o.GetKind() == "ApplicationSet" {
				sets++
				bad := o.DeepCopy()
				bad.SetName(o.GetName() + "-misspelled")
				bad.Object["spec"].(map[string]any)["generatorz"] = []any{}
				if err := kube.Create(ctx, bad, strict); err == nil || !strings.Contains(err.Error(), "generatorz") {
					t.Errorf("a misspelled field was not refused: %v", err)
				}
			}
		}
	}
	if sets != 2 {
		t.Errorf("created %d ApplicationSets, want 2", sets)
	}
}
