package main

import (
	"runtime"
	"testing"
	"time"
)

// TestAfterEachGCHearsEveryCollection: the adaptive memory limit of batch
// commands hears the live heap after every collection, not only the
// first.
func TestAfterEachGCHearsEveryCollection(t *testing.T) {
	heard := make(chan uint64, 16)
	afterEachGC(func(live uint64) {
		select {
		case heard <- live:
		default:
		}
	})
	deadline := time.After(30 * time.Second)
	for n := 0; n < 3; {
		runtime.GC()
		select {
		case live := <-heard:
			if live == 0 {
				t.Fatal("a live heap of 0 bytes")
			}
			n++
		case <-deadline:
			t.Fatalf("heard %d collections of 3", n)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
