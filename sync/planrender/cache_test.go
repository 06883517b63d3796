package planrender

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/flotilla-gitops/flotilla/fleet"
)

// TestCacheIsBounded: a renderer remembers renders up to its bound and
// lets the least recently used go; what it renders again is the same, and
// EachRendered hands every cluster's bundles over in order either way.
func TestCacheIsBounded(t *testing.T) {
	f, err := fleet.Load("../..", fleet.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	plans, problems, err := f.PlanInventory(t.Context(), nil)
	if err != nil || len(problems) > 0 {
		t.Fatal(err, problems)
	}
	renderAll := func(r *Renderer) []byte {
		var out bytes.Buffer
		next := 0
		for range 2 { // twice: the second time, what is remembered is not rendered again
			err := r.EachRendered(t.Context(), plans, nil, nil, func(i int, bundles []Bundle) error {
				if i != next%len(plans) {
					t.Errorf("cluster %d handed over at %d", i, next)
				}
				next++
				for _, b := range bundles {
					if b.Err != nil {
						t.Fatalf("%s: %v", b.Name, b.Err)
					}
					data, _ := json.Marshal(b.Result.Objects)
					out.Write(data)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		return out.Bytes()
	}
	unbounded := New("../..", Options{})
	want := renderAll(unbounded)
	distinct := unbounded.Distinct()
	if len(unbounded.cache) != distinct {
		t.Fatalf("unbounded: %d remembered of %d rendered", len(unbounded.cache), distinct)
	}

	bounded := New("../..", Options{})
	bounded.maxCached = 1 // each render lets the one before it go
	if got := renderAll(bounded); !bytes.Equal(got, want) {
		t.Error("a bounded cache rendered other objects")
	}
	if bounded.lru.Len() != 1 || bounded.held <= 0 {
		t.Errorf("bounded: %d results held (%d bytes), want 1", bounded.lru.Len(), bounded.held)
	}
	if bounded.Distinct() <= distinct {
		t.Errorf("bounded: %d renders, want more than the %d distinct ones (rendered again)", bounded.Distinct(), distinct)
	}

	stop := errors.New("the output folder is full")
	handed := 0
	err = New("../..", Options{}).EachRendered(context.Background(), plans, nil, nil, func(int, []Bundle) error {
		handed++
		return stop
	})
	if !errors.Is(err, stop) || handed != 1 {
		t.Errorf("after an error: %d handed over, error %v", handed, err)
	}
}
