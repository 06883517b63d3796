package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"time"

	yamlv3 "go.yaml.in/yaml/v3"

	"github.com/spf13/cobra"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/internal/procfs"
)

// fleetFlags locate the fleet: the repository folder is the command's
// argument (default "."), --path the fleet package inside it.
type fleetFlags struct {
	path        string
	evalTimeout time.Duration
	evalMemory  string
	// stopGuard ends the guard once the fleet is evaluated and rendered
	// (apply then waits for readiness, which is the cluster's time).
	stopGuard context.CancelFunc
	// boundExit is the exit code when a bound stops the command: 1, or
	// preview's 2 ("trouble": a CI recipe must not read a stopped preview
	// as "something changes").
	boundExit int
}

func addFleetFlags(cmd *cobra.Command) *fleetFlags {
	f := &fleetFlags{}
	cmd.Flags().StringVar(&f.path, "path", ".", "`DIR` of fleet.cue inside the repository (imports and files never leave the repository)")
	cmd.Flags().DurationVar(&f.evalTimeout, "eval-timeout", 10*time.Minute, "stop the command when evaluating the fleet (and rendering) takes longer")
	cmd.Flags().StringVar(&f.evalMemory, "eval-memory", "4Gi", "stop the command when evaluating the fleet takes more memory (Kubernetes quantity)")
	return f
}

// load loads the fleet in the repository named by args (default "."). A
// signal stops the command while the CUE is being compiled. From here on
// the command's own evaluation of the fleet is bounded (guard).
func (f *fleetFlags) load(ctx context.Context, args []string) (*fleet.Fleet, error) {
	if err := f.startGuard(ctx); err != nil {
		return nil, err
	}
	dir := filepath.Join(repoDir(args), f.path)
	return interruptible(ctx, "loading the fleet in "+dir, func() (*fleet.Fleet, error) {
		return fleet.Load(repoDir(args), fleet.LoadOptions{Path: f.path, DisplayDir: dir})
	})
}

// startGuard bounds the command's own evaluation of the fleet from now on
// (--eval-timeout, --eval-memory), until stopGuard (a signal does not
// disarm it).
func (f *fleetFlags) startGuard(ctx context.Context) error {
	memory, err := quantity("--eval-memory", f.evalMemory)
	if err != nil {
		return err
	}
	if f.evalTimeout <= 0 {
		return errors.New("--eval-timeout must be positive")
	}
	// Not ended by a signal: it cancels ctx while an evaluation that cannot
	// observe it goes on, and the bounds must hold until the process exits
	// (signalGrace at most). ctx ending otherwise (the command returned)
	// ends the guard.
	var guardCtx context.Context
	guardCtx, f.stopGuard = context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		select {
		case <-ctx.Done():
			var sig *signalError
			if !errors.As(context.Cause(ctx), &sig) {
				f.stopGuard()
			}
		case <-guardCtx.Done():
		}
	}()
	exit := f.boundExit
	if exit == 0 {
		exit = exitFailed
	}
	guard(guardCtx, f.evalTimeout, memory, f.evalMemory, exit)
	return nil
}

// guard stops the process when it has worked for longer than timeout, or
// its resident memory passes memory, saying which bound it hit (exit
// code exit).
// A fleet is untrusted input (a pull request previewed in CI), and one
// cluster's CUE evaluation can neither be interrupted nor bounded in
// memory from inside: the command itself is. (The agent evaluates in a
// sandbox worker instead.) The guard ends with ctx.
func guard(ctx context.Context, timeout time.Duration, memory int64, memoryFlag string, exit int) {
	deadline := time.Now().Add(timeout)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				var why string
				if rss := procfs.Resident(0); rss > memory {
					why = fmt.Sprintf("evaluating the fleet took %d MiB of memory, more than --eval-memory %s", rss>>20, memoryFlag)
				} else if now.After(deadline) {
					why = fmt.Sprintf("evaluating the fleet took longer than --eval-timeout %s", timeout)
				} else {
					continue
				}
				fmt.Fprintf(os.Stderr, "flotilla: %s: stopped; raise the bound if the fleet legitimately needs it\n", why)
				os.Exit(exit)
			}
		}
	}()
}

// planCluster evaluates the fleet for one cluster; a signal stops the
// command during the evaluation.
func planCluster(ctx context.Context, f *fleet.Fleet, c fleet.Cluster) (*fleet.Plan, error) {
	return interruptible(ctx, "evaluating the fleet for cluster "+c.Name, func() (*fleet.Plan, error) {
		return f.Plan(c)
	})
}

// eachInventoryPlan plans every inventory cluster and hands each plan to
// use in name order as it is made, keeping none, telling stderr how far it
// got every few seconds on a large fleet; a signal stops it between
// clusters, and the error says how far it got. The clusters whose plan
// fails entirely are returned as problems. workers bounds the planning
// goroutines (fleet.EachPlanOn; 0: one per CPU).
func eachInventoryPlan(ctx context.Context, stderr io.Writer, f *fleet.Fleet, workers int, use func(*fleet.Plan) error) (fleet.Diagnostics, error) {
	total := len(f.Inventory())
	var done atomic.Int64
	stopProgress := everyFewSeconds(stderr, func() string {
		return fmt.Sprintf("planned %d of %s", done.Load(), english.Count(total, "cluster"))
	})
	problems, err := f.EachInventoryPlan(ctx, workers, func(n, _ int) { done.Store(int64(n)) }, use)
	stopProgress()
	if err != nil {
		return nil, fmt.Errorf("planning %s (%d planned): %w", english.Count(total, "cluster"), done.Load(), err)
	}
	return problems, nil
}

// progressEvery is how often long batch work says how far it got.
const progressEvery = 5 * time.Second

// everyFewSeconds prints what status says to w every progressEvery until
// the returned function is called. Quick work prints nothing.
func everyFewSeconds(w io.Writer, status func() string) (stop func()) {
	ticker := time.NewTicker(progressEvery)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-ticker.C:
				fmt.Fprintln(w, status())
			case <-done:
				return
			}
		}
	}()
	return func() {
		ticker.Stop()
		close(done)
		<-finished
	}
}

// identityFlags say which cluster to evaluate: an inventory entry, or an
// identity given on the command line.
type identityFlags struct {
	cluster   string
	name      string
	region    string
	labels    []string
	factsFile string
}

func addIdentityFlags(cmd *cobra.Command) *identityFlags {
	i := &identityFlags{}
	fs := cmd.Flags()
	fs.StringVar(&i.cluster, "cluster", "", "evaluate the cluster `NAME` of the fleet's clusters inventory")
	fs.StringVar(&i.name, "name", "", "evaluate a cluster named `NAME` (instead of --cluster)")
	fs.StringVar(&i.region, "region", "", "the cluster's `REGION` (overrides the inventory's with --cluster)")
	fs.StringArrayVar(&i.labels, "label", nil, "a cluster label as `KEY=VALUE`, repeatable (added to the inventory's with --cluster)")
	fs.StringVar(&i.factsFile, "facts", "", "a YAML or JSON `FILE` of discovered facts (kubernetesVersion, apiGroups, regions, zones, nodes)")
	completeFromFleet(cmd, "cluster", completeClusters)
	return i
}

// given reports whether any identity flag was set.
func (i *identityFlags) given() bool {
	return i.cluster != "" || i.name != "" || i.region != "" || len(i.labels) > 0 || i.factsFile != ""
}

// resolve builds the identity the flags describe.
func (i *identityFlags) resolve(f *fleet.Fleet) (fleet.Cluster, error) {
	var c fleet.Cluster
	switch {
	case i.cluster != "" && i.name != "":
		return c, errors.New("give either --cluster (an inventory entry) or --name (an identity of your own), not both")
	case i.cluster != "":
		var err error
		if c, err = f.InventoryCluster(i.cluster); err != nil {
			return c, err
		}
	case i.name != "":
		c.Name = i.name
	default:
		return c, missingIdentity(f)
	}
	if i.region != "" {
		c.Region = i.region
	}
	if len(i.labels) > 0 {
		labels := make(map[string]string, len(c.Labels)+len(i.labels))
		for k, v := range c.Labels {
			labels[k] = v
		}
		for _, l := range i.labels {
			k, v, ok := strings.Cut(l, "=")
			if !ok || k == "" {
				return c, fmt.Errorf("--label %q: want key=value", l)
			}
			labels[k] = v
		}
		c.Labels = labels
	}
	if i.factsFile != "" {
		data, err := os.ReadFile(i.factsFile)
		if err != nil {
			return c, fmt.Errorf("--facts: %w", err)
		}
		facts, err := readFacts(data)
		if err != nil {
			return c, fmt.Errorf("--facts %s: %w", i.factsFile, err)
		}
		c.Facts = facts
	}
	return c, c.Validate()
}

// readFacts reads a facts file (YAML or JSON) keeping every string as
// written: `kubernetesVersion: 1.30` is "1.30", not the number 1.3 that a
// YAML-to-JSON conversion makes of it. Unknown fields are refused.
func readFacts(data []byte) (fleet.Facts, error) {
	var doc yamlv3.Node
	var facts fleet.Facts
	if err := yamlv3.Unmarshal(data, &doc); err != nil {
		return facts, err
	}
	if len(doc.Content) == 0 {
		return facts, nil
	}
	v, err := factsValue(doc.Content[0], "")
	if err != nil {
		return facts, err
	}
	j, err := json.Marshal(v)
	if err != nil {
		return facts, err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	return facts, dec.Decode(&facts)
}

// factsValue turns a YAML node into JSON values, every scalar a string
// but for the count of nodes.
func factsValue(n *yamlv3.Node, key string) (any, error) {
	switch n.Kind {
	case yamlv3.MappingNode:
		m := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			v, err := factsValue(n.Content[i+1], k)
			if err != nil {
				return nil, err
			}
			m[k] = v
		}
		return m, nil
	case yamlv3.SequenceNode:
		l := []any{}
		for _, c := range n.Content {
			v, err := factsValue(c, key)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		return l, nil
	case yamlv3.ScalarNode:
		if key == "nodes" {
			var count int
			if err := n.Decode(&count); err != nil {
				return nil, fmt.Errorf("line %d: nodes: %w", n.Line, err)
			}
			return count, nil
		}
		return n.Value, nil
	case yamlv3.AliasNode:
		return factsValue(n.Alias, key)
	}
	return nil, fmt.Errorf("line %d: not a value", n.Line)
}

// missingIdentity explains how to name a cluster, listing the inventory.
func missingIdentity(f *fleet.Fleet) error {
	var names []string
	for _, c := range f.Inventory() {
		names = append(names, c.Name)
	}
	if len(names) == 0 {
		return errors.New("which cluster? give --name NAME (with --region and --label k=v), or add a `clusters` inventory to the fleet")
	}
	return fmt.Errorf("which cluster? give --cluster NAME (one of %s), --name NAME with --region and --label k=v, or --all",
		strings.Join(names, ", "))
}

// agentGCPercent is the agent's garbage collector target, unless GOGC
// says otherwise. An agent's live heap is small (under 20 MiB idle at
// 1,000 objects) and its peak is the headroom Go's default leaves during a
// sync (twice the live heap, while it holds the objects it applies and the
// answers of their dry-runs): collecting at 1.5 times brought the agent's
// share of the first sync's peak from 51 to 40 MiB of its own memory at
// 1,000 objects, the sync no slower (bench/RESULTS.md). Idle, it collects
// rarely either way.
const agentGCPercent = 50

// tuneGCForAgent applies agentGCPercent unless GOGC is set.
func tuneGCForAgent() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(agentGCPercent)
	}
}

// batchGCPercent is the garbage collector target of commands that evaluate
// the fleet for many clusters: CUE evaluation allocates heavily, and
// collecting four times less often made `plan --all` about 20% faster. But
// a heap five times the live data is memory no CI runner has to spare: at
// 1,000 × 50, `plan --all` holds about 300 MB live and peaked at 1.9 GB.
// So the heap is also capped (a soft memory limit) at batchMemoryFloor, or
// at batchLiveFactor times the live heap when the fleet is larger: the
// first keeps a mid-sized fleet under a gigabyte for about a tenth more
// time, the second keeps a large fleet's collections from running back to
// back at the cap (collecting at twice the live heap is Go's default).
// GOGC and GOMEMLIMIT, when set, win.
const (
	batchGCPercent   = 400
	batchMemoryFloor = 800 << 20
	batchLiveFactor  = 2
)

// tuneGCForBatch applies batchGCPercent and the adaptive memory limit
// unless GOGC or GOMEMLIMIT say otherwise.
func tuneGCForBatch() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(batchGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(batchMemoryFloor)
		afterEachGC(func(live uint64) {
			debug.SetMemoryLimit(max(batchMemoryFloor, int64(live)*batchLiveFactor))
		})
	}
}

// afterEachGC calls f with the live heap (bytes marked by the last
// collection) after every garbage collection, from a finalizer that
// re-arms itself: the runtime has no hook of its own.
func afterEachGC(f func(live uint64)) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	var arm func()
	arm = func() {
		sentinel := new([64]byte)
		runtime.SetFinalizer(sentinel, func(*[64]byte) {
			metrics.Read(sample)
			if sample[0].Value.Kind() == metrics.KindUint64 {
				f(sample[0].Value.Uint64())
			}
			arm()
		})
	}
	arm()
}
