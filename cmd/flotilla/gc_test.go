package main

import (
	"runtime"
	"runtime/debug"
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

// TestAgentGCPercent: the agent collects at agentGCPercent unless GOGC is
// set, which wins.
func TestAgentGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for _, env := range []string{"", "200"} {
		t.Setenv("GOGC", env)
		debug.SetGCPercent(100)
		tuneGCForAgent()
		want := agentGCPercent
		if env != "" {
			want = 100 // left as the runtime read it from GOGC
		}
		if got := debug.SetGCPercent(100); got != want {
			t.Errorf("GOGC=%q: the agent collects at %d%%, want %d%%", env, got, want)
		}
	}
}
