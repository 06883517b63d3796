//go:build !linux

package testenv

import "syscall"

// componentSysProcAttr has no parent-death signal outside Linux; Stop is the
// only clean-up there.
func componentSysProcAttr() *syscall.SysProcAttr { return nil }
