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

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

func main() {
	os.Exit(Main())
}

// Exit codes.
const (
	exitOK = 0
	// exitFailed: the command ran and found problems (an invalid fleet, a
	// failed apply), or could not run.
	exitFailed = 1
)

// Main runs the flotilla command line with os.Args and returns the exit code.
// The error, if any, is printed once, here.
func Main() int {
	quietLibraries()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, os.Args[1:], os.Stdout, os.Stderr)
}

// run executes one command line with the given streams.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := newRootCmd(stdout, stderr)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var reported *reportedError
	if !errors.As(err, &reported) {
		fmt.Fprintf(stderr, "flotilla: %v\n", err)
	}
	return exitFailed
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
