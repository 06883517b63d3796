// Package containertest runs a program from an image's root file system
// the way a container runtime runs a pod's container, without Docker: the
// image's layers unpacked with their owners and modes, the root mounted
// read-only, the pod's volumes bound at their mount paths, a fresh /proc
// and a minimal /dev, the process as the container's user with no new
// privileges, in mount and PID namespaces of its own, with only the
// environment the pod gives it (no HOME unless it sets one).
//
// The process is the test binary itself, re-executed: a test package's
// TestMain calls Main first, which does the mounts and execs the
// entrypoint when the test binary is started that way. It needs root (CI
// runs as root); a test that needs it fails without it.
package containertest

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"golang.org/x/sys/unix"
)

// specEnv carries the Spec to the re-executed test binary.
const specEnv = "FLOTILLA_CONTAINERTEST_SPEC"

// Mount binds a host directory into the container.
type Mount struct {
	Source, Target string
	ReadOnly       bool
}

// Spec is one container.
type Spec struct {
	// Rootfs is the unpacked image (Unpack).
	Rootfs string
	// Args are the entrypoint (a path in the image) and its arguments.
	Args []string
	// Env is the whole environment.
	Env []string
	// UID and GID the process runs as.
	UID, GID int
	// ReadOnlyRoot mounts the root file system read-only.
	ReadOnlyRoot bool
	Mounts       []Mount
}

// Unpack writes an image's flattened file system into dir, with the
// layers' modes and numeric owners. Only directories and regular files are
// expected (an image of a static binary has nothing else); anything else,
// or a path leaving dir, is an error.
func Unpack(img v1.Image, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := strings.TrimSuffix(path.Clean("/"+h.Name), "/")
		if name == "" {
			continue
		}
		rel := strings.TrimPrefix(name, "/")
		mode := fs.FileMode(h.Mode & 0o777)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(rel, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := root.MkdirAll(path.Dir(rel), 0o755); err != nil {
				return err
			}
			f, err := root.OpenFile(rel, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: entry type %c is not expected in this image", h.Name, h.Typeflag)
		}
		if err := root.Lchown(rel, h.Uid, h.Gid); err != nil {
			return err
		}
		// Chmod after chown: chown clears the set-id bits; the sticky bit
		// of /tmp is kept by an explicit mode.
		full := mode
		if h.Mode&0o1000 != 0 {
			full |= fs.ModeSticky
		}
		if err := root.Chmod(rel, full); err != nil {
			return err
		}
	}
}

// Command returns the container as a command to start: the test binary,
// in new mount and PID namespaces, which Main turns into the container.
func Command(spec Spec) (*exec.Cmd, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("running a container needs root (mounts, chroot, setuid); CI runs the tests as root")
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = []string{specEnv + "=" + string(data)}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		Pdeathsig:  syscall.SIGKILL,
	}
	return cmd, nil
}

// Main becomes the container when the test binary was started by
// Command; otherwise it returns at once. Call it first in TestMain.
func Main() {
	data, ok := os.LookupEnv(specEnv)
	if !ok {
		return
	}
	var spec Spec
	if err := json.Unmarshal([]byte(data), &spec); err != nil {
		fail(err)
	}
	fail(become(spec))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "containertest:", err)
	os.Exit(127)
}

// become sets up the container's file system and identity, then execs
// the entrypoint; it returns only on failure.
func become(s Spec) error {
	mount := func(src, dst, fstype string, flags uintptr, data string) error {
		if err := unix.Mount(src, dst, fstype, flags, data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", src, dst, err)
		}
		return nil
	}
	// Nothing done here reaches the host's mounts.
	if err := mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return err
	}
	r := s.Rootfs
	if err := mount(r, r, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	for _, m := range s.Mounts {
		dst := filepath.Join(r, m.Target)
		if err := mountPoint(m.Source, dst); err != nil {
			return err
		}
		if err := mount(m.Source, dst, "", unix.MS_BIND, ""); err != nil {
			return err
		}
		if m.ReadOnly {
			if err := mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				return err
			}
		}
	}
	if err := os.MkdirAll(filepath.Join(r, "proc"), 0o555); err != nil {
		return err
	}
	if err := mount("proc", filepath.Join(r, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return err
	}
	if err := devices(r, mount); err != nil {
		return err
	}
	if s.ReadOnlyRoot {
		if err := mount("", r, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return err
		}
	}
	if err := unix.Chroot(r); err != nil {
		return fmt.Errorf("chroot %s: %w", r, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Setgroups(nil); err != nil {
		return err
	}
	if err := syscall.Setgid(s.GID); err != nil {
		return err
	}
	if err := syscall.Setuid(s.UID); err != nil {
		return err
	}
	// allowPrivilegeEscalation: false.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	return syscall.Exec(s.Args[0], s.Args, s.Env)
}

// mountPoint makes dst a directory, or a file when src is one (a file
// bound over another, as a kubelet's subPath mount).
func mountPoint(src, dst string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return os.MkdirAll(dst, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// devices gives the container the /dev a runtime gives every container:
// a tmpfs with null, zero, random, urandom and tty bound from the host.
func devices(r string, mount func(src, dst, fstype string, flags uintptr, data string) error) error {
	dev := filepath.Join(r, "dev")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		return err
	}
	if err := mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755,size=64k"); err != nil {
		return err
	}
	for _, d := range []string{"null", "zero", "random", "urandom", "tty"} {
		f, err := os.Create(filepath.Join(dev, d))
		if err != nil {
			return err
		}
		_ = f.Close()
		if err := mount("/dev/"+d, filepath.Join(dev, d), "", unix.MS_BIND, ""); err != nil {
			return err
		}
	}
	return nil
}
