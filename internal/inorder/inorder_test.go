package inorder_test

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/flotilla-gitops/flotilla/internal/inorder"
)

// TestHandoffInOrder: results given in any order by many goroutines reach
// use in index order, one call at a time; an error stops the hand-over
// and is reported once.
func TestHandoffInOrder(t *testing.T) {
	const n = 500
	for _, stopAt := range []int{-1, 137} {
		var inside atomic.Int32
		var got []int
		stop := errors.New("stop")
		var failed []error
		h := inorder.New(func(i int, v int) error {
			if inside.Add(1) != 1 {
				t.Error("use called while another call runs")
			}
			defer inside.Add(-1)
			if v != i*10 {
				t.Errorf("result %d is %d, want %d", i, v, i*10)
			}
			got = append(got, i)
			if i == stopAt {
				return stop
			}
			return nil
		}, func(err error) { failed = append(failed, err) })
		order := rand.Perm(n)
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for k := w; k < n; k += 8 {
					h.Done(order[k], order[k]*10)
				}
			})
		}
		wg.Wait()
		want := n
		if stopAt >= 0 {
			want = stopAt + 1
		}
		if len(got) != want || h.Handed() != want {
			t.Fatalf("stop at %d: %d handed over (%d), want %d", stopAt, len(got), h.Handed(), want)
		}
		for i, g := range got {
			if g != i {
				t.Fatalf("handed %d at position %d", g, i)
			}
		}
		if (stopAt >= 0) != (len(failed) == 1) || len(failed) > 1 || (len(failed) == 1 && !errors.Is(failed[0], stop)) {
			t.Errorf("stop at %d: failures reported %v", stopAt, failed)
		}
	}
}
