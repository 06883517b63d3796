package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/internal/procfs"
	"github.com/flotilla-gitops/flotilla/internal/synthfleet"
)

// These tests run the flotilla command (this test binary, as testscript
// installs it on PATH) as a real process and signal it. The bounds on how
// long it may take to stop are generous (a loaded CI machine); the time
// actually taken is in bench/RESULTS.md (bench/interrupt.sh).

// stopWithin is how long a signalled command may take to exit here.
const stopWithin = 15 * time.Second

// running is a flotilla process whose stderr is read line by line.
type running struct {
	t      *testing.T
	cmd    *exec.Cmd
	lines  chan string
	stderr strings.Builder
	exited chan error
}

// start runs a command of this test binary (flotilla, or a test helper).
func start(t *testing.T, name string, args ...string) *running {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdout = io.Discard
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &running{t: t, cmd: cmd, lines: make(chan string, 1000), exited: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		close(r.lines)
		_, _ = io.Copy(io.Discard, pipe) // a line too long for the scanner must not block the process
		r.exited <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return r
}

// waitFor reads stderr until a line contains want.
func (r *running) waitFor(want string, within time.Duration) {
	r.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case line, ok := <-r.lines:
			if !ok {
				r.t.Fatalf("flotilla ended before printing %q:\n%s", want, r.stderr.String())
			}
			r.stderr.WriteString(line + "\n")
			if strings.Contains(line, want) {
				return
			}
		case <-deadline:
			r.t.Fatalf("flotilla did not print %q within %s:\n%s", want, within, r.stderr.String())
		}
	}
}

// signalAndWait sends sig and returns the exit error, the rest of stderr
// and how long the process took to end.
func (r *running) signalAndWait(sig syscall.Signal) (*exec.ExitError, string, time.Duration) {
	r.t.Helper()
	start := time.Now()
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.t.Fatal(err)
	}
	deadline := time.After(stopWithin)
	for {
		select {
		case line, ok := <-r.lines:
			if ok {
				r.stderr.WriteString(line + "\n")
				continue
			}
			err := <-r.exited
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				r.t.Fatalf("flotilla exited with %v after %s, want a non-zero status:\n%s", err, sig, r.stderr.String())
			}
			return exit, r.stderr.String(), time.Since(start)
		case <-deadline:
			r.t.Fatalf("flotilla still running %s after %s:\n%s", stopWithin, sig, r.stderr.String())
		}
	}
}

// TestSIGINTStopsPlanAll interrupts `plan --all` on a 1,000-cluster fleet
// (about half a minute of work here) once it reports progress: it stops
// between clusters, exits 130 and says how far it got.
func TestSIGINTStopsPlanAll(t *testing.T) {
	dir := t.TempDir()
	if err := synthfleet.Write(dir, 1000, 50); err != nil {
		t.Fatal(err)
	}
	r := start(t, "flotilla", "plan", dir, "--all")
	r.waitFor("planned ", 2*time.Minute)
	exit, stderr, took := r.signalAndWait(syscall.SIGINT)
	if exit.ExitCode() != 130 {
		t.Errorf("exit code %d, want 130", exit.ExitCode())
	}
	if !strings.Contains(stderr, "planning 1000 clusters (") || !strings.Contains(stderr, "interrupted (SIGINT)") {
		t.Errorf("stderr does not say what was interrupted:\n%s", stderr)
	}
	t.Logf("stopped %s after SIGINT", took)
}

// TestSIGTERMStopsARenderThatNeverEnds renders a chart whose templates
// would run for days (an include fan-out of 2^40 calls): SIGTERM stops the
// command at once, naming the bundle, with exit code 143.
func TestSIGTERMStopsARenderThatNeverEnds(t *testing.T) {
	repo := t.TempDir()
	var helpers strings.Builder
	for i := range 40 {
		fmt.Fprintf(&helpers, "{{- define \"t%d\" -}}{{ include \"t%d\" . }}{{ include \"t%d\" . }}{{- end -}}\n", i, i+1, i+1)
	}
	helpers.WriteString("{{- define \"t40\" -}}{{- end -}}\n")
	files := map[string]string{
		"fleet.cue": `package fleet

clusters: c1: {}
bundles: slow: {
	namespace: "slow"
	helm: chart: "charts/slow"
}
`,
		"charts/slow/Chart.yaml":             "apiVersion: v2\nname: slow\nversion: 0.1.0\n",
		"charts/slow/templates/_helpers.tpl": helpers.String(),
		"charts/slow/templates/cm.yaml":      "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: slow\ndata:\n  x: {{ include \"t0\" . | quote }}\n",
	}
	for name, content := range files {
		p := filepath.Join(repo, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// In a render worker (the default), and in the command's own process.
	for _, sandbox := range []string{"true", "false"} {
		t.Run("sandbox="+sandbox, func(t *testing.T) {
			// The render has started once the fleet is planned; there is no
			// line to wait for, so signal when the process and its workers
			// have used CPU for a while.
			r := start(t, "flotilla", "render", repo, "--cluster", "c1", "--sandbox="+sandbox)
			waitForCPU(t, r.cmd.Process.Pid, 2*time.Second, time.Minute)
			workers := descendants(r.cmd.Process.Pid)
			if (sandbox == "true") != (len(workers) > 0) {
				t.Errorf("sandbox=%s, render workers %v", sandbox, workers)
			}
			exit, stderr, took := r.signalAndWait(syscall.SIGTERM)
			if exit.ExitCode() != 143 {
				t.Errorf("exit code %d, want 143", exit.ExitCode())
			}
			if !strings.Contains(stderr, "bundle slow") || !strings.Contains(stderr, "terminated (SIGTERM)") {
				t.Errorf("stderr does not name the interrupted bundle:\n%s", stderr)
			}
			// The worker stuck in the template does not outlive the command.
			for _, pid := range workers {
				waitGone(t, pid, 10*time.Second)
			}
			t.Logf("stopped %s after SIGTERM", took)
		})
	}
}

// descendants lists a process's children and theirs (Linux /proc).
func descendants(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		data, _ := os.ReadFile(f)
		for _, field := range strings.Fields(string(data)) {
			var child int
			if _, err := fmt.Sscan(field, &child); err == nil {
				out = append(out, child)
				out = append(out, descendants(child)...)
			}
		}
	}
	return out
}

// waitGone waits until the process no longer runs, or fails after within.
func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for procfs.Running(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("render worker %d still runs %s after the command ended", pid, within)
		}
		time.Sleep(50 * time.Millisecond) // polling /proc: no event to wait on
	}
}

// waitForCPU waits until the process and its descendants have used cpu of
// CPU time, read from /proc, or fails after within.
func waitForCPU(t *testing.T, pid int, cpu, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		var ticks int64
		for _, p := range append([]int{pid}, descendants(pid)...) {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
			if err != nil {
				if p == pid {
					t.Fatal(err)
				}
				continue
			}
			// Fields after the command name: utime and stime are the 12th
			// and 13th, in clock ticks (100 per second on Linux).
			_, rest, _ := strings.Cut(string(data), ") ")
			f := strings.Fields(rest)
			utime, err := strconv.ParseInt(f[11], 10, 64)
			if err != nil {
				t.Fatalf("process %d: utime %q: %v", p, f[11], err)
			}
			stime, err := strconv.ParseInt(f[12], 10, 64)
			if err != nil {
				t.Fatalf("process %d: stime %q: %v", p, f[12], err)
			}
			ticks += utime + stime
		}
		if time.Duration(ticks)*10*time.Millisecond >= cpu {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("process %d used less than %s of CPU in %s", pid, cpu, within)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// runawayFleet is a fleet whose evaluation runs away: a comprehension of
// 2·10⁹ elements.
const runawayFleet = `package fleet

import "list"

clusters: c1: {}
bundles: web: {resources: [], values: n: len([for i in list.Range(0, 2000000000, 1) {i}])}
`

// runawayChange is a repository whose commit (base) is a plain fleet and
// whose work tree changes it into runawayFleet: what a pull request could
// make preview evaluate.
func runawayChange(t *testing.T) (work, base string) {
	t.Helper()
	repo := gittest.New(t)
	base = repo.Commit(map[string]string{"fleet.cue": "package fleet\n\nclusters: c1: {}\nbundles: web: resources: []\n"})
	writeTestFile(t, filepath.Join(repo.Work, "fleet.cue"), runawayFleet)
	return repo.Work, base
}

// TestSignalEndsARunawayEvaluation: SIGTERM during an evaluation that
// cannot observe it (a comprehension of 2·10⁹ elements) ends preview within
// the grace, exit 143, saying so — and until then the bounds stay armed
// (a signal used to disarm them, letting one run take 14.6 GB).
func TestSignalEndsARunawayEvaluation(t *testing.T) {
	work, base := runawayChange(t)
	r := start(t, "flotilla", "preview", work, "--base", base, "--eval-memory", "20Gi", "--eval-timeout", "1h")
	waitForCPU(t, r.cmd.Process.Pid, 2*time.Second, time.Minute) // deep in the evaluation
	started := time.Now()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.exited:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 143 {
			t.Errorf("%v, want exit 143", err)
		}
	case <-time.After(signalGrace + 20*time.Second):
		t.Fatalf("still running %s after SIGTERM", time.Since(started))
	}
	if out := logs(r); !strings.Contains(out, "terminated (SIGTERM)") {
		t.Errorf("stderr:\n%s", out)
	}
}

// stuckOnSignal installs Main's signal handling, then works on after the
// first signal as uninterruptible work would.
func stuckOnSignal() {
	ctx, stop := notifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintln(os.Stderr, "ready")
	<-ctx.Done()
	fmt.Fprintf(os.Stderr, "cancelled: %v\n", context.Cause(ctx))
	time.Sleep(time.Hour)
}

// TestSecondSignalExitsAtOnce checks that the first signal cancels the
// context with the signal as cause and the second kills the process, even
// when the work ignores the context.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	r := start(t, "stuck-on-signal")
	r.waitFor("ready", time.Minute)
	if err := r.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	r.waitFor("cancelled: interrupted (SIGINT)", stopWithin)
	exit, _, _ := r.signalAndWait(syscall.SIGINT)
	ws, ok := exit.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Errorf("after a second SIGINT: %v, want killed by SIGINT", exit)
	}
}

// TestSIGINTStopsStatusWait interrupts `status --wait` while no cluster has
// reported: it exits 130 saying what it waited for.
func TestSIGINTStopsStatusWait(t *testing.T) {
	repo := gittest.New(t)
	repo.Commit(map[string]string{"fleet.cue": "package fleet\n"})
	rev := strings.Repeat("a", 40)
	r := start(t, "flotilla", "status", "--repo", repo.URL, "--wait", "--revision", rev, "--timeout", "1h")
	r.waitFor("waiting for revision aaaaaaa", time.Minute)
	exit, stderr, _ := r.signalAndWait(syscall.SIGINT)
	if exit.ExitCode() != 130 || !strings.Contains(stderr, "flotilla: waiting for revision aaaaaaa (") || !strings.Contains(stderr, "interrupted (SIGINT)") {
		t.Errorf("exit code %d, stderr:\n%s", exit.ExitCode(), stderr)
	}
}

// TestEvaluationIsBounded: vet on a fleet whose evaluation runs away (a
// comprehension of 2·10⁹ elements) stops at --eval-memory, or at
// --eval-timeout, exit 1, saying which bound it hit — in CI, a pull
// request cannot make the preview eat the machine.
func TestEvaluationIsBounded(t *testing.T) {
	repo := t.TempDir()
	writeTestFile(t, filepath.Join(repo, "fleet.cue"), runawayFleet)
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--eval-memory", "300Mi"}, "more than --eval-memory 300Mi: stopped"},
		{[]string{"--eval-timeout", "2s", "--eval-memory", "20Gi"}, "took longer than --eval-timeout 2s: stopped"},
	} {
		r := start(t, "flotilla", append([]string{"vet", repo}, tc.flags...)...)
		select {
		case err := <-r.exited:
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != exitFailed {
				t.Errorf("%v: %v, want exit %d", tc.flags, err, exitFailed)
			}
		case <-time.After(2 * time.Minute):
			t.Fatalf("%v: still running after 2m", tc.flags)
		}
		if out := logs(r); !strings.Contains(out, tc.want) {
			t.Errorf("%v: stderr\n%s\nwant %q", tc.flags, out, tc.want)
		}
	}

	// preview stopped by a bound exits 2, "trouble": the documented CI
	// recipe fails the job instead of reading it as "something changes".
	work, base := runawayChange(t)
	r := start(t, "flotilla", "preview", work, "--base", base, "--eval-timeout", "2s", "--eval-memory", "20Gi")
	select {
	case err := <-r.exited:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != exitPreviewTrouble {
			t.Errorf("preview: %v, want exit %d", err, exitPreviewTrouble)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("preview still running after 2m")
	}
	if out := logs(r); !strings.Contains(out, "took longer than --eval-timeout 2s: stopped") {
		t.Errorf("preview: stderr\n%s", out)
	}
}
