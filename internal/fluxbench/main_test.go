package main

import (
	"os"
	"testing"
)

// TestKilobytes reads this process's own /proc files as the benchmark
// reads its tools': the sizes come out in bytes, and lines that are not
// "Name: N kB" (smaps_rollup's address range) are left out.
func TestKilobytes(t *testing.T) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	kb := kilobytes(status)
	if kb["VmRSS:"] < 1<<20 || kb["VmRSS:"]%1024 != 0 {
		t.Errorf("VmRSS %d bytes: want this process's resident memory, in bytes", kb["VmRSS:"])
	}
	rollup, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		t.Fatal(err)
	}
	kb = kilobytes(rollup)
	if kb["Pss:"] <= 0 || kb["Pss_Anon:"] <= 0 || kb["Pss_Anon:"] > kb["Pss:"] {
		t.Errorf("Pss %d, Pss_Anon %d: want both, the anonymous part of the whole", kb["Pss:"], kb["Pss_Anon:"])
	}
	for name := range kb {
		if name[len(name)-1] != ':' {
			t.Errorf("%q read as a size", name)
		}
	}
	if rss, _, _ := memory([]int{os.Getpid()}); rss <= 0 {
		t.Errorf("memory of this process: %d", rss)
	}
}
