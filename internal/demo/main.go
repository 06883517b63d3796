// Command demo is `make demo`: Flotilla's whole mission on local clusters.
// It starts full clusters (kube-apiserver, etcd, controller-manager,
// scheduler, kwok nodes labelled with their region), serves a fleet
// repository made from the checkout over HTTP, runs one `flotilla agent`
// per cluster, waits for every cluster to report Ready on the status
// branch, then commits a change, previews it with plan and render, waits
// for the agents to converge and shows what changed in each cluster, read
// from the clusters' API.
//
//	go run ./internal/demo [--ci] [--dir .demo]
package main

import (
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
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/flotilla-gitops/flotilla/internal/testenv"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// cluster is one demo cluster, named and labelled as in the demo fleet's
// inventory (fleet.cue).
type cluster struct {
	name, region string
	labels       []string
	env          *testenv.Cluster
	agent        *exec.Cmd
}

var fleetClusters = []*cluster{
	{name: "prod-eu-1", region: "eu-west-1", labels: []string{"env=prod", "class=regulated", "role=active"}},
	{name: "prod-us-1", region: "us-east-1", labels: []string{"env=prod", "class=standard", "role=active"}},
	{name: "staging-eu-1", region: "eu-west-1", labels: []string{"env=staging", "class=standard", "role=active"}},
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
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func (d *demo) run(ctx context.Context, dir string) error {
	var err error
	if d.root, err = os.Getwd(); err != nil {
		return err
	}
	d.dir, _ = filepath.Abs(dir)
	d.flotilla = filepath.Join(d.root, "bin", "flotilla")
	if err := os.RemoveAll(d.dir); err != nil {
		return err
	}
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(d.dir, "demo.pid"), []byte(fmt.Sprint(os.Getpid())), 0o644); err != nil {
		return err
	}

	step("starting %d full clusters (apiserver, etcd, controller-manager, scheduler, kwok nodes)", len(fleetClusters))
	if err := d.startClusters(ctx); err != nil {
		return err
	}
	step("serving the fleet repository over HTTP")
	rev1, err := d.startGit()
	if err != nil {
		return err
	}
	fmt.Printf("    %s at %s\n", d.url, rev1[:7])
	step("starting one flotilla agent per cluster")
	if err := d.startAgents(); err != nil {
		return err
	}
	step("waiting for every cluster to report %s Ready on the status branch", rev1[:7])
	if err := d.waitReady(ctx, rev1); err != nil {
		return err
	}
	d.flotillaCmd("status", "--repo", d.url, "--branch", "main")

	step("a change: 5 replicas of web in the active EU prod region, and an EU-only data-residency policy")
	rev2, err := d.commitChange()
	if err != nil {
		return err
	}
	step("preview for every cluster before it lands: flotilla plan --all")
	d.flotillaCmd("plan", d.work, "--all")
	step("flotilla render --cluster staging-eu-1 --bundle eu-data-residency")
	d.flotillaCmd("render", d.work, "--cluster", "staging-eu-1", "--bundle", "eu-data-residency")
	if err := d.push(); err != nil {
		return err
	}
	step("pushed %s; waiting for the agents to converge", rev2[:7])
	if err := d.waitReady(ctx, rev2); err != nil {
		return err
	}
	d.flotillaCmd("status", "--repo", d.url, "--branch", "main")
	step("what changed, read from each cluster's API")
	if err := d.showChanges(ctx); err != nil {
		return err
	}
	page := filepath.Join(d.dir, "status.html")
	if out, err := exec.Command(d.flotilla, "status", "--repo", d.url, "-o", "html").Output(); err == nil {
		_ = os.WriteFile(page, out, 0o644)
	}
	step("done")
	for _, c := range fleetClusters {
		fmt.Printf("    kubectl --kubeconfig %s get deploy -A\n", c.env.Kubeconfig)
	}
	fmt.Printf("    status page: %s\n", page)
	if d.ci {
		return nil
	}
	fmt.Println("\nThe clusters and agents keep running: press Ctrl-C (or run `make demo-down`) to stop them.")
	<-ctx.Done()
	return nil
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
func (d *demo) startGit() (string, error) {
	gitRoot := filepath.Join(d.dir, "git")
	if err := os.MkdirAll(gitRoot, 0o755); err != nil {
		return "", err
	}
	d.git = gittestserver.NewGitServer(gitRoot)
	if err := d.git.StartHTTP(); err != nil {
		return "", err
	}
	bare := filepath.Join(gitRoot, "fleet.git")
	d.work = filepath.Join(d.dir, "fleet")
	for _, args := range [][]string{
		{"init", "--bare", "-b", "main", bare},
		{"init", "-b", "main", d.work},
	} {
		if err := run(d.dir, args...); err != nil {
			return "", err
		}
	}
	for _, p := range []string{"fleet.cue", "examples", "deploy"} {
		if err := exec.Command("cp", "-r", filepath.Join(d.root, p), d.work).Run(); err != nil {
			return "", err
		}
	}
	if err := run(d.work, "remote", "add", "origin", bare); err != nil {
		return "", err
	}
	if err := run(d.work, "add", "-A"); err != nil {
		return "", err
	}
	if err := run(d.work, "commit", "-q", "-m", "The demo fleet"); err != nil {
		return "", err
	}
	if err := d.push(); err != nil {
		return "", err
	}
	d.url = d.git.HTTPAddress() + "/fleet.git"
	return revision(d.work)
}

func (d *demo) push() error { return run(d.work, "push", "-q", "origin", "main") }

// startAgents starts `flotilla agent` for each cluster, logging to its
// folder.
func (d *demo) startAgents() error {
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
		c.agent = exec.Command(d.flotilla, args...)
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
		statuses, err := report.Read(ctx, d.url, "", nil)
		ready := 0
		for _, st := range statuses {
			if st.AppliedRevision == rev && st.Phase == "Ready" {
				ready++
			}
		}
		if err == nil && ready == len(fleetClusters) {
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
func (d *demo) commitChange() (string, error) {
	path := filepath.Join(d.work, "fleet.cue")
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	src := strings.Replace(string(data), "values: replicaCount: 4", "values: replicaCount: 5", 1)
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
		return "", err
	}
	if err := run(d.work, "commit", "-q", "-am", "web: 5 replicas in eu-west prod; EU data-residency policy"); err != nil {
		return "", err
	}
	return revision(d.work)
}

// showChanges reads what changed from each cluster's API.
func (d *demo) showChanges(ctx context.Context) error {
	for _, c := range fleetClusters {
		kube, err := client.New(c.env.Config, client.Options{})
		if err != nil {
			return err
		}
		var web appsv1.Deployment
		replicas := "none"
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "storefront", Name: "web"}, &web); err == nil && web.Spec.Replicas != nil {
			replicas = fmt.Sprintf("%d (%d available)", *web.Spec.Replicas, web.Status.AvailableReplicas)
		}
		policy := "absent"
		if err := kube.Get(ctx, client.ObjectKey{Namespace: "storefront", Name: "eu-egress-only"}, &networkingv1.NetworkPolicy{}); err == nil {
			policy = "present"
		}
		fmt.Printf("    %-13s web replicas %-18s eu-egress-only NetworkPolicy %s\n", c.name, replicas, policy)
	}
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
	_ = os.Remove(filepath.Join(d.dir, "demo.pid"))
}

func (d *demo) flotillaCmd(args ...string) {
	cmd := exec.Command(d.flotilla, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	_ = cmd.Run()
}

func run(dir string, args ...string) error {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Demo", "GIT_AUTHOR_EMAIL=demo@example.com",
		"GIT_COMMITTER_NAME=Demo", "GIT_COMMITTER_EMAIL=demo@example.com")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func revision(dir string) (string, error) {
	cmd := exec.Command("git", "rev-parse", "HEAD")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", errors.New("git rev-parse failed")
	}
	return strings.TrimSpace(string(out)), nil
}
