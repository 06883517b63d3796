package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Options describe one cluster to start.
type Options struct {
	// Name names the cluster: the kubeconfig context, the fake nodes and the
	// log files carry it. Defaults to "flotilla-test".
	Name string

	// Full adds kube-controller-manager, kube-scheduler and kwok with fake
	// nodes, so that Deployments, ReplicaSets and Pods really progress and
	// become Ready. Without it the cluster is an API server and etcd only.
	Full bool

	// Region and Zone label the fake nodes of a full cluster
	// (topology.kubernetes.io/region and /zone). Zone defaults to Region
	// followed by "a".
	Region string
	Zone   string

	// Nodes is the number of fake nodes of a full cluster. Defaults to 1.
	Nodes int

	// Dir is where the cluster keeps its kubeconfig and the logs of its
	// processes. Defaults to a new temporary folder that Stop removes.
	Dir string

	// AssetsDir holds the binaries. Defaults to AssetsDir().
	AssetsDir string

	// Audit makes the API server log every request it completes (audit
	// level Metadata: who, with which user agent, which verb on which
	// resource; no bodies) as JSON lines to Cluster.AuditLog, to count a
	// client's requests (ReadAudit).
	Audit bool
}

// Cluster is a running local cluster.
type Cluster struct {
	// Name is Options.Name after defaulting.
	Name string
	// Config authenticates as a cluster administrator (system:masters).
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file for Config, usable with
	// kubectl and with Flotilla's --kubeconfig flag.
	Kubeconfig string
	// Dir holds the kubeconfig and the processes' logs.
	Dir string
	// AuditLog is the API server's audit log with Options.Audit, or "".
	AuditLog string

	env        *envtest.Environment
	logs       []*os.File // envtest's process logs
	components []*component
	removeDir  bool
	// restarted are API servers started again by RestartAPIServer.
	restarted []*exec.Cmd
}

var namePattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func (o *Options) defaults() error {
	if o.Name == "" {
		o.Name = "flotilla-test"
	}
	if !namePattern.MatchString(o.Name) {
		return fmt.Errorf("cluster name %q must be a DNS label (lowercase letters, digits and '-')", o.Name)
	}
	if o.Nodes <= 0 {
		o.Nodes = 1
	}
	if o.Region == "" {
		o.Region = "local-1"
	}
	if o.Zone == "" {
		o.Zone = o.Region + "a"
	}
	if o.AssetsDir == "" {
		dir, err := AssetsDir()
		if err != nil {
			return err
		}
		o.AssetsDir = dir
	}
	return nil
}

// Start starts a cluster and returns once it serves requests (and, for a
// full cluster, once its nodes are Ready and its controllers run). The
// caller must Stop it. A failure stops whatever was already started.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if err := checkBinaries(opts.AssetsDir, opts.Full); err != nil {
		return nil, err
	}

	c := &Cluster{Name: opts.Name, Dir: opts.Dir}
	if c.Dir == "" {
		dir, err := os.MkdirTemp("", "flotilla-"+opts.Name+"-")
		if err != nil {
			return nil, err
		}
		c.Dir, c.removeDir = dir, true
	} else if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("cluster %s did not start (logs in %s): %w", opts.Name, c.Dir, err), c.Stop())
		}
	}()

	if err := c.startControlPlane(opts); err != nil {
		return nil, err
	}
	if opts.Full {
		if err := c.startWorkloadComponents(ctx, opts); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// startControlPlane starts etcd and kube-apiserver through envtest and
// writes the admin kubeconfig.
func (c *Cluster) startControlPlane(opts Options) error {
	apiLog, err := c.logFile("kube-apiserver")
	if err != nil {
		return err
	}
	etcdLog, err := c.logFile("etcd")
	if err != nil {
		return err
	}
	// envtest gives the API server a fixed 5 s to show the default
	// namespace once it answers, which a loaded 2-core machine starting
	// several control planes at once can miss: such a start is stopped and
	// made again, within controlPlaneStartTimeout.
	deadline := time.Now().Add(controlPlaneStartTimeout)
	var cfg *rest.Config
	for {
		c.env = &envtest.Environment{BinaryAssetsDirectory: opts.AssetsDir, ControlPlaneStartTimeout: time.Minute}
		api := c.env.ControlPlane.GetAPIServer()
		api.Out, api.Err = apiLog, apiLog
		if opts.Audit {
			if err := c.configureAudit(api); err != nil {
				return err
			}
		}
		c.env.ControlPlane.Etcd = &envtest.Etcd{Out: etcdLog, Err: etcdLog}
		cfg, err = c.env.Start()
		if err == nil {
			break
		}
		slow := strings.Contains(err.Error(), "default namespace didn't register")
		if !slow || time.Now().After(deadline) {
			return fmt.Errorf("control plane: %w", err)
		}
		fmt.Fprintf(apiLog, "testenv: %v; starting the control plane again\n", err)
		_ = c.env.Stop()
	}
	c.Config = cfg
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	return os.WriteFile(c.Kubeconfig, c.env.KubeConfig, 0o600)
}

// ServiceAccountConfig authenticates as the ServiceAccount itself (a client
// certificate with its user name and groups), not as an administrator
// impersonating it: what the account may do, including whom it may
// impersonate, is decided by RBAC as for a real in-cluster client.
func (c *Cluster) ServiceAccountConfig(namespace, name string) (*rest.Config, error) {
	u, err := c.env.AddUser(envtest.User{
		Name:   "system:serviceaccount:" + namespace + ":" + name,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("credentials for ServiceAccount %s/%s: %w", namespace, name, err)
	}
	return u.Config(), nil
}

// controlPlaneStartTimeout bounds starting etcd and kube-apiserver, again
// if need be.
const controlPlaneStartTimeout = 3 * time.Minute

// Stop stops every process of the cluster, newest first, and removes its
// folder when Start created it. It is safe to call more than once.
func (c *Cluster) Stop() error {
	var errs []error
	for i := len(c.components) - 1; i >= 0; i-- {
		errs = append(errs, c.components[i].stop())
	}
	c.components = nil
	for _, cmd := range c.restarted {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if waitExited(ctx, cmd.Process.Pid) != nil {
			_ = cmd.Process.Kill()
		}
		cancel()
	}
	c.restarted = nil
	if c.env != nil {
		errs = append(errs, c.env.Stop())
		c.env = nil
	}
	for _, f := range c.logs {
		errs = append(errs, f.Close())
	}
	c.logs = nil
	if c.removeDir {
		errs = append(errs, os.RemoveAll(c.Dir))
		c.removeDir = false
	}
	return errors.Join(errs...)
}

// logFile opens (appending) the log file of one process of the cluster; Stop
// closes it.
func (c *Cluster) logFile(process string) (*os.File, error) {
	f, err := openLog(c.Dir, process)
	if err == nil {
		c.logs = append(c.logs, f)
	}
	return f, err
}

// openLog opens <dir>/<process>.log for appending.
func openLog(dir, process string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, process+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
}
