// Package rollout decides, for one cluster, whether it may apply the
// fleet's new revision now, from what the other clusters say on their
// status branches: the rollout gate of issue 15, with no hub. Every agent
// runs the same decision on the same Git data, so the fleet moves wave by
// wave without anyone coordinating it.
//
// Decide is a pure function: the agent reads the statuses and evaluates
// the waves, Decide says apply, wait (for whom, until when) or halted (by
// whom).
package rollout

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-gitops/flotilla/internal/gitrev"
)

// Cluster is what the decision knows of one cluster of the fleet.
type Cluster struct {
	Name string
	// Wave is the cluster's wave index in the rollout of the revision.
	Wave int
	// Reported says whether the cluster has a status at all; the rest is
	// its status.
	Reported bool
	// Revision is the revision it last applied in full; Ready whether it
	// is Ready at it, since ReadySince. Seen is the tip its last pass
	// worked on, and Failed whether that pass failed.
	Revision   string
	Ready      bool
	ReadySince time.Time
	Seen       string
	Failed     bool
	// ReportedAt is when it last reported (heartbeats included).
	ReportedAt time.Time
}

// Settings are the rollout's, as fleet.Rollout gives them.
type Settings struct {
	Waves          []string
	Bake           time.Duration
	Stale          time.Duration
	BlockOffline   bool
	Paused         bool
	MaxUnavailable int  // of this cluster's wave; 0: no limit
	Approve        bool // this cluster's wave waits for an approval
	// Rollback: a cluster that failed at the revision goes back (and,
	// once more than MaxFailures of a wave failed, the wave does).
	Rollback    bool
	MaxFailures int
	// Revert: the revision is a revert (flotilla rollout revert) that
	// goes through the waves without their bake.
	Revert bool
}

// Decision is what a cluster does with the revision.
type Decision struct {
	Apply bool
	// Halted names the earlier-wave cluster whose failure at the revision
	// stops the rollout.
	Halted string
	// WaitingFor are the clusters the wave waits for; Until, when set, is
	// the end of the bake.
	WaitingFor []string
	Until      time.Time
	// Approval says the wave waits for an approval.
	Approval bool
	// Settled, for a cluster at the revision, says its wave-mates are all
	// Ready at it too (or offline, or the rollout does not roll back): no
	// failure of its wave can send it back any more.
	Settled bool
	// RollBack says the cluster, which took the revision, goes back to
	// what it had: more than MaxFailures clusters of its wave failed at it
	// (Halted names the first).
	RollBack bool
	// Reason says it in a sentence, for status and logs.
	Reason string
}

// Decide decides for cluster me whether to apply revision now. clusters
// are every cluster known (the inventory and every status branch), me
// included, with their waves in revision's rollout; approved says whether
// me's wave has an approval for revision.
func Decide(me Cluster, revision string, s Settings, clusters []Cluster, approved bool, now time.Time) Decision {
	if len(s.Waves) == 0 {
		return Decision{Apply: true, Reason: "no waves: everywhere at once"}
	}
	if me.Wave < 0 || me.Wave >= len(s.Waves) {
		return Decision{Reason: fmt.Sprintf("cluster %s is in no wave of the rollout", me.Name)}
	}
	wave := s.Waves[me.Wave]
	if d, ok := waveFailed(me, revision, s, clusters); ok {
		return d
	}
	if s.Paused && me.Wave > 0 {
		return Decision{Reason: fmt.Sprintf("the rollout is paused: wave %s keeps its revision", wave)}
	}
	if me.Revision == revision {
		return Decision{Apply: true, Settled: waveSettled(me, revision, s, clusters, now), Reason: "already at " + gitrev.Short(revision)}
	}

	// Every cluster of the earlier waves: Ready at the revision, for bake.
	var waiting []string
	var readyAt time.Time
	for _, c := range sorted(clusters) {
		if c.Wave >= me.Wave {
			continue
		}
		if !c.Reported || now.Sub(c.ReportedAt) > s.Stale {
			if s.BlockOffline {
				waiting = append(waiting, c.Name+" (offline)")
			}
			continue
		}
		if c.Seen == revision && c.Failed {
			return Decision{Halted: c.Name, Reason: fmt.Sprintf("halted: %s (wave %s) failed at %s", c.Name, s.Waves[c.Wave], gitrev.Short(revision))}
		}
		if c.Revision != revision || !c.Ready {
			waiting = append(waiting, c.Name)
			continue
		}
		if c.ReadySince.After(readyAt) {
			readyAt = c.ReadySince
		}
	}
	if len(waiting) > 0 {
		return Decision{WaitingFor: waiting, Reason: fmt.Sprintf("wave %s waits for the earlier waves: %s", wave, strings.Join(waiting, ", "))}
	}
	if until := readyAt.Add(s.Bake); !readyAt.IsZero() && now.Before(until) && !s.Revert {
		return Decision{Until: until, Reason: fmt.Sprintf("wave %s waits for the earlier waves to bake until %s", wave, until.UTC().Format(time.RFC3339))}
	}
	if s.Approve && !approved {
		return Decision{Approval: true, Reason: fmt.Sprintf("wave %s waits for an approval of %s (flotilla rollout approve --wave %s --revision %s)", wave, gitrev.Short(revision), wave, revision)}
	}

	// Within the wave: at most MaxUnavailable at a time, in name order.
	if s.MaxUnavailable > 0 {
		var pending []string
		for _, c := range sorted(clusters) {
			offline := c.Name != me.Name && (!c.Reported || now.Sub(c.ReportedAt) > s.Stale)
			done := c.Revision == revision && c.Ready
			if c.Wave == me.Wave && !done && (!offline || s.BlockOffline) {
				pending = append(pending, c.Name)
			}
		}
		if i := slices.Index(pending, me.Name); i >= s.MaxUnavailable {
			return Decision{WaitingFor: pending[:i], Reason: fmt.Sprintf("wave %s applies %d at a time: after %s", wave, s.MaxUnavailable, strings.Join(pending[:i], ", "))}
		}
	}
	return Decision{Apply: true, Reason: fmt.Sprintf("wave %s may apply %s", wave, gitrev.Short(revision))}
}

// waveFailed is the decision of a rollout with rollback once more than
// MaxFailures clusters of me's wave failed at the revision: me goes back
// if it took the revision, and does not take it otherwise.
func waveFailed(me Cluster, revision string, s Settings, clusters []Cluster) (Decision, bool) {
	if !s.Rollback {
		return Decision{}, false
	}
	var failed []string
	for _, c := range sorted(clusters) {
		if c.Wave == me.Wave && c.Name != me.Name && c.Seen == revision && c.Failed {
			failed = append(failed, c.Name)
		}
	}
	if len(failed) <= s.MaxFailures {
		return Decision{}, false
	}
	wave, short := s.Waves[me.Wave], gitrev.Short(revision)
	why := fmt.Sprintf("%d of wave %s failed at %s (maxFailures %d): %s", len(failed), wave, short, s.MaxFailures, strings.Join(failed, ", "))
	if me.Revision == revision {
		return Decision{RollBack: true, Halted: failed[0], Reason: "rolled back: " + why}, true
	}
	return Decision{Halted: failed[0], Reason: "halted: " + why}, true
}

// waveSettled reports whether no failure of me's wave at the revision can
// send me back any more: the rollout does not roll back, or every other
// cluster of the wave that reports is Ready at the revision.
func waveSettled(me Cluster, revision string, s Settings, clusters []Cluster, now time.Time) bool {
	if !s.Rollback {
		return true
	}
	for _, c := range clusters {
		offline := !c.Reported || now.Sub(c.ReportedAt) > s.Stale
		if c.Wave == me.Wave && c.Name != me.Name && !offline && (c.Revision != revision || !c.Ready) {
			return false
		}
	}
	return true
}

func sorted(clusters []Cluster) []Cluster {
	out := slices.Clone(clusters)
	slices.SortFunc(out, func(a, b Cluster) int { return strings.Compare(a.Name, b.Name) })
	return out
}
