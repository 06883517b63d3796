package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/flotilla-gitops/flotilla/deploy"
	"github.com/flotilla-gitops/flotilla/internal/checkout"
	"github.com/flotilla-gitops/flotilla/internal/containertest"
	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/internal/image"
	"github.com/flotilla-gitops/flotilla/internal/testenv"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// builtImage returns this platform's image of the layout `make image`
// wrote (make test builds it first), and its tag.
func builtImage(t *testing.T) (v1.Image, string) {
	t.Helper()
	root, err := checkout.Root()
	if err != nil {
		t.Fatal(err)
	}
	b, tag, err := image.FromCheckout(root)
	if err != nil {
		t.Fatal(err)
	}
	im, err := b.Index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		if d.Platform != nil && d.Platform.Architecture == runtime.GOARCH {
			img, err := b.Index.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			return img, tag
		}
	}
	t.Fatalf("the image has no %s build", runtime.GOARCH)
	return nil, ""
}

// kubelet starts the agent's Deployment the way a kubelet would, from an
// unpacked image: the container's command, arguments and environment as
// the Deployment gives them, its securityContext (user, read-only root),
// its volumes (Secrets as files, emptyDirs), the ServiceAccount token from
// the TokenRequest API at the standard path with the cluster's CA, and
// the in-cluster service host and port.
type kubelet struct {
	t       *testing.T
	cluster *testenv.Cluster
	kube    client.Client
	rootfs  string
	dir     string // the volumes' files
	// cfg is the image's configuration (entrypoint, env).
	cfg *v1.ConfigFile
}

func newKubelet(t *testing.T, c *testenv.Cluster, kube client.Client, img v1.Image) *kubelet {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := containertest.Unpack(img, rootfs); err != nil {
		t.Fatal(err)
	}
	return &kubelet{t: t, cluster: c, kube: kube, rootfs: rootfs, cfg: cfg, dir: t.TempDir()}
}

// container turns the Deployment's pod template into a container spec.
func (k *kubelet) container(ctx context.Context, dep string) containertest.Spec {
	k.t.Helper()
	d := getDeployment(k.t, k.kube)
	if d.Name != dep {
		k.t.Fatalf("deployment %s, want %s", d.Name, dep)
	}
	spec, err := k.containerOf(ctx, d)
	if err != nil {
		k.t.Fatal(err)
	}
	return spec
}

// containerOf is container for any goroutine: it returns its errors.
func (k *kubelet) containerOf(ctx context.Context, d *appsv1.Deployment) (containertest.Spec, error) {
	pod := d.Spec.Template.Spec
	ctr := pod.Containers[0]
	sc := ctr.SecurityContext
	var uid *int64
	if pod.SecurityContext != nil {
		uid = pod.SecurityContext.RunAsUser
	}
	if uid == nil || sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		return containertest.Spec{}, fmt.Errorf("the Deployment does not run as a fixed user with a read-only root: %+v %+v", pod.SecurityContext, sc)
	}
	spec := containertest.Spec{
		Rootfs: k.rootfs, UID: int(*uid), GID: int(*uid), ReadOnlyRoot: true,
		Args: append(append([]string{}, k.cfg.Config.Entrypoint...), ctr.Args...),
	}
	host, port, err := net.SplitHostPort(strings.TrimPrefix(k.cluster.Config.Host, "https://"))
	if err != nil {
		return spec, err
	}
	spec.Env = append(append([]string{}, k.cfg.Config.Env...),
		"KUBERNETES_SERVICE_HOST="+host, "KUBERNETES_SERVICE_PORT="+port, "HOSTNAME="+d.Name+"-0")
	for _, e := range ctr.Env {
		spec.Env = append(spec.Env, e.Name+"="+e.Value)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	for _, m := range ctr.VolumeMounts {
		src, err := k.volume(ctx, d.Namespace, volumes[m.Name])
		if err != nil {
			return spec, err
		}
		spec.Mounts = append(spec.Mounts, containertest.Mount{Source: src, Target: m.MountPath, ReadOnly: m.ReadOnly})
	}
	sa, err := k.serviceAccount(ctx, d.Namespace, pod.ServiceAccountName)
	if err != nil {
		return spec, err
	}
	spec.Mounts = append(spec.Mounts, containertest.Mount{Source: sa, Target: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true})
	return spec, nil
}

// volume makes a volume's files as the kubelet does: a Secret's keys as
// files (an optional Secret that is missing gives an empty folder), an
// emptyDir writable by everyone.
func (k *kubelet) volume(ctx context.Context, ns string, v corev1.Volume) (string, error) {
	dir, err := os.MkdirTemp(k.dir, v.Name+"-")
	if err != nil {
		return "", err
	}
	// As a kubelet's Secret volume: readable by the container's user.
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	switch {
	case v.Secret != nil:
		var s corev1.Secret
		err := k.kube.Get(ctx, client.ObjectKey{Namespace: ns, Name: v.Secret.SecretName}, &s)
		if apierrors.IsNotFound(err) && v.Secret.Optional != nil && *v.Secret.Optional {
			break
		}
		if err != nil {
			return "", fmt.Errorf("volume %s: %w", v.Name, err)
		}
		for key, val := range s.Data {
			if err := os.WriteFile(filepath.Join(dir, key), val, 0o644); err != nil {
				return "", err
			}
		}
	case v.EmptyDir != nil:
		if err := os.Chmod(dir, 0o777); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("volume %s: a kind this kubelet does not make", v.Name)
	}
	return dir, nil
}

// serviceAccount writes the projected token volume: a token the
// TokenRequest API minted for the account, the CA, the namespace.
func (k *kubelet) serviceAccount(ctx context.Context, ns, name string) (string, error) {
	cs, err := kubernetes.NewForConfig(k.cluster.Config)
	if err != nil {
		return "", err
	}
	expiry := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("TokenRequest for %s/%s: %w", ns, name, err)
	}
	dir, err := os.MkdirTemp(k.dir, "serviceaccount-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	for file, data := range map[string][]byte{
		"token": []byte(tr.Status.Token), "ca.crt": k.cluster.Config.CAData, "namespace": []byte(ns),
	} {
		if err := os.WriteFile(filepath.Join(dir, file), data, 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// run starts the container; the test's end kills it.
func (k *kubelet) run(spec containertest.Spec) (*exec.Cmd, func() bool, *syncBuffer) {
	t := k.t
	cmd, err := containertest.Command(spec)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	return cmd, func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}, logs
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freePort is a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// applyKustomization applies a kustomize folder of the checkout, as
// `kubectl apply -k` would.
func applyKustomization(t *testing.T, c *deploy.Client, dir string) {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatal(err)
	}
	yml, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := render.DecodeObjects(yml, dir)
	if err != nil {
		t.Fatal(err)
	}
	var us []*unstructured.Unstructured
	for _, o := range objs {
		us = append(us, o.Object)
	}
	if _, err := c.Apply(t.Context(), us); err != nil {
		t.Fatal(err)
	}
}

// The agent as it runs in production: installed by `flotilla bootstrap`
// with the least-privilege RBAC, started from the built image's root file
// system as UID 65532 with a read-only root, HOME unset, only /tmp and its
// cache writable, the in-cluster configuration and a ServiceAccount token
// from the TokenRequest API. It clones the fleet over HTTP with the
// bootstrap's credential Secret, applies a tenant's bundle as the tenant's
// account, reports Ready on its status branch, and answers /readyz.
func TestAgentRunsFromTheImageAsInProduction(t *testing.T) {
	img, tag := builtImage(t)
	c, kube := bootstrapPlane(t)
	ctx := t.Context()

	repo := gittest.New(t)
	head := repo.Commit(map[string]string{"fleet.cue": `package fleet

bundles: hello: {
	namespace: "team-a"
	serviceAccountName: "deployer"
	resources: [{apiVersion: "v1", kind: "ConfigMap", metadata: name: "hello", data: clusterName: cluster.name}]
}
`})
	repoURL := repo.ServeHTTP("flotilla", "fleet-token")
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("fleet-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	runOK(t, "bootstrap", "--kubeconfig", c.Kubeconfig, "--repo", repoURL, "--cluster", "prod-1", "--region", "eu-west-1",
		"--label", "env=prod", "--git-password-file", token, "--image", "registry.example.com/flotilla:"+tag,
		"--interval", "2s", "--agent-arg", "--listen=127.0.0.1:"+strconv.Itoa(port), "--wait=false")
	root, err := checkout.Root()
	if err != nil {
		t.Fatal(err)
	}
	dc, err := deploy.NewClient(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	applyKustomization(t, dc, filepath.Join(root, "deploy", "tenant"))

	k := newKubelet(t, c, kube, img)
	spec := k.container(ctx, "flotilla-agent")
	for _, e := range spec.Env {
		if strings.HasPrefix(e, "HOME=") {
			t.Fatalf("the container has %s", e)
		}
	}
	cmd, exited, logs := k.run(spec)

	deadline := time.Now().Add(3 * time.Minute)
	var st *report.Status
	for time.Now().Before(deadline) {
		if exited() {
			break
		}
		snap, err := report.Read(ctx, repo.URL, "", nil)
		if err == nil && len(snap.Statuses) == 1 && snap.Statuses[0].AppliedRevision == head && snap.Statuses[0].Phase == report.ClusterReady {
			st = &snap.Statuses[0]
			break
		}
		if err == nil && len(snap.Statuses) == 1 && snap.Statuses[0].Phase == report.ClusterFailed {
			t.Fatalf("the agent reports Failed: %s\n%s", snap.Statuses[0].Message, lastLines(logs.String(), 20))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if st == nil {
		t.Fatalf("no Ready status at %s from the agent on its status branch within 3 minutes; its log:\n%s", head, lastLines(logs.String(), 30))
	}
	var cm corev1.ConfigMap
	if err := kube.Get(ctx, client.ObjectKey{Namespace: "team-a", Name: "hello"}, &cm); err != nil || cm.Data["clusterName"] != "prod-1" {
		t.Errorf("the bundle's ConfigMap: %v %v", err, cm.Data)
	}
	if st.Agent != tag {
		t.Errorf("the status says agent version %q, the image's tag is %q", st.Agent, tag)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz answered %d", resp.StatusCode)
	}
	checkContainedProcess(t, cmd.Process.Pid)
}

// checkContainedProcess reads /proc of the agent: it runs as 65532 with
// no capabilities, and its root is mounted read-only.
func checkContainedProcess(t *testing.T, pid int) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Uid:\t65532\t65532\t65532\t65532", "CapEff:\t0000000000000000", "NoNewPrivs:\t1"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("the agent's /proc status lacks %q:\n%s", want, status)
		}
	}
	mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == "/" && !strings.HasPrefix(f[5], "ro") {
			t.Errorf("the agent's root is not read-only: %s", line)
		}
	}
}
