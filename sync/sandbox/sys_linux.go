package sandbox

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// netnsAttr starts a process in a network namespace of its own (no
// interface up: every connection fails at once). As root that is all it
// takes; otherwise in a user namespace of its own too, mapping this user
// to itself so that it reads the same files.
func netnsAttr() *syscall.SysProcAttr {
	attr := baseAttr()
	attr.Cloneflags = syscall.CLONE_NEWNET
	if os.Geteuid() != 0 {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: os.Geteuid(), HostID: os.Geteuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: os.Getegid(), HostID: os.Getegid(), Size: 1}}
	}
	return attr
}

// baseAttr makes a worker die with this process (SIGKILL when the thread
// that started it ends: Go ends threads only in rare cases, and then a
// worker is started again for the next job), so that an abandoned render
// never outlives the command.
func baseAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// protocolOutput returns a copy of stdout for the replies, and points
// stdout (fd 1) at stderr.
func protocolOutput() (*os.File, error) {
	fd, err := unix.Dup(1)
	if err != nil {
		return nil, fmt.Errorf("duplicating stdout: %w", err)
	}
	if err := unix.Dup3(2, 1, 0); err != nil {
		return nil, fmt.Errorf("redirecting stdout: %w", err)
	}
	return os.NewFile(uintptr(fd), "replies"), nil
}
