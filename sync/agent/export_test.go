package agent

import (
	"context"
	"errors"

	"k8s.io/client-go/tools/cache"

	"github.com/flotilla-gitops/flotilla/sync/apply"
)

// WatchApplied starts the drift watch of the kinds last applied, as Run
// does after each pass.
func (a *Agent) WatchApplied(ctx context.Context) { a.drift.watch(ctx, a.kinds, a.applied) }

// Unmoved is what the drift watch says of an entry's object.
func (a *Agent) Unmoved(e apply.Entry) bool { return a.drift.unmoved(e) }

// BreakWatch calls the watches' error handler, as a reflector does when a
// watch fails.
func (a *Agent) BreakWatch(ctx context.Context) {
	a.drift.watchError(ctx, &cache.Reflector{}, errors.New("watch of configmaps ended: too old resource version"))
}
