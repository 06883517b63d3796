package sandbox

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"

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

// denySockets installs a seccomp filter on every thread of this
// process under which no socket can be made and no other process's
// network reached: socket(2) and socketpair(2) of any family, io_uring
// (its rings open sockets without socket(2)), another process's file
// descriptors (pidfd_getfd: the parent's connections), another namespace
// (setns), and tracing or reading another process fail with ENETUNREACH
// or EPERM; and so does every call of another ABI (i386's int 0x80 on
// amd64, x32), which Go never makes. Beneath goOffline, it stops the
// libraries that dial with transports of their own too (Helm's schema
// loader has one), where no network namespace could be made. An
// unprivileged process may install it (no_new_privs); where it cannot, the
// worker says so on its stderr and goOffline alone holds.
func denySockets() error {
	var arch uint32
	switch runtime.GOARCH {
	case "amd64":
		arch = unix.AUDIT_ARCH_X86_64
	case "arm64":
		arch = unix.AUDIT_ARCH_AARCH64
	default:
		return fmt.Errorf("no socket filter for %s", runtime.GOARCH)
	}
	const (
		ld  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jge = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		ret = unix.BPF_RET | unix.BPF_K
	)
	denied := []uint32{
		unix.SYS_SOCKET, unix.SYS_SOCKETPAIR, unix.SYS_IO_URING_SETUP,
		unix.SYS_PIDFD_GETFD, unix.SYS_PIDFD_OPEN, unix.SYS_SETNS,
		unix.SYS_PTRACE, unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV,
	}
	// struct seccomp_data: nr at 0, arch at 4.
	prog := []unix.SockFilter{
		{Code: ld, K: 4},
		{Code: jeq, K: arch, Jt: 1}, // our ABI: go on
		{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)}, // another ABI
		{Code: ld, K: 0},
		{Code: jge, K: 0x40000000, Jt: uint8(len(denied)) + 1}, // x32 calls: deny
	}
	for i, nr := range denied {
		// Jump to the deny at the end when equal.
		prog = append(prog, unix.SockFilter{Code: jeq, K: nr, Jt: uint8(len(denied) - i)})
	}
	prog = append(prog,
		unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ALLOW},
		unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(unix.ENETUNREACH)},
	)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r1, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	switch {
	case errno != 0:
		return fmt.Errorf("seccomp: %w", errno)
	case r1 != 0:
		// With TSYNC, a thread that could not take the filter.
		return fmt.Errorf("seccomp: thread %d could not take the filter", r1)
	}
	return nil
}
