package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/pkg/ssa"
	ssautils "github.com/fluxcd/pkg/ssa/utils"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// FluxNamespace is where StartFlux runs Flux's controllers' objects.
const FluxNamespace = "flux-system"

// InstallCRDs applies every CRD file of the assets folder's crds/<set>/
// (flux or argocd, as make testenv collects them) and waits until the API
// server serves them.
func (c *Cluster) InstallCRDs(ctx context.Context, set string) error {
	assets, err := AssetsDir()
	if err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(assets, "crds", set, "*.yaml"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("%w: no CRDs in %s; run make testenv", ErrBinariesMissing, filepath.Join(assets, "crds", set))
	}
	var objects []*unstructured.Unstructured
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		objs, err := ssautils.ReadObjects(bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		objects = append(objects, objs...)
	}
	httpClient, err := rest.HTTPClientFor(c.Config)
	if err != nil {
		return err
	}
	mapper, err := apiutil.NewDynamicRESTMapper(c.Config, httpClient)
	if err != nil {
		return err
	}
	kube, err := client.New(c.Config, client.Options{Mapper: mapper})
	if err != nil {
		return err
	}
	rm := ssa.NewResourceManager(kube, polling.NewStatusPoller(kube, mapper, polling.Options{}), ssa.Owner{Field: "flotilla-testenv"})
	if _, err := rm.ApplyAllStaged(ctx, objects, ssa.DefaultApplyOptions()); err != nil {
		return fmt.Errorf("installing the %s CRDs: %w", set, err)
	}
	return nil
}

// StartFlux installs Flux's CRDs and runs its source-controller and
// kustomize-controller (built by make testenv) against the cluster until
// Stop, kustomize-controller with the extra flags given (such as
// --no-cross-namespace-refs=true, Flux's multi-tenancy lockdown).
// source-controller serves artifacts on a free local port.
func (c *Cluster) StartFlux(ctx context.Context, kustomizeFlags ...string) error {
	assets, err := AssetsDir()
	if err != nil {
		return err
	}
	for _, b := range []string{"source-controller", "kustomize-controller"} {
		if fi, err := os.Stat(filepath.Join(assets, b)); err != nil || fi.Size() == 0 {
			return fmt.Errorf("%w: %s is not in %s; run make testenv", ErrBinariesMissing, b, assets)
		}
	}
	if err := c.InstallCRDs(ctx, "flux"); err != nil {
		return err
	}
	kube, err := client.New(c.Config, client.Options{})
	if err != nil {
		return err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: FluxNamespace}}
	if err := kube.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	ports, err := freePorts(5)
	if err != nil {
		return err
	}
	storage := filepath.Join(c.Dir, "flux-storage")
	if err := os.MkdirAll(storage, 0o755); err != nil {
		return err
	}
	env := []string{"KUBECONFIG=" + c.Kubeconfig, "RUNTIME_NAMESPACE=" + FluxNamespace}
	common := []string{"--enable-leader-election=false", "--watch-all-namespaces=true", "--log-level=debug", "--log-encoding=console"}
	source, err := startComponentEnv(assets, c.Dir, "source-controller", env, append(common,
		"--storage-path="+storage,
		"--storage-addr=127.0.0.1:"+strconv.Itoa(ports[0]),
		"--storage-adv-addr=127.0.0.1:"+strconv.Itoa(ports[0]),
		"--metrics-addr=127.0.0.1:"+strconv.Itoa(ports[1]),
		"--health-addr=127.0.0.1:"+strconv.Itoa(ports[2]))...)
	if err != nil {
		return err
	}
	c.components = append(c.components, source)
	kustomize, err := startComponentEnv(assets, c.Dir, "kustomize-controller", env, append(append(common,
		"--metrics-addr=127.0.0.1:"+strconv.Itoa(ports[3]),
		"--health-addr=127.0.0.1:"+strconv.Itoa(ports[4]),
		// A bundle waiting for its dependency is looked at again soon.
		"--requeue-dependency=2s"), kustomizeFlags...)...)
	if err != nil {
		return err
	}
	c.components = append(c.components, kustomize)
	// Both answer their health endpoint once they run.
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		for _, comp := range []*component{source, kustomize} {
			if err := comp.errExited(); err != nil {
				return false, err
			}
		}
		for _, p := range []int{ports[2], ports[4]} {
			conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(p), time.Second)
			if err != nil {
				return false, nil
			}
			_ = conn.Close()
		}
		return true, nil
	})
}

// freePorts returns n TCP ports free on the loopback interface now.
func freePorts(n int) ([]int, error) {
	var out []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	if len(out) != n {
		return nil, errors.New("no free ports")
	}
	return out, nil
}
