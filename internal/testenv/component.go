package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// stopGrace is how long a component has to exit after SIGTERM before it is
// killed.
const stopGrace = 10 * time.Second

// component is one process of a full cluster (controller-manager, scheduler,
// kwok) whose output goes to a log file in the cluster's folder.
type component struct {
	name    string
	cmd     *exec.Cmd
	log     *os.File
	exited  chan struct{}
	waitErr error
}

// startComponent starts binary from the assets folder with args, logging to
// <dir>/<name>.log.
func startComponent(assets, dir, name string, args ...string) (*component, error) {
	return startComponentEnv(assets, dir, name, nil, args...)
}

// startComponentEnv is startComponent with variables added to the
// environment.
func startComponentEnv(assets, dir, name string, env []string, args ...string) (*component, error) {
	log, err := openLog(dir, name)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(assets, name), args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = componentSysProcAttr()
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c := &component{name: name, cmd: cmd, log: log, exited: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// errExited reports, without blocking, whether the process has already
// exited: a component that dies during start-up fails Start at once instead
// of after the readiness timeout.
func (c *component) errExited() error {
	select {
	case <-c.exited:
		return fmt.Errorf("%s exited early (%w); see %s", c.name, c.waitErr, c.log.Name())
	default:
		return nil
	}
}

// stop sends SIGTERM, waits up to stopGrace, then kills the process.
func (c *component) stop() error {
	select {
	case <-c.exited:
	default:
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(stopGrace):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
	return c.log.Close()
}

// PIDs are the process IDs of the cluster's components by name
// (kube-controller-manager, kwok, source-controller, ...): what a
// benchmark samples the CPU time and memory of.
func (c *Cluster) PIDs() map[string]int {
	out := map[string]int{}
	for _, comp := range c.components {
		out[comp.name] = comp.cmd.Process.Pid
	}
	return out
}
