// Command demo is `make demo`: Flotilla's whole mission on local clusters.
// It starts full clusters (kube-apiserver, etcd, controller-manager,
// scheduler, kwok nodes labelled with their region), serves a fleet
// repository made from the checkout over HTTP, runs one `flotilla agent`
// per cluster, waits for every cluster to report Ready on the status
// branch, then commits a change that also brings a rollout in waves,
// previews it with plan and render, watches it reach the canary first,
// wait for an approval, approves it, waits for the agents to converge and
// shows what changed in each cluster, read from the clusters' API.
//
//	go run ./internal/demo [--ci] [--dir .demo]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fluxcd/pkg/gittestserver"
	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/internal/testenv"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// cluster is one demo cluster, named and labelled as in the demo fleet's
// inventory (fleet.cue).
type cluster struct {
	name, region string
	labels       []string
	// wantReplicas and wantPolicy are what the demo's change should leave:
	// web's replicas, and whether the EU-only NetworkPolicy is there.
	wantReplicas int32
	wantPolicy   bool
	env          *testenv.Cluster
	agent        *exec.Cmd
}

var fleetClusters = []*cluster{
	{name: "prod-eu-1", region: "eu-west-1", labels: []string{"env=prod", "class=regulated", "role=active"}, wantReplicas: 5, wantPolicy: true},
	{name: "prod-us-1", region: "us-east-1", labels: []string{"env=prod", "class=standard", "role=active"}, wantReplicas: 2},
	{name: "staging-eu-1", region: "eu-west-1", labels: []string{"env=staging", "class=standard", "role=active"}, wantReplicas: 2, wantPolicy: true},
}

func main() {
	ctrllog.SetLogger(logr.Discard())
	log.SetOutput(io.Discard) // the git server logs every request with the standard logger
	ci := flag.Bool("ci", false, "run unattended: no pause, exit non-zero if a step failed")
	dir := flag.String("dir", ".demo", "folder for kubeconfigs, logs, the git server and the status page")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{ci: *ci}
	err := d.run(ctx, *dir)
	d.cleanup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n(logs in %s)\n", err, *dir)
		os.Exit(1)
	}
}

type demo struct {
	ci       bool
	dir      string
	root     string // the checkout
	flotilla string // bin/flotilla
	git      *gittestserver.GitServer
	url      string
	work     string
	// rev1 is the first commit of the fleet, rev2 the demo's change, rev3
	// its bad change (rolled back).
	rev1, rev2, rev3 string

	// agentBinary is the image's binary the agents run; stopRegistry
	// stops the registry it came from.
	agentBinary  string
	stopRegistry func()
}

// demoStep is one named step of the demo. A step that fails ends the demo,
// and the error names the step.
type demoStep struct {
	name string
	run  func(ctx context.Context) error
}

func (d *demo) run(ctx context.Context, dir string) error {
	if err := d.prepare(dir); err != nil {
		return err
	}
	for _, s := range d.steps() {
		fmt.Printf("\n==> %s\n", s.name)
		if err := s.run(ctx); err != nil {
			return fmt.Errorf("step %q failed: %w", s.name, err)
		}
	}
	for _, c := range fleetClusters {
		fmt.Printf("    kubectl --kubeconfig %s get deploy -A\n", c.env.Kubeconfig)
	}
	fmt.Printf("    status page: %s\n", filepath.Join(d.dir, "status.html"))
	if d.ci {
		return nil
	}
	fmt.Println("\nThe clusters and agents keep running: press Ctrl-C (or run `make demo-down`) to stop them.")
	<-ctx.Done()
	return nil
}

// prepare finds the checkout and bin/flotilla and makes a fresh demo folder.
func (d *demo) prepare(dir string) error {
	var err error
	if d.root, err = os.Getwd(); err != nil {
		return err
	}
	if d.dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	d.flotilla = filepath.Join(d.root, "bin", "flotilla")
	if _, err := os.Stat(d.flotilla); err != nil {
		return fmt.Errorf("%s is missing: run `make build` (make demo does)", d.flotilla)
	}
	if err := os.RemoveAll(d.dir); err != nil {
		return err
	}
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d.dir, "demo.pid"), []byte(fmt.Sprint(os.Getpid())), 0o644)
}

// steps are the demo, in order. Every step checks what it did: the demo
// is `make test`'s end-to-end test, so a step that prints a wrong result
// or whose command exits non-zero fails it.
func (d *demo) steps() []demoStep {
	return []demoStep{
		{fmt.Sprintf("starting %d full clusters (apiserver, etcd, controller-manager, scheduler, kwok nodes)", len(fleetClusters)), d.startClusters},
		{"serving the fleet repository over HTTP", d.startGit},
		{"the agent's image in a local registry, and flotilla bootstrap in each cluster", d.installAgents},
		{"starting one flotilla agent per cluster, from the image's binary (kwok's nodes run no process)", d.startAgents},
		{"waiting for every cluster to report the first commit Ready on the status branch", func(ctx context.Context) error {
			return d.waitReady(ctx, d.rev1)
		}},
		{"flotilla status", func(ctx context.Context) error {
			return d.flotillaCmd(ctx, nil, "status", "--repo", d.url, "--branch", "main")
		}},
		{"a change: 5 replicas of web in the active EU prod region, and an EU-only data-residency policy", d.commitChange},
		{"preview for every cluster before it lands: flotilla plan --all", func(ctx context.Context) error {
			return d.flotillaCmd(ctx, []string{"eu-data-residency", "prod-eu-1", "prod-us-1", "staging-eu-1"}, "plan", d.work, "--all")
		}},
		{"flotilla render --cluster staging-eu-1 --bundle eu-data-residency", func(ctx context.Context) error {
			return d.flotillaCmd(ctx, []string{"kind: NetworkPolicy", "name: eu-egress-only"},
				"render", d.work, "--cluster", "staging-eu-1", "--bundle", "eu-data-residency")
		}},
		{"pushing the change", func(context.Context) error { return d.push() }},
		{"the canary wave first: staging-eu-1 takes the change, the prod clusters keep theirs and wait", d.waitCanary},
		{"flotilla status: the rollout, wave by wave", func(ctx context.Context) error {
			return d.flotillaCmd(ctx, []string{"rollout of " + d.rev2[:7], "canary", "Waiting"}, "status", "--repo", d.url, "--branch", "main")
		}},
		{fmt.Sprintf("after the canary's %s bake, wave eu waits for an approval", demoBake), d.waitApproval},
		{"flotilla rollout approve --wave eu", func(ctx context.Context) error {
			return d.flotillaCmd(ctx, []string{"approved wave eu"}, "rollout", "approve", "--repo", d.url, "--wave", "eu",
				"--revision", d.rev2[:7], "--by", "Demo Operator <ops@example.com>", "-m", "canary healthy")
		}},
		{"waiting for eu, then (after its bake) the rest, to converge on the change", func(ctx context.Context) error {
			if err := d.waitReady(ctx, d.rev2); err != nil {
				return err
			}
			return d.checkOrder(ctx)
		}},
		{"flotilla status: how long the change took, wave by wave", func(ctx context.Context) error {
			return d.flotillaCmd(ctx, []string{d.rev2[:7], "Done", "READY AFTER THE COMMIT", "all Ready"}, "status", "--repo", d.url, "--branch", "main")
		}},
		{"what changed, read from each cluster's API", d.showChanges},
		{"a bad change: an audit Deployment whose pods fit no node (the rollout says onFailure: rollback)", d.commitBroken},
		{fmt.Sprintf("the canary rolls it back once its %s progressDeadline passes; the prod waves halt and never take it", demoDeadline), d.waitRollback},
		{"flotilla status: the canary RolledBack, the rollout halted", func(ctx context.Context) error {
			return d.flotillaCmd(ctx, []string{"RolledBack", "rolled back from " + d.rev3[:7], "Halted"}, "status", "--repo", d.url, "--branch", "main")
		}},
		{"flotilla rollout explain: why, from Git alone", func(ctx context.Context) error {
			return d.flotillaCmd(ctx, []string{"saw " + d.rev3[:7], "RolledBack", "took " + d.rev3[:7] + " and rolled back"},
				"rollout", "explain", "--repo", d.url, "--cluster", "staging-eu-1", "--revision", d.rev3[:7])
		}},
		{"the status page: flotilla status -o html", d.writeStatusPage},
	}
}

// startClusters starts the full clusters in parallel.
func (d *demo) startClusters(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range fleetClusters {
		g.Go(func() error {
			env, err := testenv.Start(gctx, testenv.Options{Name: c.name, Full: true, Region: c.region, Dir: filepath.Join(d.dir, c.name)})
			c.env = env
			if err == nil {
				fmt.Printf("    %s (%s) ready: %s\n", c.name, c.region, env.Kubeconfig)
			}
			return err
		})
	}
	return g.Wait()
}

// startGit makes the fleet repository from the checkout (fleet.cue,
// examples/, deploy/) and serves it over HTTP.
func (d *demo) startGit(context.Context) error {
	gitRoot := filepath.Join(d.dir, "git")
	if err := os.MkdirAll(gitRoot, 0o755); err != nil {
		return err
	}
	d.git = gittestserver.NewGitServer(gitRoot)
	if err := d.git.StartHTTP(); err != nil {
		return err
	}
	bare := filepath.Join(gitRoot, "fleet.git")
	d.work = filepath.Join(d.dir, "fleet")
	for _, args := range [][]string{
		{"init", "--bare", "-b", "main", bare},
		{"init", "-b", "main", d.work},
	} {
		if err := run(d.dir, args...); err != nil {
			return err
		}
	}
	for _, p := range []string{"fleet.cue", "examples", "deploy"} {
		if out, err := exec.Command("cp", "-r", filepath.Join(d.root, p), d.work).CombinedOutput(); err != nil {
			return fmt.Errorf("copying %s: %w\n%s", p, err, out)
		}
	}
	for _, args := range [][]string{
		{"remote", "add", "origin", bare},
		{"add", "-A"},
		{"commit", "-q", "-m", "The demo fleet"},
	} {
		if err := run(d.work, args...); err != nil {
			return err
		}
	}
	if err := d.push(); err != nil {
		return err
	}
	d.url = d.git.HTTPAddress() + "/fleet.git"
	var err error
	if d.rev1, err = revision(d.work); err != nil {
		return err
	}
	fmt.Printf("    %s at %s\n", d.url, d.rev1[:7])
	return nil
}

func (d *demo) push() error { return run(d.work, "push", "-q", "origin", "main") }

// startAgents starts `flotilla agent` for each cluster, logging to its
// folder.
func (d *demo) startAgents(context.Context) error {
	for _, c := range fleetClusters {
		args := []string{"agent", "--repo", d.url, "--name", c.name, "--region", c.region,
			"--kubeconfig", c.env.Kubeconfig, "--interval", "5s", "--listen", "",
			"--cache-dir", filepath.Join(d.dir, c.name, "checkouts"), "--log-format", "json"}
		for _, l := range c.labels {
			args = append(args, "--label", l)
		}
		log, err := os.Create(filepath.Join(d.dir, c.name, "agent.log"))
		if err != nil {
			return err
		}
		c.agent = exec.Command(d.agentBinary, args...)
		c.agent.Stdout, c.agent.Stderr = log, log
		if err := c.agent.Start(); err != nil {
			return err
		}
		fmt.Printf("    %s: flotilla %s\n", c.name, strings.Join(args[:7], " "))
	}
	return nil
}

// waitReady polls the status branch until every cluster applied rev and
// is Ready.
func (d *demo) waitReady(ctx context.Context, rev string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for {
		ready := 0
		if snap, err := report.Read(ctx, d.url, "", nil); err == nil {
			for _, st := range snap.Statuses {
				if st.AppliedRevision == rev && st.Phase == report.ClusterReady {
					ready++
				}
			}
		}
		if ready == len(fleetClusters) {
			fmt.Printf("    %s Ready at %s\n", english.Count(ready, "cluster"), rev[:7])
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("clusters not Ready at %s within 5 minutes (%d of %d): see the agent logs", rev[:7], ready, len(fleetClusters))
		case <-time.After(2 * time.Second):
		}
	}
}

// commitChange edits the demo fleet and commits (the push comes after the
// preview).
func (d *demo) commitChange(context.Context) error {
	path := filepath.Join(d.work, "fleet.cue")
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	const before, after = "values: replicaCount: 4", "values: replicaCount: 5"
	if !strings.Contains(string(data), before) {
		return fmt.Errorf("fleet.cue no longer sets %q: update the demo's change", before)
	}
	src := strings.Replace(string(data), before, after, 1)
	src += `
// Added by the demo: this commit and later ones reach the fleet in waves.
rollout: {
	waves: [
		{name: "canary", names: ["staging-*"]},
		{name: "eu", regions: ["eu-*"], approve: true},
		{name: "rest"},
	]
	bake: "` + demoBake + `"
	// A bundle not Ready within a minute of a new revision goes back.
	onFailure:        "rollback"
	progressDeadline: "` + demoDeadline + `"
}
`
	src += `
// Added by the demo: EU clusters keep a data-residency policy.
bundles: "eu-data-residency": {
	namespace: "storefront"
	target: regions: ["eu-*"]
	dependsOn: ["team-storefront"]
	resources: [{
		apiVersion: "networking.k8s.io/v1"
		kind:       "NetworkPolicy"
		metadata: name: "eu-egress-only"
		spec: {
			podSelector: {}
			policyTypes: ["Egress"]
			egress: [{to: [{ipBlock: cidr: "10.0.0.0/8"}]}]
		}
	}]
}
`
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		return err
	}
	if err := run(d.work, "commit", "-q", "-am", "web: 5 replicas in eu-west prod; EU data-residency policy"); err != nil {
		return err
	}
	d.rev2, err = revision(d.work)
	return err
}

// demoBake is the demo rollout's bake: short, to keep the demo short;
// demoDeadline its progressDeadline.
const (
	demoBake     = "10s"
	demoDeadline = "60s"
)

// commitBroken commits a bad change: a Deployment in the EU
// data-residency bundle whose pods fit no node, so it is never Ready.
func (d *demo) commitBroken(context.Context) error {
	path := filepath.Join(d.work, "fleet.cue")
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	const anchor = `egress: [{to: [{ipBlock: cidr: "10.0.0.0/8"}]}]
		}
	}`
	if !strings.Contains(string(data), anchor) {
		return errors.New("fleet.cue no longer has the demo's data-residency policy: update the demo's bad change")
	}
	src := strings.Replace(string(data), anchor, anchor+`, {
		// Added by the demo: a bad change, whose pods fit no node.
		apiVersion: "apps/v1"
		kind:       "Deployment"
		metadata: name: "eu-audit"
		spec: {
			selector: matchLabels: app: "eu-audit"
			template: metadata: labels: app: "eu-audit"
			template: spec: {
				nodeSelector: "example.flotilla.dev/pool": "nowhere"
				containers: [{name: "audit", image: "registry.example.com/eu-audit:1"}]
			}
		}
	}`, 1)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		return err
	}
	if err := run(d.work, "commit", "-q", "-am", "eu-data-residency: an audit Deployment (a bad change: its pods fit no node)"); err != nil {
		return err
	}
	if d.rev3, err = revision(d.work); err != nil {
		return err
	}
	return d.push()
}

// waitRollback waits for the canary to roll the bad change back, and
// checks that the later waves halted without taking it.
func (d *demo) waitRollback(ctx context.Context) error {
	var message string
	err := d.waitStatuses(ctx, "the canary rolled back, the others halted", func(s map[string]report.Status) bool {
		canary := s["staging-eu-1"]
		message = canary.Message
		if canary.Phase != report.ClusterRolledBack || canary.Rollout == nil || canary.Rollout.Revision != d.rev3 {
			return false
		}
		for _, name := range []string{"prod-eu-1", "prod-us-1"} {
			st := s[name]
			if st.Rollout == nil || st.Rollout.Revision != d.rev3 || st.Rollout.State != report.RolloutHalted || st.AppliedRevision != d.rev2 {
				return false
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	fmt.Printf("    staging-eu-1: %s\n", message)
	return nil
}

// waitStatuses polls the status branches until cond holds for them.
func (d *demo) waitStatuses(ctx context.Context, what string, cond func(map[string]report.Status) bool) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for {
		if snap, err := report.Read(ctx, d.url, "", nil); err == nil {
			byName := map[string]report.Status{}
			for _, st := range snap.Statuses {
				byName[st.Cluster.Name] = st
			}
			if cond(byName) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not within 5 minutes (see the agent logs)", what)
		case <-time.After(time.Second):
		}
	}
}

// waitCanary waits for the canary to be Ready at the change while the
// prod clusters report they wait, still at the first commit.
func (d *demo) waitCanary(ctx context.Context) error {
	err := d.waitStatuses(ctx, "the canary at the change, the others waiting", func(s map[string]report.Status) bool {
		canary := s["staging-eu-1"]
		if canary.AppliedRevision != d.rev2 || canary.Phase != report.ClusterReady {
			return false
		}
		for _, name := range []string{"prod-eu-1", "prod-us-1"} {
			st := s[name]
			if st.Rollout == nil || st.Rollout.Revision != d.rev2 || st.Rollout.State != report.RolloutWaiting {
				return false
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	// Nothing of the change reached prod: its Deployment still has 4.
	return d.checkReplicas(ctx, "prod-eu-1", 4)
}

// waitApproval waits for prod-eu-1 to say its wave waits for an approval
// (the canary's bake is over), still at the first commit.
func (d *demo) waitApproval(ctx context.Context) error {
	var message string
	err := d.waitStatuses(ctx, "wave eu waiting for an approval", func(s map[string]report.Status) bool {
		st := s["prod-eu-1"]
		if st.Rollout != nil {
			message = st.Rollout.Message
		}
		return st.Rollout != nil && st.Rollout.Revision == d.rev2 && strings.Contains(st.Rollout.Message, "approval")
	})
	if err != nil {
		return err
	}
	fmt.Printf("    prod-eu-1: %s\n", message)
	return d.checkReplicas(ctx, "prod-eu-1", 4)
}

// checkOrder checks that the rest wave became Ready at the change a bake
// after the eu wave did.
func (d *demo) checkOrder(ctx context.Context) error {
	snap, err := report.Read(ctx, d.url, "", nil)
	if err != nil {
		return err
	}
	since := map[string]time.Time{}
	for _, st := range snap.Statuses {
		if st.ReadySince != nil {
			since[st.Cluster.Name] = *st.ReadySince
		}
	}
	bake, _ := time.ParseDuration(demoBake)
	eu, us := since["prod-eu-1"], since["prod-us-1"]
	fmt.Printf("    Ready at %s: staging-eu-1 %s, prod-eu-1 %s, prod-us-1 %s\n", d.rev2[:7],
		since["staging-eu-1"].Format(time.TimeOnly), eu.Format(time.TimeOnly), us.Format(time.TimeOnly))
	if us.Sub(eu) < bake {
		return fmt.Errorf("prod-us-1 (wave rest) was Ready at %s, less than the bake after prod-eu-1 (wave eu) at %s", us, eu)
	}
	return nil
}

// checkReplicas checks web's replicas in a cluster.
func (d *demo) checkReplicas(ctx context.Context, name string, want int32) error {
	for _, c := range fleetClusters {
		if c.name != name {
			continue
		}
		kube, err := client.New(c.env.Config, client.Options{})
		if err != nil {
			return err
		}
		var web appsv1.Deployment
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "storefront", Name: "web"}, &web); err != nil {
			return fmt.Errorf("%s: reading Deployment storefront/web: %w", name, err)
		}
		if web.Spec.Replicas == nil || *web.Spec.Replicas != want {
			return fmt.Errorf("%s: web has %v replicas, want %d: the change went past the rollout", name, web.Spec.Replicas, want)
		}
		fmt.Printf("    %s keeps web at %d replicas\n", name, want)
		return nil
	}
	return fmt.Errorf("no cluster %s", name)
}

// showChanges reads what changed from each cluster's API and checks it
// against what the change asked for.
func (d *demo) showChanges(ctx context.Context) error {
	var wrong []string
	for _, c := range fleetClusters {
		kube, err := client.New(c.env.Config, client.Options{})
		if err != nil {
			return err
		}
		var web appsv1.Deployment
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "storefront", Name: "web"}, &web); err != nil {
			return fmt.Errorf("%s: reading Deployment storefront/web: %w", c.name, err)
		}
		replicas := int32(1)
		if web.Spec.Replicas != nil {
			replicas = *web.Spec.Replicas
		}
		err = kube.Get(ctx, client.ObjectKey{Namespace: "storefront", Name: "eu-egress-only"}, &networkingv1.NetworkPolicy{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("%s: reading NetworkPolicy storefront/eu-egress-only: %w", c.name, err)
		}
		policy := err == nil
		fmt.Printf("    %-13s web replicas %d (%d available)   eu-egress-only NetworkPolicy %s\n",
			c.name, replicas, web.Status.AvailableReplicas, map[bool]string{true: "present", false: "absent"}[policy])
		if replicas != c.wantReplicas || web.Status.AvailableReplicas != replicas || policy != c.wantPolicy {
			wrong = append(wrong, fmt.Sprintf("%s: want web replicas %d (all available) and the NetworkPolicy %s",
				c.name, c.wantReplicas, map[bool]string{true: "present", false: "absent"}[c.wantPolicy]))
		}
	}
	if len(wrong) > 0 {
		return errors.New(strings.Join(wrong, "; "))
	}
	return nil
}

// writeStatusPage writes .demo/status.html and checks that it shows every
// cluster.
func (d *demo) writeStatusPage(ctx context.Context) error {
	var page bytes.Buffer
	cmd := exec.CommandContext(ctx, d.flotilla, "status", "--repo", d.url, "-o", "html")
	cmd.Stdout, cmd.Stderr = &page, os.Stdout
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("flotilla status -o html: %w", err)
	}
	for _, c := range fleetClusters {
		if !bytes.Contains(page.Bytes(), []byte(c.name)) {
			return fmt.Errorf("flotilla status -o html: the page does not show %s", c.name)
		}
	}
	path := filepath.Join(d.dir, "status.html")
	if err := os.WriteFile(path, page.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Printf("    %s (%d bytes)\n", path, page.Len())
	return nil
}

// cleanup stops the agents, the clusters and the git server.
func (d *demo) cleanup() {
	for _, c := range fleetClusters {
		if c.agent != nil && c.agent.Process != nil {
			_ = c.agent.Process.Signal(syscall.SIGTERM)
			_, _ = c.agent.Process.Wait()
		}
	}
	for _, c := range fleetClusters {
		if c.env != nil {
			_ = c.env.Stop()
		}
	}
	if d.git != nil {
		d.git.StopHTTP()
	}
	if d.stopRegistry != nil {
		d.stopRegistry()
	}
	_ = os.Remove(filepath.Join(d.dir, "demo.pid"))
}

// flotillaCmd runs bin/flotilla, its output shown, and fails when the
// command fails or its output lacks one of want.
func (d *demo) flotillaCmd(ctx context.Context, want []string, args ...string) error {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, d.flotilla, args...)
	cmd.Stdout = io.MultiWriter(os.Stdout, &out)
	cmd.Stderr = io.MultiWriter(os.Stdout, &out)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("flotilla %s: %w", strings.Join(args, " "), err)
	}
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			return fmt.Errorf("flotilla %s: the output does not show %q", strings.Join(args, " "), w)
		}
	}
	return nil
}

func run(dir string, args ...string) error {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Demo", "GIT_AUTHOR_EMAIL=demo@example.com",
		"GIT_COMMITTER_NAME=Demo", "GIT_COMMITTER_EMAIL=demo@example.com")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func revision(dir string) (string, error) {
	cmd := exec.Command("git", "rev-parse", "HEAD")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git rev-parse HEAD in %s: %w", dir, err)
	}
	return strings.TrimSpace(string(out)), nil
}
