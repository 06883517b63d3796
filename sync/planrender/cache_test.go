package planrender

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
)

// TestCacheIsBounded: a renderer remembers renders up to its bound and
// lets the least recently used go; what it renders again is the same, and
// a Stream hands every cluster's bundles over in order either way.
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
			err := renderEach(t.Context(), r, plans, func(i int, bundles []Bundle) error {
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
	err = renderEach(context.Background(), New("../..", Options{}), plans, func(int, []Bundle) error {
		handed++
		return stop
	})
	if !errors.Is(err, stop) || handed != 1 {
		t.Errorf("after an error: %d handed over, error %v", handed, err)
	}
}

// TestStreamKeepsOrderAndStops: plans added one at a time are handed over
// in order with their bundles, and once use fails Add refuses more and
// Wait says why.
func TestStreamKeepsOrderAndStops(t *testing.T) {
	f, err := fleet.Load("../..", fleet.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	plans, problems, err := f.PlanInventory(t.Context(), nil)
	if err != nil || len(problems) > 0 || len(plans) < 2 {
		t.Fatal(len(plans), err, problems)
	}
	want, err := New("../..", Options{}).RenderPlans(t.Context(), plans, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	s := New("../..", Options{}).Stream(t.Context(), nil, nil, func(i int, p *fleet.Plan, bundles []Bundle) error {
		got = append(got, i)
		if p != plans[i%len(plans)] {
			t.Errorf("plan %d handed over with another plan", i)
		}
		for j, b := range bundles {
			w := want[i%len(plans)][j]
			if b.Name != w.Name || (b.Err == nil) != (w.Err == nil) || b.Err == nil && len(b.Result.Objects) != len(w.Result.Objects) {
				t.Errorf("plan %d bundle %d: %s (%v), want %s (%v)", i, j, b.Name, b.Err, w.Name, w.Err)
			}
		}
		if len(bundles) != len(want[i%len(plans)]) {
			t.Errorf("plan %d: %d bundles, want %d", i, len(bundles), len(want[i%len(plans)]))
		}
		return nil
	})
	for i := range 3 * len(plans) { // each plan three times: the later ones from the cache
		if err := s.Add(i, plans[i%len(plans)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Wait(); err != nil {
		t.Fatal(err)
	}
	for k, i := range got {
		if i != k {
			t.Fatalf("handed over %v, want 0 to %d in order", got, 3*len(plans)-1)
		}
	}
	if len(got) != 3*len(plans) {
		t.Fatalf("%d plans handed over, want %d", len(got), 3*len(plans))
	}

	stop := errors.New("the output folder is full")
	s = New("../..", Options{}).Stream(t.Context(), nil, nil, func(int, *fleet.Plan, []Bundle) error { return stop })
	// Add refuses plans soon after use failed on the first (bounded by
	// time, not by a count of plans: the machine may be slow).
	deadline := time.Now().Add(time.Minute)
	for i := 0; s.Add(i, plans[i%len(plans)]) == nil; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("Add still takes plans a minute after use failed (%d added)", i)
		}
	}
	if err := s.Wait(); !errors.Is(err, stop) {
		t.Errorf("Wait after use failed: %v", err)
	}
}

// renderEach streams plans through r, handing use each one's bundles.
func renderEach(ctx context.Context, r *Renderer, plans []*fleet.Plan, use func(i int, bundles []Bundle) error) error {
	s := r.Stream(ctx, nil, nil, func(i int, _ *fleet.Plan, bundles []Bundle) error { return use(i, bundles) })
	for i, p := range plans {
		if s.Add(i, p) != nil {
			break
		}
	}
	return s.Wait()
}
