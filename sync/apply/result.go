package apply

import (
	"time"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Phase is where a bundle stands after a sync.
type Phase string

// Phases.
const (
	// Ready: applied, and its objects are ready (or readiness was not
	// awaited).
	PhaseReady Phase = "Ready"
	// Progressing: applied, not ready within the bundle's timeout.
	PhaseProgressing Phase = "Progressing"
	// Failed: not applied (evaluation, render or apply failed); the last
	// good state stays.
	PhaseFailed Phase = "Failed"
	// Skipped: not applied because a dependency is not Ready.
	PhaseSkipped Phase = "Skipped"
	// Pruned: the bundle left the cluster's plan and its objects were
	// deleted.
	PhasePruned Phase = "Pruned"
	// Drifted: objects changed by hand and the bundle only reports drift.
	PhaseDrifted Phase = "Drifted"
)

// Counts are how many objects a sync touched, by what it did.
type Counts struct {
	Created    int `json:"created"`
	Configured int `json:"configured"`
	Unchanged  int `json:"unchanged"`
	Deleted    int `json:"deleted"`
	Drifted    int `json:"drifted"`
}

// Action is what a sync did, or a diff says it would do, to one object. The
// values shared with fluxcd/pkg/ssa's Action are spelt as ssa spells them.
type Action string

// Actions.
const (
	ActionCreated    Action = Action(ssa.CreatedAction)
	ActionConfigured Action = Action(ssa.ConfiguredAction)
	ActionUnchanged  Action = Action(ssa.UnchangedAction)
	ActionDeleted    Action = Action(ssa.DeletedAction)
	// ActionSkipped: left alone (the reconcile-disabled annotation, or
	// IfNotPresent on an object that exists).
	ActionSkipped Action = Action(ssa.SkippedAction)
	// ActionDrifted: changed outside Git and left so (driftPolicy: report).
	ActionDrifted Action = "drifted"
	// ActionCorrected: changed outside Git and put back.
	ActionCorrected Action = "corrected"
	// ActionOrphaned: a Namespace or CRD the bundle no longer has, left
	// because Flotilla did not create it or other objects still use it.
	ActionOrphaned Action = "orphaned"
)

// ObjectAction is what happened to one object.
type ObjectAction struct {
	// Object is "Kind/namespace/name".
	Object string `json:"object"`
	Action Action `json:"action"`
	// Fields are the JSON pointers of drifted fields.
	Fields []string `json:"fields,omitempty"`
}

// BundleResult is one bundle's sync.
type BundleResult struct {
	Name     string         `json:"name"`
	Phase    Phase          `json:"phase"`
	Message  string         `json:"message,omitempty"`
	Counts   Counts         `json:"counts"`
	Objects  []ObjectAction `json:"objects,omitempty"`
	Errors   []string       `json:"errors,omitempty"`
	Duration time.Duration  `json:"duration"`
	// Requests is the number of API requests the bundle's sync made.
	Requests int64 `json:"requests"`
	// SelfUpdate is the agent's own new Deployment, held back for the
	// agent to apply last (Manager.ApplySelf).
	SelfUpdate *SelfUpdate `json:"-"`
	// NotReady says the bundle is Progressing because its readiness wait
	// ran out (not because it was cancelled).
	NotReady bool `json:"-"`
	// Incremental says the sync applied in proportion to the change
	// (Bundle.Incremental), not a full one.
	Incremental bool `json:"-"`
	// InSync are the objects the sync's dry run found as rendered, with
	// the metadata of the live copy it compared: the agent's watch vouches
	// for them while they stay so, though another manager wrote them last
	// (a controller's annotation), so that they are not dry-run again.
	InSync map[object.ObjMetadata]metav1.ObjectMeta `json:"-"`
}

// Result is one sync of a cluster.
type Result struct {
	Bundles []BundleResult `json:"bundles"`
	// Guard is set when the mass-deletion guard stopped every deletion of
	// this sync, and says why.
	Guard    string        `json:"guard,omitempty"`
	Duration time.Duration `json:"duration"`
	Requests int64         `json:"requests"`
}

// SelfUpdate is the agent's own new Deployment that a bundle held back,
// if one did.
func (r *Result) SelfUpdate() *SelfUpdate {
	for _, b := range r.Bundles {
		if b.SelfUpdate != nil {
			return b.SelfUpdate
		}
	}
	return nil
}

// Failed reports whether any bundle failed or was skipped.
func (r *Result) Failed() bool {
	for _, b := range r.Bundles {
		if b.Phase == PhaseFailed || b.Phase == PhaseSkipped {
			return true
		}
	}
	return false
}

// Bundle returns the named bundle's result, or nil.
func (r *Result) Bundle(name string) *BundleResult {
	for i := range r.Bundles {
		if r.Bundles[i].Name == name {
			return &r.Bundles[i]
		}
	}
	return nil
}
