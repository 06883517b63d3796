package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/rollout"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// invariantsNow checks the fleet's invariants, as the fleet branch's tip
// writes them, over what the clusters run now: every cluster that
// reported within --stale and is not Failed, with the bundles Ready on it
// (`same`, over planned inputs, is vet's and preview's). A cluster that
// went offline and leaves a critical service in one region breaks it
// here. The fleet is read once per tip; one that cannot be read is a
// warning.
func (sf *statusFlags) invariantsNow(ctx context.Context, warn io.Writer, statuses []report.Status, tip string, now time.Time) []string {
	if !sf.invariants || tip == "" {
		return nil
	}
	f, err := sf.fleetAt(ctx, tip)
	if err != nil {
		fmt.Fprintf(warn, "warning: the fleet's invariants are not checked: %s\n", errtext.Error(err))
		return nil
	}
	st := f.NewLiveInvariantState()
	if st == nil {
		return nil
	}
	for i := range statuses {
		s := &statuses[i]
		if report.StandingOf(*s, now, sf.stale) == report.StandingStale || s.Phase == report.ClusterFailed {
			continue
		}
		st.AddLive(rollout.RunningOf(s))
	}
	if st.WantsAncestry() {
		// withinOneRevisionOf counts versions along the fleet's history.
		if h, err := sf.fleetHistory(); err != nil {
			fmt.Fprintf(warn, "warning: withinOneRevisionOf is not checked: %s\n", errtext.Error(err))
		} else if err := h.Update(ctx, tip); err != nil {
			fmt.Fprintf(warn, "warning: withinOneRevisionOf is not checked: the fleet's history: %s\n", errtext.Error(err))
		} else {
			st.SetAncestry(h.IsAncestor)
		}
	}
	var out []string
	for _, d := range st.Check() {
		out = append(out, d.Error())
	}
	return out
}

// fleetHistory is the fleet branch's history, kept between refreshes.
func (sf *statusFlags) fleetHistory() (*source.History, error) {
	if sf.hist == nil {
		// No checkout is made with it: the cache folder stays unused.
		src, err := source.New(source.Options{URL: sf.fleetURL(), Branch: sf.tip, Auth: sf.auth, CacheDir: os.TempDir()})
		if err != nil {
			return nil, err
		}
		sf.hist = src.NewHistory()
	}
	return sf.hist, nil
}

// fleetAt loads the fleet at the tip (kept while the tip stays).
func (sf *statusFlags) fleetAt(ctx context.Context, tip string) (*fleet.Fleet, error) {
	if sf.invTip != "" && sf.invTip == tip {
		return sf.invFleet, nil
	}
	cache, err := os.MkdirTemp("", "flotilla-status-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(cache)
	src, err := source.New(source.Options{URL: sf.fleetURL(), Branch: sf.tip, Auth: sf.auth, CacheDir: cache})
	if err != nil {
		return nil, err
	}
	co, err := src.Fetch(ctx, tip)
	if err != nil {
		return nil, err
	}
	// The fleet is untrusted: its evaluation is bounded like vet's
	// (--eval-timeout, --eval-memory).
	if err := sf.ff.startGuard(ctx); err != nil {
		return nil, err
	}
	defer sf.ff.stopGuard()
	f, err := interruptible(ctx, "loading the fleet at "+short(tip), func() (*fleet.Fleet, error) {
		return fleet.Load(co.Dir, fleet.LoadOptions{Path: sf.ff.path, DisplayDir: sf.ff.path})
	})
	if err != nil {
		return nil, fmt.Errorf("the fleet at %s does not load", short(tip))
	}
	sf.invFleet, sf.invTip = f, tip
	return f, nil
}
