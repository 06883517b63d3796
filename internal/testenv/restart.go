package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/discovery"

	"github.com/flotilla-gitops/flotilla/internal/procfs"
	"k8s.io/client-go/rest"
)

// RestartAPIServer stops the cluster's kube-apiserver with SIGTERM, as a
// rolling restart of a control plane does, and starts it again with the
// same flags, certificates and etcd (its data stays), so clients keep their
// configuration. It returns once the new server is ready, or with ctx's
// error. Connections open at the time fail; clients must retry.
func (c *Cluster) RestartAPIServer(ctx context.Context) error {
	etcd := c.env.ControlPlane.Etcd.URL.String()
	pid, args, err := findProcess("kube-apiserver", "--etcd-servers="+etcd)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stopping kube-apiserver %d: %w", pid, err)
	}
	if err := waitExited(ctx, pid); err != nil {
		return err
	}
	log, err := c.logFile("kube-apiserver")
	if err != nil {
		return err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = componentSysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting kube-apiserver again: %w", err)
	}
	c.restarted = append(c.restarted, cmd)
	go func() { _ = cmd.Wait() }()
	return waitReady(ctx, c.Config)
}

// APIServerPID is the process id of the cluster's kube-apiserver (for a
// benchmark's CPU seconds of it).
func (c *Cluster) APIServerPID() (int, error) {
	pid, _, err := findProcess("kube-apiserver", "--etcd-servers="+c.env.ControlPlane.Etcd.URL.String())
	return pid, err
}

// findProcess finds the process running the named binary with an argument
// equal to arg, and returns its pid and command line.
func findProcess(binary, arg string) (int, []string, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(data) == 0 {
			continue
		}
		args := strings.Split(string(bytes.TrimRight(data, "\x00")), "\x00")
		if filepath.Base(args[0]) != binary {
			continue
		}
		for _, a := range args[1:] {
			if a == arg {
				return pid, args, nil
			}
		}
	}
	return 0, nil, fmt.Errorf("no %s process with %s", binary, arg)
}

// waitExited waits until the process is gone (or a zombie: its parent,
// envtest, reaps it).
func waitExited(ctx context.Context, pid int) error {
	for procfs.Running(pid) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver %d did not stop: %w", pid, ctx.Err())
		case <-time.After(50 * time.Millisecond): // /proc gives no event to wait on
		}
	}
	return nil
}

// waitReady polls the API server's /readyz until it answers ok.
func waitReady(ctx context.Context, cfg *rest.Config) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	var last string
	for {
		body, err := dc.RESTClient().Get().AbsPath("/readyz").Do(ctx).Raw()
		if err == nil {
			return nil
		}
		last = fmt.Sprintf("%v: %.2000s", err, body)
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready after its restart (%s): %w", last, ctx.Err())
		case <-time.After(100 * time.Millisecond): // polling: a restarting server sends no event
		}
	}
}
