package report

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/sync/apply"
)

// The fleet as a person asks about it first, at any size: how many
// clusters stand where, how far the tip has gone, what is wrong (each
// distinct problem once, with who has it), and how each bundle fares across
// the fleet. `flotilla status` prints it above its table and the status
// page is built from it; both read it through this one definition.

// Standing is where a cluster stands as the fleet view counts it: its
// phase, or Stale when it has not reported for too long (whatever it said
// last).
type Standing string

// Standings, in the order the view shows them: what needs a person first.
const (
	StandingFailed      Standing = "Failed"
	StandingRolledBack  Standing = "RolledBack"
	StandingStale       Standing = "Stale"
	StandingProgressing Standing = "Progressing"
	StandingWaiting     Standing = "Waiting"
	StandingReady       Standing = "Ready"
)

// Standings lists every standing in the view's order.
var Standings = []Standing{StandingFailed, StandingRolledBack, StandingStale, StandingProgressing, StandingWaiting, StandingReady}

// rank is a standing's place in Standings (an unknown phase after them).
func (s Standing) rank() int {
	if i := slices.Index(Standings, s); i >= 0 {
		return i
	}
	return len(Standings)
}

// StandingOf is where st stands at now: Stale once it has not reported for
// longer than stale (a positive duration), else its phase.
func StandingOf(st Status, now time.Time, stale time.Duration) Standing {
	if stale > 0 && now.Sub(st.ReportedAt) > stale {
		return StandingStale
	}
	return Standing(st.Phase)
}

// ViewOptions say when the view is taken and what it compares with.
type ViewOptions struct {
	Now time.Time
	// Stale is how long a cluster may be silent before it counts as Stale.
	Stale time.Duration
	// Tip is the fleet branch's tip, and TipTime when it was committed
	// (zero when unknown).
	Tip     string
	TipTime time.Time
	// Controls are the pause and holds on the approvals branch (nil: not
	// read).
	Controls *Controls
	// Invariants are the fleet's invariants that what the clusters run
	// breaks, positioned.
	Invariants []string
}

// FleetView is the fleet at a glance.
type FleetView struct {
	Clusters int `json:"clusters"`
	// Counts are the clusters by standing, in Standings order, every
	// standing present (zero included).
	Counts []StandingCount `json:"counts"`
	// Controls are the pause and holds in effect (flotilla rollout pause,
	// hold): what keeps clusters where they are, shown first.
	Controls *Controls `json:"controls,omitempty"`
	// Invariants are the fleet's invariants that what the clusters run
	// now breaks (a cluster went offline, a region lost a service).
	Invariants []string `json:"invariants,omitempty"`
	// Tip is how far the fleet tip has gone; nil when it is not known.
	Tip *TipProgress `json:"tip,omitempty"`
	// Rollout is the rollout of the tip wave by wave, when it has waves
	// (in `status -o json` it is the document's own rollout).
	Rollout *RolloutView `json:"-"`
	// Problems are the distinct problems, worst first.
	Problems []ProblemGroup `json:"problems"`
	// Bundles are each bundle's clusters by phase, by name.
	Bundles []BundleCounts `json:"bundles"`
}

// StandingCount is how many clusters stand somewhere.
type StandingCount struct {
	Standing Standing `json:"standing"`
	Count    int      `json:"count"`
}

// TipProgress is how far the fleet tip has gone: how many clusters are
// Ready at it, and how long it has taken since it was committed — until
// the last cluster became Ready, or until now while some are not.
type TipProgress struct {
	Revision  string     `json:"revision"`
	Committed *time.Time `json:"committed,omitempty"`
	Ready     int        `json:"ready"`
	Total     int        `json:"total"`
	// Took is from the commit to the last cluster Ready at it (Done), or
	// to now; zero when the commit time is not known.
	Took time.Duration `json:"took,omitempty"`
	Done bool          `json:"done"`
}

// ProblemGroup is one distinct problem: its message once, with the
// clusters and bundles that have it.
type ProblemGroup struct {
	Standing Standing `json:"standing"`
	Message  string   `json:"message"`
	Clusters []string `json:"clusters"`
	Bundles  []string `json:"bundles,omitempty"`
}

// BundleCounts is one bundle across the fleet: how many clusters have it
// in each phase.
type BundleCounts struct {
	Name   string              `json:"name"`
	Phases map[apply.Phase]int `json:"phases"`
}

// Total is the number of clusters that have the bundle.
func (b BundleCounts) Total() int {
	n := 0
	for _, c := range b.Phases {
		n += c
	}
	return n
}

// NewFleetView builds the view of statuses.
func NewFleetView(statuses []Status, opts ViewOptions) *FleetView {
	v := &FleetView{Clusters: len(statuses), Problems: []ProblemGroup{}, Bundles: []BundleCounts{}, Invariants: opts.Invariants}
	if opts.Controls != nil {
		if c := opts.Controls.InEffect(opts.Now); c.Pause != nil || len(c.Holds) > 0 {
			v.Controls = &c
		}
	}
	counts := map[Standing]int{}
	problems := map[string]*ProblemGroup{}
	bundles := map[string]*BundleCounts{}
	problem := func(s Standing, msg, cluster, bundle string) {
		msg = Generalize(errtext.Clean(msg), cluster)
		key := string(s) + "\x00" + msg
		g := problems[key]
		if g == nil {
			g = &ProblemGroup{Standing: s, Message: msg}
			problems[key] = g
		}
		if !slices.Contains(g.Clusters, cluster) {
			g.Clusters = append(g.Clusters, cluster)
		}
		if bundle != "" && !slices.Contains(g.Bundles, bundle) {
			g.Bundles = append(g.Bundles, bundle)
		}
	}
	for _, st := range statuses {
		s := StandingOf(st, opts.Now, opts.Stale)
		counts[s]++
		name := st.Cluster.Name
		if s == StandingStale {
			problem(s, fmt.Sprintf("has not reported for more than %s (the cluster is offline, or its agent stopped)", opts.Stale), name, "")
		}
		if st.Message != "" && st.Phase != ClusterReady {
			problem(Standing(st.Phase), st.Message, name, "")
		}
		for _, b := range st.Bundles {
			bc := bundles[b.Name]
			if bc == nil {
				bc = &BundleCounts{Name: b.Name, Phases: map[apply.Phase]int{}}
				bundles[b.Name] = bc
			}
			bc.Phases[b.Phase]++
			if b.Message != "" && b.Phase != apply.PhaseReady && b.Phase != apply.PhasePruned {
				problem(Standing(b.Phase), b.Message, name, b.Name)
			}
		}
	}
	for _, s := range Standings {
		v.Counts = append(v.Counts, StandingCount{Standing: s, Count: counts[s]})
	}
	for s, n := range counts {
		if s.rank() == len(Standings) {
			v.Counts = append(v.Counts, StandingCount{Standing: s, Count: n})
		}
	}
	slices.SortStableFunc(v.Counts[len(Standings):], func(a, b StandingCount) int { return cmp.Compare(a.Standing, b.Standing) })
	for _, g := range problems {
		slices.Sort(g.Clusters)
		slices.Sort(g.Bundles)
		v.Problems = append(v.Problems, *g)
	}
	slices.SortFunc(v.Problems, func(a, b ProblemGroup) int {
		return cmp.Or(cmp.Compare(a.Standing.rank(), b.Standing.rank()), cmp.Compare(len(b.Clusters), len(a.Clusters)),
			cmp.Compare(a.Message, b.Message))
	})
	for _, b := range bundles {
		v.Bundles = append(v.Bundles, *b)
	}
	slices.SortFunc(v.Bundles, func(a, b BundleCounts) int { return cmp.Compare(a.Name, b.Name) })
	if opts.Tip != "" {
		v.Tip = tipProgress(statuses, opts)
	}
	v.Rollout = RolloutOf(statuses, opts.Tip)
	if v.Rollout != nil && v.Rollout.Revision == opts.Tip && !opts.TipTime.IsZero() {
		committed := opts.TipTime.UTC()
		v.Rollout.Committed = &committed
	}
	return v
}

// tipProgress is how far the tip has gone on statuses.
func tipProgress(statuses []Status, opts ViewOptions) *TipProgress {
	t := &TipProgress{Revision: opts.Tip, Total: len(statuses)}
	var last time.Time
	for _, st := range statuses {
		if st.AppliedRevision == opts.Tip && st.Phase == ClusterReady {
			t.Ready++
			if st.ReadySince != nil && st.ReadySince.After(last) {
				last = *st.ReadySince
			}
		}
	}
	t.Done = t.Total > 0 && t.Ready == t.Total
	if !opts.TipTime.IsZero() {
		committed := opts.TipTime.UTC()
		t.Committed = &committed
		end := opts.Now
		if t.Done && !last.IsZero() {
			end = last
		}
		t.Took = max(0, end.Sub(committed)).Round(time.Second)
	}
	return t
}

// Generalize is a cluster's message as the fleet view groups it: the
// cluster's own name, where the message says it, reads "<cluster>", so one
// error on many clusters is one problem.
func Generalize(msg, cluster string) string {
	if cluster == "" || !strings.Contains(msg, cluster) {
		return msg
	}
	return regexp.MustCompile(`\b`+regexp.QuoteMeta(cluster)+`\b`).ReplaceAllLiteralString(msg, "<cluster>")
}

// SortForView orders statuses as the view lists them: failed first, then
// stale, progressing, waiting, ready; by name within each.
func SortForView(statuses []Status, now time.Time, stale time.Duration) {
	slices.SortStableFunc(statuses, func(a, b Status) int {
		return cmp.Or(cmp.Compare(StandingOf(a, now, stale).rank(), StandingOf(b, now, stale).rank()),
			cmp.Compare(a.Cluster.Name, b.Cluster.Name))
	})
}

// Filter narrows the clusters a view lists. Each field set must match (an
// empty one matches all); within a field, any of its values.
type Filter struct {
	// Standings match a cluster's standing (Stale included).
	Standings []Standing
	Waves     []string
	Regions   []string
	// Bundles match clusters that have any of these bundles.
	Bundles []string
	// Selector matches the cluster's labels.
	Selector labels.Selector
}

// Empty says whether the filter lets every cluster through.
func (f Filter) Empty() bool {
	return len(f.Standings)+len(f.Waves)+len(f.Regions)+len(f.Bundles) == 0 && (f.Selector == nil || f.Selector.Empty())
}

// Apply returns the statuses the filter lets through, in their order.
func (f Filter) Apply(statuses []Status, now time.Time, stale time.Duration) []Status {
	if f.Empty() {
		return statuses
	}
	var out []Status
	for _, st := range statuses {
		if f.matches(st, now, stale) {
			out = append(out, st)
		}
	}
	return out
}

func (f Filter) matches(st Status, now time.Time, stale time.Duration) bool {
	anyOf := func(want []string, have string) bool {
		return len(want) == 0 || slices.ContainsFunc(want, func(w string) bool { return strings.EqualFold(w, have) })
	}
	if len(f.Standings) > 0 && !slices.ContainsFunc(f.Standings, func(s Standing) bool {
		return strings.EqualFold(string(s), string(StandingOf(st, now, stale)))
	}) {
		return false
	}
	if !anyOf(f.Waves, st.Wave) || !anyOf(f.Regions, st.Cluster.Region) {
		return false
	}
	if len(f.Bundles) > 0 && !slices.ContainsFunc(st.Bundles, func(b BundleStatus) bool { return anyOf(f.Bundles, b.Name) }) {
		return false
	}
	return f.Selector == nil || f.Selector.Matches(labels.Set(st.Cluster.Labels))
}
