// Package report publishes what each agent did to Git, and reads it back
// for the fleet: one file per cluster, clusters/<name>.yaml, on that
// cluster's own branch, <prefix>/<name>, so the fleet's real state sits
// beside its desired state, with history and no hub. No two clusters write
// one branch: a report is one push, however many clusters report at once,
// and every reader (status, rollout gates, previews) lists and fetches all
// the branches in two round trips.
package report

import (
	"fmt"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/sync/apply"
)

// Version of the status file format (schemas/status.cue).
const (
	APIVersion = "flotilla.dev/v1alpha1"
	Kind       = "ClusterStatus"
)

// ClusterPhase is where a cluster stands after a pass, as its status file
// says; a bundle's phase is an apply.Phase.
type ClusterPhase string

// Cluster phases.
const (
	// ClusterReady: the revision is applied and every bundle is Ready (or
	// Pruned).
	ClusterReady ClusterPhase = "Ready"
	// ClusterProgressing: applied, some bundle not ready yet (or drifted).
	ClusterProgressing ClusterPhase = "Progressing"
	// ClusterFailed: the pass failed (fetch, evaluation, a bundle, the
	// mass-deletion guard); the last good state stays applied.
	ClusterFailed ClusterPhase = "Failed"
	// ClusterWaiting: the tip waits in the rollout (earlier waves, their
	// bake, an approval, a halt); the cluster keeps its applied revision,
	// Ready there, with drift correction running.
	ClusterWaiting ClusterPhase = "Waiting"
	// ClusterRolledBack: a bundle failed at the tip (or was not Ready
	// within the rollout's progressDeadline) and, with `onFailure:
	// rollback`, is back at what it had; the cluster does not try the tip
	// again (rollout.rolledBack, bundles[].rolledBack).
	ClusterRolledBack ClusterPhase = "RolledBack"
)

// RolloutState is where a cluster stands in the rollout of a revision.
type RolloutState string

// Rollout states, as a status file's rollout says them.
const (
	RolloutApplied RolloutState = "Applied" // the cluster applied the revision (or applies it)
	RolloutWaiting RolloutState = "Waiting" // earlier waves, their bake, an approval, a turn in the wave
	RolloutHalted  RolloutState = "Halted"  // a cluster of an earlier wave failed at the revision
	// RolloutRolledBack: the cluster took the revision and went back
	// (onFailure: rollback).
	RolloutRolledBack RolloutState = "RolledBack"
)

func (s RolloutState) String() string { return string(s) }

// RolloutStatus is where the cluster stands in the rollout of the tip it
// saw (the fleet's rollout, as that revision writes it).
type RolloutStatus struct {
	// Revision is the tip the rollout is about.
	Revision string `json:"revision"`
	// Waves names the rollout's waves in order; none says the revision
	// went everywhere at once (no rollout, or `waves: []`).
	Waves []string `json:"waves"`
	// State is Applied, Waiting or Halted.
	State RolloutState `json:"state"`
	// WaitingFor names the clusters the wave waits for; Until is the end
	// of the earlier waves' bake; HaltedBy the cluster whose failure at
	// the revision halted the rollout.
	WaitingFor []string   `json:"waitingFor,omitempty"`
	Until      *time.Time `json:"until,omitempty"`
	HaltedBy   string     `json:"haltedBy,omitempty"`
	// AwaitsApproval says the wave waits for an approval
	// (flotilla rollout approve).
	AwaitsApproval bool `json:"awaitsApproval,omitempty"`
	// RolledBack names the bundles that went back from the revision
	// (state RolledBack).
	RolledBack []string `json:"rolledBack,omitempty"`
	// Paused and Held are the controls on the approvals branch that keep
	// the cluster where it is (flotilla rollout pause, hold).
	Paused *Control  `json:"paused,omitempty"`
	Held   []Control `json:"held,omitempty"`
	// Revert is the revision the tip reverts (flotilla rollout revert).
	Revert  string `json:"revert,omitempty"`
	Message string `json:"message,omitempty"`
}

// Status is one cluster's status file. It holds names, phases, counts,
// digests and messages: never an object's content, never a Secret, never
// a credential.
type Status struct {
	APIVersion string        `json:"apiVersion"`
	Kind       string        `json:"kind"`
	Cluster    fleet.Cluster `json:"cluster"`
	// Agent is the agent's version.
	Agent string `json:"agent"`
	// AppliedRevision is the revision last applied in full; SeenRevision
	// the remote's tip at the last pass.
	AppliedRevision string `json:"appliedRevision,omitempty"`
	SeenRevision    string `json:"seenRevision,omitempty"`
	// Phase is the cluster's: Ready, Progressing, Failed.
	Phase   ClusterPhase `json:"phase"`
	Message string       `json:"message,omitempty"`
	// ReadySince is when the cluster became Ready at AppliedRevision (a
	// rollout's bake counts from it); nil unless Ready.
	ReadySince *time.Time `json:"readySince,omitempty"`
	// Wave is the cluster's wave in the rollout of SeenRevision.
	Wave string `json:"wave,omitempty"`
	// Rollout is where the cluster stands in the rollout of SeenRevision.
	Rollout *RolloutStatus `json:"rollout,omitempty"`
	// AgentUpdate is set while the agent is being replaced by the new
	// Deployment it applied (see Settle).
	AgentUpdate *AgentUpdate   `json:"agentUpdate,omitempty"`
	Bundles     []BundleStatus `json:"bundles"`
	// ReportedAt is when the file was written (a heartbeat moves it).
	ReportedAt time.Time `json:"reportedAt"`
}

// AgentUpdate is an agent replacing itself: the image of its new
// Deployment, and by when the new agent must have reported.
type AgentUpdate struct {
	Image    string    `json:"image"`
	Deadline time.Time `json:"deadline"`
}

// Settle reads a status as of now: a cluster whose agent applied its own
// new Deployment and whose new agent has not reported by the deadline is
// Failed — nobody else can say so, since the agent that would is the one
// that cannot start. Readers (status, the rollout gate, previews) see it
// that way, so the rollout halts.
func (s *Status) Settle(now time.Time) {
	u := s.AgentUpdate
	if u == nil || s.Phase != ClusterProgressing || now.Before(u.Deadline) {
		return
	}
	s.Phase = ClusterFailed
	s.Message = fmt.Sprintf("the agent applied its own new Deployment (%s) at %s and the new agent has not reported by %s: it cannot start (kubectl -n flotilla-system describe pods -l app.kubernetes.io/name=flotilla-agent)",
		u.Image, s.ReportedAt.UTC().Format(time.RFC3339), u.Deadline.UTC().Format(time.RFC3339))
}

// BundleStatus is one bundle's part of the status.
type BundleStatus struct {
	Name           string       `json:"name"`
	Phase          apply.Phase  `json:"phase"`
	Message        string       `json:"message,omitempty"`
	Counts         apply.Counts `json:"counts"`
	RenderedDigest string       `json:"renderedDigest,omitempty"`
	InputsDigest   string       `json:"inputsDigest,omitempty"`
	// Revision is the revision the bundle's objects come from: the
	// applied revision, or the tip for a bundle that goes everywhere at
	// once or whose own rollout let it.
	Revision string `json:"revision,omitempty"`
	// ReadySince is when the bundle became Ready at Revision (its own
	// rollout's bake counts from it).
	ReadySince *time.Time `json:"readySince,omitempty"`
	// Waiting says why the bundle keeps Revision while the tip is newer.
	Waiting string `json:"waiting,omitempty"`
	// RolledBack is the revision the bundle went back from (onFailure:
	// rollback); it keeps Revision until a newer commit.
	RolledBack string `json:"rolledBack,omitempty"`
	// ContentSince is the revision from which the bundle has run its
	// current rendered objects (RenderedDigest), up to Revision;
	// PreviousContentSince where the objects before them began. With the
	// fleet's history they say how many versions of a bundle two clusters
	// are apart (fleet.Versions).
	ContentSince         string `json:"contentSince,omitempty"`
	PreviousContentSince string `json:"previousContentSince,omitempty"`
	// LastTransitionTime is when the phase last changed.
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}
