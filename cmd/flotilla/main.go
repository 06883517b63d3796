// Command flotilla renders, previews and applies a fleet of Kubernetes
// clusters from one Git repository, and runs as the agent in each cluster.
//
// This package is wiring only: flags, output formats and exit codes. The
// work happens in fleet/, render/ and sync/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/flotilla-gitops/flotilla/sync/sandbox"
)

func main() {
	sandbox.Main() // a render worker of another flotilla process never returns
	os.Exit(Main())
}

// Exit codes.
const (
	exitOK = 0
	// exitFailed: the command ran and found problems (an invalid fleet, a
	// failed apply), or could not run.
	exitFailed = 1
	// A command stopped by a signal exits with 128 + the signal's number,
	// as shells report a process killed by it: 130 for SIGINT, 143 for
	// SIGTERM.
	exitSignalBase = 128
)

// Main runs the flotilla command line with os.Args and returns the exit code.
// The error, if any, is printed once, here.
func Main() int {
	quietLibraries()
	ctx, stop := notifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, os.Args[1:], os.Stdout, os.Stderr)
}

// signalError is the cause of a context that a signal ended. It is also
// context.Canceled, so code that checks for cancellation sees it as such.
type signalError struct{ sig os.Signal }

func (e *signalError) Error() string {
	if s, ok := e.sig.(syscall.Signal); ok {
		switch s {
		case syscall.SIGINT:
			return "interrupted (SIGINT)"
		case syscall.SIGTERM:
			return "terminated (SIGTERM)"
		}
	}
	return "stopped by signal " + e.sig.String()
}

func (e *signalError) Is(target error) bool { return target == context.Canceled }

// exitCode is the code a shell expects of a process stopped by the signal.
func (e *signalError) exitCode() int {
	if s, ok := e.sig.(syscall.Signal); ok {
		return exitSignalBase + int(s)
	}
	return exitFailed
}

// signalGrace is how long a command may go on after a signal before the
// process exits all the same.
const signalGrace = 10 * time.Second

// notifyContext returns a context that the first of the signals cancels,
// with a *signalError as its cause. The first signal also restores the
// signals' default handling, so that a second one ends the process at once
// whatever it is doing (as Timoni's restoreSignalHandling does), and
// signalGrace after it the process exits even if nothing returned. stop
// releases the signals.
func notifyContext(parent context.Context, sigs ...os.Signal) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	go func() {
		select {
		case sig := <-ch:
			signal.Stop(ch)
			e := &signalError{sig}
			cancel(e)
			// Work that cannot observe ctx (a CUE evaluation deep in a
			// runaway comprehension) would keep the process: it ends
			// after a grace, however deep it is.
			time.AfterFunc(signalGrace, func() {
				fmt.Fprintf(os.Stderr, "flotilla: %v, and still busy after %s (work that cannot be interrupted, such as a CUE evaluation): exiting\n", e, signalGrace)
				os.Exit(e.exitCode())
			})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		cancel(nil)
	}
}

// run executes one command line with the given streams.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	var sig *signalError
	if errors.As(context.Cause(ctx), &sig) && !endsCleanlyOnSignal(cmd) {
		// Stopped by a signal: say so, with what the command was doing
		// (its error names it), and exit as shells expect.
		switch {
		case err == nil:
			fmt.Fprintf(stderr, "flotilla: %v\n", sig)
		case errors.Is(err, sig):
			fmt.Fprintf(stderr, "flotilla: %v\n", err)
		default:
			fmt.Fprintf(stderr, "flotilla: %v: %v\n", sig, err)
		}
		return sig.exitCode()
	}
	if err == nil {
		return exitOK
	}
	var reported *reportedError
	if !errors.As(err, &reported) {
		fmt.Fprintf(stderr, "flotilla: %v\n", err)
	}
	var coded *exitCodeError
	if errors.As(err, &coded) {
		return coded.code
	}
	return exitFailed
}

// exitCodeError makes the command exit with its code (preview exits as
// diff(1): 1 for a difference, 2 for trouble).
type exitCodeError struct {
	code int
	err  error
}

func (e *exitCodeError) Error() string { return e.err.Error() }
func (e *exitCodeError) Unwrap() error { return e.err }

// interruptible runs work that cannot observe ctx (loading and evaluating
// CUE) on a goroutine of its own, and stops waiting for it when ctx ends:
// it then returns ctx's cause, wrapped with what was being done, and the
// command returns at once; the process exits with the work abandoned.
func interruptible[T any](ctx context.Context, doing string, work func() (T, error)) (T, error) {
	type outcome struct {
		v   T
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		v, err := work()
		done <- outcome{v, err}
	}()
	select {
	case o := <-done:
		return o.v, o.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("%s: %w", doing, context.Cause(ctx))
	}
}

// cleanExitAnnotation marks a command for which a signal is the normal way
// to end (the agent: SIGTERM is how Kubernetes stops a pod), so that it
// exits with its own status rather than 128 + the signal.
const cleanExitAnnotation = "flotilla.dev/signal-ends-cleanly"

func endsCleanlyOnSignal(cmd *cobra.Command) bool {
	return cmd != nil && cmd.Annotations[cleanExitAnnotation] == "true"
}

// quietLibraries silences controller-runtime's global logger (its client
// complains on stderr when no logger is set); Flotilla reports through its
// own results.
func quietLibraries() {
	ctrllog.SetLogger(logr.Discard())
}

// reportedError is returned by a command that has already printed its
// problems (for example every error of an invalid fleet); Main then only sets
// the exit code.
type reportedError struct{ err error }

func (e *reportedError) Error() string { return e.err.Error() }
func (e *reportedError) Unwrap() error { return e.err }
