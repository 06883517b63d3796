package agent

import (
	"testing"
	"time"
)

// TestSpreadDelay: a webhook's wait is under the window, and draws
// differ (10,000 agents do not pick one instant).
func TestSpreadDelay(t *testing.T) {
	if spreadDelay(0) != 0 {
		t.Fatal("no window: at once")
	}
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := spreadDelay(time.Minute)
		if d < 0 || d >= time.Minute {
			t.Fatalf("wait %s outside [0, 1m)", d)
		}
		seen[d.Truncate(6*time.Second)] = true
	}
	if len(seen) < 10 {
		t.Errorf("1,000 waits fell in %d of the window's 10 tenths", len(seen))
	}
}
