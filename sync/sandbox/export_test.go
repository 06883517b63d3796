package sandbox

import "context"

// Probe dials addr from an offline worker of the pool.
func Probe(p *Pool, ctx context.Context, addr string) error { return p.probe(ctx, addr) }
