package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/apply"
)

// TestAgentKilledMidApplyAndPrune SIGKILLs a real agent process in the
// middle of applying 1,500 objects, then in the middle of pruning most of
// them. Each time the restarted agent finishes the job: every object the
// fleet wants is there, the ones it dropped are gone, another bundle's
// object is never touched, and the inventory lists exactly what the
// cluster has.
func TestAgentKilledMidApplyAndPrune(t *testing.T) {
	const total, kept = 1500, 10
	c := controlPlane(t)
	ns := testNamespace(t, c, "killed")
	kube, err := client.New(c.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fleetOf := func(n int) string {
		return fmt.Sprintf(`package fleet

import "list"

bundles: many: {
	namespace: cluster.labels.ns
	wait: false
	resources: [for i in list.Range(0, %d, 1) {apiVersion: "v1", kind: "ConfigMap", metadata: name: "cm-\(i)", data: index: "\(i)"}]
}
bundles: other: {namespace: cluster.labels.ns, resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "other"}]}
`, n)
	}
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": fleetOf(total)})
	cache := t.TempDir()
	args := []string{"agent", "--once", "--repo", repo.URL, "--name", "lab-1", "--label", "ns=" + ns,
		"--kubeconfig", c.Kubeconfig, "--cache-dir", cache, "--inventory-namespace", ns, "--identity-namespace", ns,
		"--no-status", "--listen", "", "--allow-mass-deletion"}
	count := func() int {
		var cms corev1.ConfigMapList
		if err := kube.List(context.Background(), &cms, client.InNamespace(ns), client.MatchingLabels{spec.BundleLabel: "many"}); err != nil {
			t.Fatal(err)
		}
		return len(cms.Items)
	}
	// killWhen starts the agent and SIGKILLs it once done() holds.
	killWhen := func(what string, done func() bool) {
		t.Helper()
		r := start(t, "flotilla", args...)
		deadline := time.Now().Add(2 * time.Minute)
		for !done() {
			select {
			case err := <-r.exited:
				t.Fatalf("%s: the agent ended first (%v):\n%s", what, err, logs(r))
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not reached in 2m:\n%s", what, logs(r))
			}
			time.Sleep(20 * time.Millisecond) // polling the API: the agent gives no signal mid-apply
		}
		if err := r.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-r.exited //nolint:errcheck // killed: the exit error says so, nothing more
	}
	finish := func() {
		t.Helper()
		r := start(t, "flotilla", args...)
		select {
		case err := <-r.exited:
			if err != nil {
				t.Fatalf("the restarted agent failed: %v\n%s", err, logs(r))
			}
		case <-time.After(3 * time.Minute):
			t.Fatal("the restarted agent did not finish in 3m")
		}
	}
	inventory := func() int {
		invs, broken, err := apply.ReadInventories(context.Background(), kube, ns)
		if err != nil || len(broken) > 0 || invs["many"] == nil {
			t.Fatalf("reading the inventory: %v %v", err, broken)
		}
		return len(invs["many"].Entries)
	}

	// Killed mid-apply.
	killWhen("200 objects applied", func() bool { return count() >= 200 })
	if n := count(); n >= total {
		t.Fatalf("the apply finished (%d objects) before the kill: nothing was tested", n)
	}
	finish()
	if n, inv := count(), inventory(); n != total || inv != total {
		t.Fatalf("after the restart: %d objects, %d in the inventory; want %d", n, inv, total)
	}

	// Killed mid-prune.
	repo.Commit(map[string]string{"fleet.cue": fleetOf(kept)})
	killWhen("200 objects pruned", func() bool { return count() <= total-200 })
	if n := count(); n <= kept {
		t.Fatalf("the prune finished (%d objects) before the kill: nothing was tested", n)
	}
	finish()
	if n, inv := count(), inventory(); n != kept || inv != kept {
		t.Fatalf("after the restart: %d objects, %d in the inventory; want %d", n, inv, kept)
	}
	for i := range kept {
		if err := kube.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("cm-%d", i)}, &corev1.ConfigMap{}); err != nil {
			t.Errorf("cm-%d, which the fleet keeps: %v", i, err)
		}
	}
	if err := kube.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "other"}, &corev1.ConfigMap{}); err != nil {
		t.Errorf("the other bundle's object: %v", err)
	}
}

// logs returns the lines the process has written to stderr so far.
func logs(r *running) string {
	var b strings.Builder
	for {
		select {
		case line, ok := <-r.lines:
			if !ok {
				return b.String()
			}
			b.WriteString(line + "\n")
		default:
			return b.String()
		}
	}
}
