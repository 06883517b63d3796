package procfs

import (
	"os"
	"testing"
	"time"
)

// TestCPU: the process's CPU time is read, and grows while it works.
func TestCPU(t *testing.T) {
	start := CPU(os.Getpid())
	deadline := time.Now().Add(10 * time.Second)
	x := 0
	for CPU(os.Getpid()) <= start {
		if time.Now().After(deadline) {
			t.Fatalf("10 s of work and the CPU time read stays %s", start)
		}
		for i := range 1_000_000 {
			x += i
		}
	}
	_ = x
	if CPU(-1) != 0 {
		t.Error("a process that does not exist has CPU time")
	}
}
