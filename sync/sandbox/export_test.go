package sandbox

import "context"

// Probe dials addr from an offline worker of the pool.
func Probe(p *Pool, ctx context.Context, addr string) error { return p.probe(ctx, addr) }

// Getenv reads a variable of an offline worker's environment.
func Getenv(p *Pool, ctx context.Context, name string) (string, error) { return p.getenv(ctx, name) }

// WithoutNetworkNamespace makes the pool start its workers as where no
// network namespace can be made (a pod's default seccomp profile).
func WithoutNetworkNamespace(p *Pool) { p.netns.Store(2) }
