//go:build !linux

package sandbox

import (
	"errors"
	"os"
	"syscall"
)

// netnsAttr: network namespaces are Linux's; elsewhere workers have the
// empty PATH and the dead proxy only.
func netnsAttr() *syscall.SysProcAttr { return nil }

func baseAttr() *syscall.SysProcAttr { return nil }

// protocolOutput: the replies share stdout with whatever a library prints.
func protocolOutput() (*os.File, error) { return os.Stdout, nil }

// denySockets: seccomp is Linux's.
func denySockets() error { return errors.New("no socket filter outside Linux") }
