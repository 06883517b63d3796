// Command synthfleet writes a synthetic fleet repository for benchmarks:
//
//	go run ./internal/synthfleet/cmd/synthfleet -dir /tmp/fleet -clusters 1000 -bundles 50
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/flotilla-gitops/flotilla/internal/synthfleet"
)

func main() {
	dir := flag.String("dir", "", "folder to write fleet.cue into (created)")
	clusters := flag.Int("clusters", 1000, "number of inventory clusters")
	inventoryOnly := flag.Bool("inventory-only", false, "write only inventory.cue (demo-like labels), to add to a copy of the demo fleet")
	bundles := flag.Int("bundles", 50, "number of bundles")
	sources := flag.Bool("sources", false, "also write the charts and kustomizations the bundles refer to, so that the fleet renders")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "synthfleet: -dir is required")
		os.Exit(2)
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "synthfleet:", err)
		os.Exit(1)
	}
	write := func() error {
		if err := synthfleet.Write(*dir, *clusters, *bundles); err != nil || !*sources {
			return err
		}
		return synthfleet.WriteSources(*dir, *bundles)
	}
	if *inventoryOnly {
		write = func() error { return synthfleet.WriteInventory(*dir, *clusters) }
	}
	if err := write(); err != nil {
		fmt.Fprintln(os.Stderr, "synthfleet:", err)
		os.Exit(1)
	}
}
