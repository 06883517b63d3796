package testenv

import "syscall"

// componentSysProcAttr makes the kernel kill a component when the process
// that started it dies, so an interrupted test run leaves no control-plane
// processes behind.
func componentSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
