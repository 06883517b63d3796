package render_test

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"

	"github.com/flotilla-gitops/flotilla/internal/testenv"
	"github.com/flotilla-gitops/flotilla/render"
)

// TestBuiltinScopeMatchesAPIServer checks the built-in list of namespaced
// and cluster-scoped kinds against a real kube-apiserver's discovery: every
// kind it serves must be known, with the same scope.
func TestBuiltinScopeMatchesAPIServer(t *testing.T) {
	c := testenv.StartT(t, testenv.Options{Name: "scope"})
	dc, err := discovery.NewDiscoveryClientForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	lists, err := dc.ServerPreferredResources()
	if err != nil {
		t.Fatal(err)
	}
	scope := render.BuiltinScope()
	checked := 0
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range l.APIResources {
			namespaced, known := scope.Namespaced(gv.WithKind(r.Kind))
			switch {
			case !known:
				t.Errorf("%s %s is served but not in the built-in list", gv, r.Kind)
			case namespaced != r.Namespaced:
				t.Errorf("%s %s: built-in list says namespaced=%t, the API server %t", gv, r.Kind, namespaced, r.Namespaced)
			}
			checked++
		}
	}
	if checked < 50 {
		t.Errorf("only %d kinds discovered", checked)
	}
}
