// Package inorder hands results made in any order, by several goroutines,
// to a consumer in the order of their indexes, as soon as each and those
// before it are made: a batch (plans, renders) is printed as it goes, and
// memory holds what is in flight rather than the batch.
package inorder

import "sync"

// Handoff passes results 0, 1, 2... to use, in order. The goroutine that
// completes the next result in order hands it (and those after it that
// were waiting) over outside the lock; the others leave theirs and go on.
// use is never called twice at once. After use returns an error, nothing
// more is handed over and fail is called once with it.
type Handoff[T any] struct {
	use  func(i int, v T) error
	fail func(error)

	mu      sync.Mutex
	next    int
	waiting map[int]T // done, not handed over yet
	handing bool
	failed  bool
}

// New returns a Handoff to use; fail (may be nil) hears use's error.
func New[T any](use func(i int, v T) error, fail func(error)) *Handoff[T] {
	return &Handoff[T]{use: use, fail: fail, waiting: map[int]T{}}
}

// Done gives result i, once per index.
func (h *Handoff[T]) Done(i int, v T) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.waiting[i] = v
	if h.handing || h.failed {
		return
	}
	h.handing = true
	defer func() { h.handing = false }()
	for {
		v, ok := h.waiting[h.next]
		if !ok {
			return
		}
		delete(h.waiting, h.next)
		at := h.next
		h.next++
		h.mu.Unlock()
		err := h.use(at, v)
		h.mu.Lock()
		if err != nil {
			h.failed = true
			clear(h.waiting)
			if h.fail != nil {
				h.fail(err)
			}
			return
		}
	}
}

// Handed returns how many results were handed over.
func (h *Handoff[T]) Handed() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.next
}
