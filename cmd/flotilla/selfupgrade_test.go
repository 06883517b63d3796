package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/internal/checkout"
	"github.com/flotilla-gitops/flotilla/internal/containertest"
	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/internal/image"
	"github.com/flotilla-gitops/flotilla/internal/testenv"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// selfFleet is a fleet whose flotilla-agent bundle is the agent's own
// chart (deploy/chart/flotilla-agent, copied into the fleet repository),
// with the values bootstrap gave each cluster and the image tag the test
// changes; canary takes a change first, rest after it.
const selfFleet = `package fleet

rollout: waves: [
	{name: "canary", names: ["canary"]},
	{name: "rest"},
]

bundles: "flotilla-agent": {
	namespace: "flotilla-system"
	helm: chart: "charts/flotilla-agent"
	values: {
		namespace: create: false // the namespace holds the inventories: never the bundle's to prune
		image: {repository: "registry.test/flotilla", tag: %q}
		git: {repository: %q, username: "flotilla"}
		status: repository: "" // the status in the fleet repository, as bootstrap installed it
		identity: {name: cluster.name, region: cluster.region, labels: {port: cluster.labels.port}}
		rbac: mode: "cluster-admin"
		interval: "2s"
		extraArgs: ["--listen=127.0.0.1:\(cluster.labels.port)", "--self-update-deadline=20s"]
	}
}
`

// versions are the agent builds the test's kubelet runs, by image tag.
type versions map[string]string

// buildVersions builds flotilla twice, stamped v1 and v2 (the compile is
// cached from make image; each link takes seconds), and a "broken" one
// that cannot start.
func buildVersions(t *testing.T) versions {
	t.Helper()
	root, err := checkout.Root()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := versions{}
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	for _, v := range []string{"v1", "v2"} {
		bin := filepath.Join(dir, v)
		if err := image.BuildBinary(t.Context(), root, bin, p, image.LDFlags(v+".0.0-test", "selfupgrade")); err != nil {
			t.Fatal(err)
		}
		out[v] = bin
	}
	out["broken"] = filepath.Join(dir, "broken")
	if err := os.WriteFile(out["broken"], []byte("not a program\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return out
}

// selfCluster is one cluster of the test: its control plane and the
// kubelet that runs the agent its Deployment names.
type selfCluster struct {
	name    string
	plane   *testenv.Cluster
	kube    client.Client
	kubelet *kubelet

	mu      sync.Mutex
	running string   // the image tag of the running container
	stop    func()   // stops it
	started []string // every tag started, in order
}

// sync makes the running container the one the Deployment names: a new
// image tag stops the old container (Recreate) and starts the new one.
func (c *selfCluster) sync(ctx context.Context, t *testing.T, builds versions) {
	var d appsv1.Deployment
	if err := c.kube.Get(ctx, client.ObjectKey{Namespace: "flotilla-system", Name: "flotilla-agent"}, &d); err != nil {
		return // the next round looks again
	}
	ref := d.Spec.Template.Spec.Containers[0].Image
	tag := ref[strings.LastIndex(ref, ":")+1:]
	c.mu.Lock()
	defer c.mu.Unlock()
	if tag == c.running {
		return
	}
	if c.stop != nil {
		c.stop()
	}
	bin, ok := builds[tag]
	if !ok {
		t.Errorf("%s: the Deployment names %s, which this kubelet cannot pull", c.name, ref)
		return
	}
	spec, err := c.kubelet.containerOf(ctx, &d)
	if err != nil {
		t.Error(err)
		return
	}
	spec.Mounts = append(spec.Mounts, containertest.Mount{Source: bin, Target: image.Entrypoint, ReadOnly: true})
	cmd, err := containertest.Command(spec)
	if err != nil {
		t.Error(err)
		return
	}
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Error(err)
		return
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c.running, c.started = tag, append(c.started, tag)
	c.stop = func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s: the %s agent's log:\n%s", c.name, tag, lastLines(logs.String(), 15))
		}
	}
}

// uids are the UIDs of what the agent manages in flotilla-system.
func (c *selfCluster) uids(t *testing.T) map[string]types.UID {
	t.Helper()
	out := map[string]types.UID{}
	d := getDeployment(t, c.kube)
	out["Deployment/"+d.Name] = d.UID
	var cms corev1.ConfigMapList
	if err := c.kube.List(t.Context(), &cms, client.InNamespace("flotilla-system")); err != nil {
		t.Fatal(err)
	}
	for _, cm := range cms.Items {
		out["ConfigMap/"+cm.Name] = cm.UID
	}
	var sa corev1.ServiceAccount
	if err := c.kube.Get(t.Context(), client.ObjectKey{Namespace: "flotilla-system", Name: "flotilla-agent"}, &sa); err != nil {
		t.Fatal(err)
	}
	out["ServiceAccount/flotilla-agent"] = sa.UID
	return out
}

// The agent's own manifests as a bundle of the fleet: a new image tag in
// Git goes out wave by wave; each agent publishes Progressing with the new
// image, applies its own Deployment last and is replaced; the new agent
// resumes with nothing pruned or re-created and reports Ready with its
// version. An image that cannot start leaves its cluster Progressing, then
// Failed once the deadline passed, and the later wave halts.
func TestAgentUpgradesItselfThroughTheWaves(t *testing.T) {
	img, _ := builtImage(t)
	builds := buildVersions(t)
	ctx := t.Context()

	repo := gittest.New(t)
	root, err := checkout.Root()
	if err != nil {
		t.Fatal(err)
	}
	chart := map[string]string{}
	chartDir := filepath.Join(root, "deploy", "chart", "flotilla-agent")
	err = filepath.WalkDir(chartDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(chartDir, p)
		chart[filepath.Join("charts", "flotilla-agent", rel)] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	repoURL := repo.ServeHTTP("flotilla", "fleet-token")
	commit := func(tag string) string {
		files := map[string]string{"fleet.cue": fmt.Sprintf(selfFleet, tag, repoURL)}
		for k, v := range chart {
			files[k] = v
		}
		return repo.Commit(files)
	}
	rev1 := commit("v1")
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("fleet-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var clusters []*selfCluster
	for _, name := range []string{"canary", "later"} {
		plane, kube := ownPlane(t, "self-"+name)
		port := strconv.Itoa(freePort(t))
		runOK(t, "bootstrap", "--kubeconfig", plane.Kubeconfig, "--repo", repoURL, "--cluster", name, "--region", "eu-west-1",
			"--label", "port="+port, "--git-password-file", token, "--image", "registry.test/flotilla:v1", "--rbac", "cluster-admin",
			"--interval", "2s", "--agent-arg", "--listen=127.0.0.1:"+port, "--agent-arg", "--self-update-deadline=20s", "--wait=false")
		clusters = append(clusters, &selfCluster{name: name, plane: plane, kube: kube, kubelet: newKubelet(t, plane, kube, img)})
	}
	// The kubelets: each keeps its cluster's container the one its
	// Deployment names.
	kctx, stopKubelets := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, c := range clusters {
		wg.Go(func() {
			for kctx.Err() == nil {
				c.sync(kctx, t, builds)
				select {
				case <-kctx.Done():
				case <-time.After(300 * time.Millisecond):
				}
			}
		})
	}
	t.Cleanup(func() {
		stopKubelets()
		wg.Wait()
		for _, c := range clusters {
			c.mu.Lock()
			if c.stop != nil {
				c.stop()
			}
			c.mu.Unlock()
		}
	})

	waitStatus := func(what string, ok func(map[string]report.Status) bool) map[string]report.Status {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute)
		var last map[string]report.Status
		for time.Now().Before(deadline) {
			if snap, err := report.Read(ctx, repo.URL, "", nil); err == nil {
				last = map[string]report.Status{}
				for _, s := range snap.Statuses {
					last[s.Cluster.Name] = s
				}
				if ok(last) {
					return last
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
		for n, s := range last {
			t.Logf("%s: %s at %.7s, agent %s: %s", n, s.Phase, s.AppliedRevision, s.Agent, s.Message)
		}
		t.Fatalf("not within 3 minutes: %s", what)
		return nil
	}
	readyAt := func(st report.Status, rev, agent string) bool {
		return st.Phase == report.ClusterReady && st.AppliedRevision == rev && st.Agent == agent
	}

	waitStatus("both clusters Ready at the first revision with agent v1", func(s map[string]report.Status) bool {
		return readyAt(s["canary"], rev1, "v1.0.0-test") && readyAt(s["later"], rev1, "v1.0.0-test")
	})
	before := map[string]map[string]types.UID{}
	for _, c := range clusters {
		before[c.name] = c.uids(t)
	}

	rev2 := commit("v2")
	waitStatus("both clusters Ready at the second revision with agent v2", func(s map[string]report.Status) bool {
		return readyAt(s["canary"], rev2, "v2.0.0-test") && readyAt(s["later"], rev2, "v2.0.0-test")
	})
	for _, c := range clusters {
		c.mu.Lock()
		started := strings.Join(c.started, ",")
		c.mu.Unlock()
		if started != "v1,v2" {
			t.Errorf("%s: the kubelet started %s, want v1 then v2", c.name, started)
		}
		after := c.uids(t)
		for k, uid := range before[c.name] {
			if after[k] != uid {
				t.Errorf("%s: %s was deleted or re-created across the upgrade", c.name, k)
			}
		}
		// The old agent's last word: Progressing, with the new image.
		history := gittest.Git(t, repo.Bare, "log", "-p", "flotilla/status/"+c.name)
		if !strings.Contains(history, "image: registry.test/flotilla:v2") || !strings.Contains(history, "updating the agent to registry.test/flotilla:v2") {
			t.Errorf("%s: no status said the agent was updating itself to v2:\n%s", c.name, lastLines(history, 40))
		}
	}

	// An image that cannot start: the canary says so by its deadline, and
	// the later wave halts on it, keeping v2.
	rev3 := commit("broken")
	s := waitStatus("the canary Failed past its deadline and the later wave halted", func(s map[string]report.Status) bool {
		later := s["later"]
		return s["canary"].Phase == report.ClusterFailed && later.SeenRevision == rev3 &&
			later.Rollout != nil && later.Rollout.State == report.RolloutHalted
	})
	if msg := s["canary"].Message; !strings.Contains(msg, "registry.test/flotilla:broken") || !strings.Contains(msg, "has not reported by") {
		t.Errorf("the canary's message: %s", msg)
	}
	if later := s["later"]; later.AppliedRevision != rev2 || later.Agent != "v2.0.0-test" || later.Rollout.HaltedBy != "canary" {
		t.Errorf("the later cluster: at %.7s, agent %s, halted by %q", later.AppliedRevision, later.Agent, later.Rollout.HaltedBy)
	}
	if img := getDeployment(t, clusters[1].kube).Spec.Template.Spec.Containers[0].Image; img != "registry.test/flotilla:v2" {
		t.Errorf("the later cluster's agent Deployment names %s", img)
	}
}
