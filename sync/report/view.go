package report

import (
	"fmt"
	"slices"
	"time"

	"github.com/flotilla-gitops/flotilla/internal/english"
)

// The fleet's views computed from the status files, next to the types they
// read: the rollout of a revision wave by wave, and which clusters are
// still to take a revision. The command line shows them.

// Progress splits clusters into those still to apply the revision and
// those that failed at it (or whose rollout of it halted: they never
// will): what `flotilla status --wait` waits on.
func Progress(statuses []Status, revision string) (pending, failed []string) {
	for _, st := range statuses {
		switch {
		case st.SeenRevision == revision && st.Phase == ClusterFailed:
			failed = append(failed, st.Cluster.Name)
		case st.Rollout != nil && st.Rollout.Revision == revision && st.Rollout.State == RolloutRolledBack:
			failed = append(failed, st.Cluster.Name+" (rolled back)")
		case st.Rollout != nil && st.Rollout.Revision == revision && st.Rollout.State == RolloutHalted:
			failed = append(failed, st.Cluster.Name+" (rollout halted by "+st.Rollout.HaltedBy+")")
		case st.AppliedRevision != revision || st.Phase != ClusterReady:
			pending = append(pending, st.Cluster.Name)
		}
	}
	return pending, failed
}

// WavesOf is the waves of a revision's rollout, as the clusters that saw
// it report them.
func WavesOf(statuses []Status, revision string) []string {
	for _, st := range statuses {
		if r := st.Rollout; r != nil && r.Revision == revision && len(r.Waves) > 0 {
			return r.Waves
		}
	}
	return nil
}

// RolloutView is where the rollout of one revision stands, from the
// status files: per wave, which clusters are Ready at it, baking, waiting,
// halted. `flotilla status` shows it as text, JSON and HTML.
type RolloutView struct {
	Revision string `json:"revision"`
	// Committed is when the revision was committed, when known: the
	// waves' Ready times count from it.
	Committed *time.Time `json:"committed,omitempty"`
	Waves     []WaveView `json:"waves"`
	// NotSeen are clusters that have not reported the revision yet.
	NotSeen []string `json:"notSeen,omitempty"`
}

// WaveState is where one wave of a rollout stands.
type WaveState string

// Wave states.
const (
	WaveDone     WaveState = "Done"     // every cluster Ready at the revision
	WaveApplying WaveState = "Applying" // taking it
	WaveBaking   WaveState = "Baking"   // waiting for the earlier waves' bake
	WaveWaiting  WaveState = "Waiting"  // for earlier waves, an approval, a turn
	WaveHalted   WaveState = "Halted"   // an earlier wave failed
	WaveFailed   WaveState = "Failed"   // a cluster of the wave failed at the revision
	WaveEmpty    WaveState = "Empty"    // no cluster has reported the revision in it
)

func (s WaveState) String() string { return string(s) }

// WaveView is one wave of a RolloutView.
type WaveView struct {
	Name     string   `json:"name"`
	Clusters []string `json:"clusters"`
	// Ready counts the clusters Ready at the revision.
	Ready      int        `json:"ready"`
	State      WaveState  `json:"state"`
	Until      *time.Time `json:"until,omitempty"`
	WaitingFor []string   `json:"waitingFor,omitempty"`
	HaltedBy   string     `json:"haltedBy,omitempty"`
	Failed     []string   `json:"failed,omitempty"`
	Message    string     `json:"message,omitempty"`
	// FirstReady and LastReady are when the wave's first and last
	// clusters Ready at the revision became so.
	FirstReady *time.Time `json:"firstReady,omitempty"`
	LastReady  *time.Time `json:"lastReady,omitempty"`
}

// RolloutOf builds the view of revision's rollout (the fleet tip's); nil
// when no cluster reports a rollout with waves for it.
func RolloutOf(statuses []Status, revision string) *RolloutView {
	if revision == "" {
		// No tip known: the newest revision a cluster reports a rollout of.
		var newest time.Time
		for _, st := range statuses {
			if st.Rollout != nil && st.ReportedAt.After(newest) {
				revision, newest = st.Rollout.Revision, st.ReportedAt
			}
		}
	}
	waves := WavesOf(statuses, revision)
	if len(waves) == 0 {
		return nil
	}
	v := &RolloutView{Revision: revision}
	byWave := map[string]*WaveView{}
	for _, w := range waves {
		v.Waves = append(v.Waves, WaveView{Name: w})
	}
	for i := range v.Waves {
		byWave[v.Waves[i].Name] = &v.Waves[i]
	}
	for _, st := range statuses {
		w := byWave[st.Wave]
		if st.SeenRevision != revision || st.Rollout == nil || st.Rollout.Revision != revision || w == nil {
			v.NotSeen = append(v.NotSeen, st.Cluster.Name)
			continue
		}
		w.Clusters = append(w.Clusters, st.Cluster.Name)
		r := st.Rollout
		switch {
		case st.AppliedRevision == revision && (st.Phase == ClusterReady || st.Phase == ClusterWaiting):
			w.Ready++
			if t := st.ReadySince; t != nil {
				if w.FirstReady == nil || t.Before(*w.FirstReady) {
					w.FirstReady = t
				}
				if w.LastReady == nil || t.After(*w.LastReady) {
					w.LastReady = t
				}
			}
		case (st.Phase == ClusterFailed && r.State == RolloutApplied) || r.State == RolloutRolledBack:
			w.Failed = append(w.Failed, st.Cluster.Name)
		case r.State == RolloutHalted:
			w.HaltedBy, w.Message = r.HaltedBy, r.Message
		case r.State == RolloutWaiting:
			for _, c := range r.WaitingFor {
				if !slices.Contains(w.WaitingFor, c) {
					w.WaitingFor = append(w.WaitingFor, c)
				}
			}
			if r.Until != nil && (w.Until == nil || r.Until.After(*w.Until)) {
				w.Until = r.Until
			}
			if w.Message == "" {
				w.Message = r.Message
			}
		}
	}
	for i := range v.Waves {
		w := &v.Waves[i]
		switch {
		case len(w.Clusters) == 0:
			w.State = WaveEmpty
		case len(w.Failed) > 0:
			w.State = WaveFailed
		case w.HaltedBy != "":
			w.State = WaveHalted
		case w.Ready == len(w.Clusters):
			w.State = WaveDone
		case w.Until != nil && len(w.WaitingFor) == 0:
			w.State = WaveBaking
		case len(w.WaitingFor) > 0 || w.Message != "":
			w.State = WaveWaiting
		default:
			w.State = WaveApplying
		}
	}
	return v
}

// ReadyAfter says when the wave's clusters became Ready at the revision,
// counted from its commit: "" when none is, or the commit time is not
// known.
func (wv WaveView) ReadyAfter(committed *time.Time) string {
	if committed == nil || wv.FirstReady == nil || wv.LastReady == nil {
		return ""
	}
	first, last := wv.FirstReady.Sub(*committed).Round(time.Second), wv.LastReady.Sub(*committed).Round(time.Second)
	if wv.Ready == 1 || first == last {
		return last.String()
	}
	return fmt.Sprintf("first %s, last %s", first, last)
}

// detailNames is how many clusters a wave's detail names before it counts
// the rest: a line, whatever the fleet's size.
const detailNames = 5

// Detail says what a wave waits for, in a line.
func (wv WaveView) Detail() string {
	switch wv.State {
	case WaveFailed:
		return "failed on " + english.Names(wv.Failed, detailNames) + ": later waves are halted"
	case WaveHalted:
		return "halted by " + wv.HaltedBy
	case WaveBaking:
		return "the earlier waves bake until " + wv.Until.UTC().Format(time.RFC3339)
	case WaveWaiting:
		if len(wv.WaitingFor) > 0 {
			return "waiting for " + english.Names(wv.WaitingFor, detailNames)
		}
		return wv.Message
	}
	return ""
}
