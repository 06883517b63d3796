package report

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// The rollout's controls live beside the approvals, on the same branch:
// a pause of the whole rollout and holds of clusters or bundles, each
// written by `flotilla rollout pause|resume|hold|release` as a commit
// whose author is who did it, so that nobody edits fleet.cue during an
// incident and the branch's history says who stopped what, when and why.
// Agents read the approvals and the controls with one fetch. A control
// only keeps clusters where they are: whoever can push the branch can
// stop a rollout, never make a cluster apply anything.
const (
	// ControlsPath is the controls file on the approvals branch.
	ControlsPath = "rollout/controls.yaml"
	// ControlsKind is its kind.
	ControlsKind = "RolloutControls"
	// maxHolds bounds the holds a file keeps.
	maxHolds = 500
)

// Control is a pause of the rollout or a hold: who, when, why, and until
// when (nil: until resumed or released). A hold names a cluster (every
// bundle of it), a bundle (on every cluster), or both.
type Control struct {
	Cluster string     `json:"cluster,omitempty"`
	Bundle  string     `json:"bundle,omitempty"`
	By      string     `json:"by"`
	At      time.Time  `json:"at"`
	Until   *time.Time `json:"until,omitempty"`
	Reason  string     `json:"reason,omitempty"`
}

// Expired reports whether the control's until has passed.
func (c Control) Expired(now time.Time) bool {
	return c.Until != nil && !now.Before(*c.Until)
}

// Holds reports whether a hold keeps the bundle of the cluster ("" for
// any bundle: the hold is of the whole cluster, or of every bundle).
func (c Control) Holds(cluster, bundle string) bool {
	return (c.Cluster == "" || c.Cluster == cluster) && (c.Bundle == "" || c.Bundle == bundle)
}

// Target says what a hold keeps, for messages.
func (c Control) Target() string {
	switch {
	case c.Cluster != "" && c.Bundle != "":
		return fmt.Sprintf("bundle %s on cluster %s", c.Bundle, c.Cluster)
	case c.Cluster != "":
		return "cluster " + c.Cluster
	default:
		return "bundle " + c.Bundle
	}
}

// Why says who set the control, when, why and until when, for messages.
func (c Control) Why() string {
	s := "by " + c.By
	if !c.At.IsZero() {
		s += " at " + c.At.UTC().Format(time.RFC3339)
	}
	if c.Reason != "" {
		s += ": " + c.Reason
	}
	if c.Until != nil {
		s += " (until " + c.Until.UTC().Format(time.RFC3339) + ")"
	}
	return s
}

// Controls are the rollout's pause and holds.
type Controls struct {
	Pause *Control  `json:"pause,omitempty"`
	Holds []Control `json:"holds,omitempty"`
}

// Active are the controls in effect for a cluster at now: the pause, and
// the holds that name the cluster or none (expired ones left out).
func (c Controls) Active(cluster string, now time.Time) (*Control, []Control) {
	var pause *Control
	if c.Pause != nil && !c.Pause.Expired(now) {
		pause = c.Pause
	}
	var holds []Control
	for _, h := range c.Holds {
		if !h.Expired(now) && (h.Cluster == "" || h.Cluster == cluster) {
			holds = append(holds, h)
		}
	}
	return pause, holds
}

// InEffect are the pause and holds not expired at now, for `flotilla
// status`.
func (c Controls) InEffect(now time.Time) Controls {
	out := Controls{}
	if c.Pause != nil && !c.Pause.Expired(now) {
		out.Pause = c.Pause
	}
	for _, h := range c.Holds {
		if !h.Expired(now) {
			out.Holds = append(out.Holds, h)
		}
	}
	return out
}

// controlsFile is the controls file's content.
type controlsFile struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Controls   `json:",inline"`
}

// ControlBranch is what the approvals branch holds at its tip.
type ControlBranch struct {
	Approvals []Approval
	Controls  Controls
	// Commit is the tip's hash (zero when there is no branch).
	Commit plumbing.Hash
}

// ReadControlBranch reads the approvals and the controls on branch
// (default DefaultApprovalsBranch): one fetch, one commit deep, in
// memory. No branch: no approval and no control.
func ReadControlBranch(ctx context.Context, url, branch string, auth transport.AuthMethod) (*ControlBranch, error) {
	if branch == "" {
		branch = DefaultApprovalsBranch
	}
	tracking := plumbing.NewRemoteReferenceName("origin", branch)
	repo, err := fetchBranches(ctx, url, auth, config.RefSpec("+"+plumbing.NewBranchReferenceName(branch).String()+":"+tracking.String()))
	if isMissingBranch(err) {
		return &ControlBranch{}, nil
	}
	if err != nil {
		return nil, source.RedactError(fmt.Errorf("fetching the approvals branch %s: %w", branch, err), url)
	}
	commit, err := tipCommit(repo, tracking)
	if err != nil {
		return nil, err
	}
	return controlBranchAt(commit, branch)
}

// controlBranchAt reads a commit of the approvals branch.
func controlBranchAt(commit *object.Commit, branch string) (*ControlBranch, error) {
	approvals, err := approvalsAt(commit, branch)
	if err != nil {
		return nil, err
	}
	cb := &ControlBranch{Approvals: approvals, Commit: commit.Hash}
	data, err := fileAt(commit, ControlsPath)
	if err != nil || data == nil {
		return cb, err
	}
	var file controlsFile
	if err := yaml.Unmarshal(data, &file); err != nil {
		return nil, fmt.Errorf("%s on %s: %s", ControlsPath, branch, errtext.Error(err))
	}
	if file.APIVersion != APIVersion || file.Kind != ControlsKind {
		return nil, fmt.Errorf("%s on %s is not a controls file: apiVersion %q, kind %q", ControlsPath, branch,
			errtext.Clean(file.APIVersion), errtext.Clean(file.Kind))
	}
	cb.Controls = file.Controls
	return cb, nil
}

// fileAt is a file's content at a commit; nil when it has none.
func fileAt(commit *object.Commit, path string) ([]byte, error) {
	f, err := commit.File(path)
	if errors.Is(err, object.ErrFileNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	data, err := f.Contents()
	return []byte(data), err
}

// files are the branch's files as they are written back.
func (cb *ControlBranch) files() (map[string][]byte, error) {
	out := map[string][]byte{}
	if len(cb.Approvals) > 0 {
		if n := len(cb.Approvals); n > maxApprovals {
			cb.Approvals = cb.Approvals[n-maxApprovals:]
		}
		data, err := yaml.Marshal(approvalsFile{APIVersion: APIVersion, Kind: ApprovalsKind, Approvals: cb.Approvals})
		if err != nil {
			return nil, err
		}
		out[ApprovalsPath] = data
	}
	if cb.Controls.Pause != nil || len(cb.Controls.Holds) > 0 {
		if n := len(cb.Controls.Holds); n > maxHolds {
			cb.Controls.Holds = cb.Controls.Holds[n-maxHolds:]
		}
		data, err := yaml.Marshal(controlsFile{APIVersion: APIVersion, Kind: ControlsKind, Controls: cb.Controls})
		if err != nil {
			return nil, err
		}
		out[ControlsPath] = data
	}
	return out, nil
}

// A Change edits the approvals branch's content; it returns the commit's
// message, or "" when there is nothing to change.
type Change func(cb *ControlBranch) (string, error)

// Update applies a change to the approvals branch as a commit on its tip
// pushed with a lease on that tip: a change pushed at the same moment is
// kept (the push fails and the change is made again on the new tip). It
// reports false when the change had nothing to do. The commit's author is
// opts.Author (who did it).
func Update(ctx context.Context, opts ApproveOptions, change Change) (bool, error) {
	if opts.Branch == "" {
		opts.Branch = DefaultApprovalsBranch
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 5
	}
	var changed bool
	err := source.Retry(ctx, source.RetryOptions{Attempts: opts.Attempts, Backoff: 200 * time.Millisecond}, func(ctx context.Context) error {
		var err error
		changed, err = updateOnce(ctx, opts, change)
		return err
	})
	return changed, source.RedactError(err, opts.URL)
}

// updateOnce fetches the branch's tip, makes the change and pushes a
// commit with a lease on the tip.
func updateOnce(ctx context.Context, opts ApproveOptions, change Change) (bool, error) {
	repo, err := source.MemoryRepository(opts.URL)
	if err != nil {
		return false, err
	}
	ref := plumbing.NewBranchReferenceName(opts.Branch)
	tracking := plumbing.NewRemoteReferenceName("origin", opts.Branch)
	err = repo.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", Auth: opts.Auth, Depth: 1, Tags: git.NoTags,
		RefSpecs: []config.RefSpec{config.RefSpec("+" + ref.String() + ":" + tracking.String())}})
	cb := &ControlBranch{}
	switch {
	case isMissingBranch(err):
	case err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate):
		return false, &source.GitError{Op: "fetch", Err: err}
	default:
		tip, err := tipCommit(repo, tracking)
		if err != nil {
			return false, err
		}
		if cb, err = controlBranchAt(tip, opts.Branch); err != nil {
			return false, err
		}
	}
	message, err := change(cb)
	if err != nil || message == "" {
		return false, err
	}
	files, err := cb.files()
	if err != nil {
		return false, err
	}
	var parents []plumbing.Hash
	if !cb.Commit.IsZero() {
		parents = []plumbing.Hash{cb.Commit}
	}
	author := opts.Author
	if author.When.IsZero() {
		author.When = time.Now()
	}
	hash, err := source.CommitFiles(repo.Storer, files, parents, message, author)
	if err != nil {
		return false, err
	}
	if err := repo.Storer.SetReference(plumbing.NewHashReference(ref, hash)); err != nil {
		return false, err
	}
	if err := source.PushLeased(ctx, repo, "origin", opts.Auth, ref, parentOf(parents)); err != nil {
		return false, err
	}
	return true, nil
}

// Pause pauses the rollout (replacing a pause already there).
func Pause(c Control) Change {
	return func(cb *ControlBranch) (string, error) {
		if c.By == "" {
			return "", errors.New("a pause needs who pauses")
		}
		cb.Controls.Pause = &c
		return trailed("rollout: pause", c.Reason, "Paused-By", c.By), nil
	}
}

// Resume ends the pause; nothing to do when there is none.
func Resume(by, reason string) Change {
	return func(cb *ControlBranch) (string, error) {
		if cb.Controls.Pause == nil {
			return "", nil
		}
		cb.Controls.Pause = nil
		return trailed("rollout: resume", reason, "Resumed-By", by), nil
	}
}

// Hold holds a cluster, a bundle, or a bundle on a cluster (replacing a
// hold of the same).
func Hold(c Control) Change {
	return func(cb *ControlBranch) (string, error) {
		if c.Cluster == "" && c.Bundle == "" {
			return "", errors.New("a hold names a cluster, a bundle, or both")
		}
		if c.By == "" {
			return "", errors.New("a hold needs who holds")
		}
		cb.Controls.Holds = slices.DeleteFunc(cb.Controls.Holds, func(h Control) bool { return h.Cluster == c.Cluster && h.Bundle == c.Bundle })
		cb.Controls.Holds = append(cb.Controls.Holds, c)
		return trailed("rollout: hold "+c.Target(), c.Reason, "Held-By", c.By), nil
	}
}

// Release ends the hold of exactly that cluster and bundle; nothing to do
// when there is none.
func Release(cluster, bundle, by, reason string) Change {
	return func(cb *ControlBranch) (string, error) {
		n := len(cb.Controls.Holds)
		cb.Controls.Holds = slices.DeleteFunc(cb.Controls.Holds, func(h Control) bool { return h.Cluster == cluster && h.Bundle == bundle })
		if len(cb.Controls.Holds) == n {
			return "", nil
		}
		return trailed("rollout: release "+Control{Cluster: cluster, Bundle: bundle}.Target(), reason, "Released-By", by), nil
	}
}

// trailed is a commit message: a subject, the reason as its body, and a
// trailer naming who.
func trailed(subject, reason, trailer, by string) string {
	if reason != "" {
		return fmt.Sprintf("%s\n\n%s\n\n%s: %s\n", subject, reason, trailer, by)
	}
	return fmt.Sprintf("%s\n\n%s: %s\n", subject, trailer, by)
}

// ControlCommit is one commit of the approvals branch: who made it, when,
// its message, and what the branch held after it.
type ControlCommit struct {
	Hash    plumbing.Hash
	By      string
	At      time.Time
	Message string
	Branch  *ControlBranch
}

// ReadControlHistory reads the approvals branch's last n commits, newest
// first (none without a branch). A commit whose files do not parse is
// left out.
func ReadControlHistory(ctx context.Context, url, branch string, n int, auth transport.AuthMethod) ([]ControlCommit, error) {
	if branch == "" {
		branch = DefaultApprovalsBranch
	}
	tracking := plumbing.NewRemoteReferenceName("origin", branch)
	repo, err := fetchDepth(ctx, url, auth, config.RefSpec("+"+plumbing.NewBranchReferenceName(branch).String()+":"+tracking.String()), max(n, 1))
	if isMissingBranch(err) {
		return nil, nil
	}
	if err != nil {
		return nil, source.RedactError(fmt.Errorf("fetching the approvals branch %s: %w", branch, err), url)
	}
	commit, err := tipCommit(repo, tracking)
	if err != nil {
		return nil, err
	}
	var out []ControlCommit
	walkBack(commit, n, func(c *object.Commit) bool {
		cb, err := controlBranchAt(c, branch)
		if err == nil {
			out = append(out, ControlCommit{Hash: c.Hash, By: c.Author.Name + " <" + c.Author.Email + ">",
				At: c.Author.When, Message: c.Message, Branch: cb})
		}
		return err == nil
	})
	return out, nil
}

// Remote is a repository to read from, with its credentials.
type Remote struct {
	URL  string
	Auth transport.AuthMethod
}

// ReadControlBranchOf reads the approvals branch from the first of the
// repositories that has it: the fleet repository, where the rollout's
// decisions sit beside the commits they are about (the agents learn its
// tip from their poll), then the status repository, where installs kept
// it before (and where it is when the two are one). Empty when none has
// it.
func ReadControlBranchOf(ctx context.Context, branch string, repos ...Remote) (*ControlBranch, error) {
	for i, r := range repos {
		if r.URL == "" || slices.ContainsFunc(repos[:i], func(o Remote) bool { return o.URL == r.URL }) {
			continue
		}
		cb, err := ReadControlBranch(ctx, r.URL, branch, r.Auth)
		if err != nil || !cb.Commit.IsZero() {
			return cb, err
		}
	}
	return &ControlBranch{}, nil
}

// ReadControlHistoryOf is ReadControlHistory of the first of the
// repositories that has the branch (as ReadControlBranchOf).
func ReadControlHistoryOf(ctx context.Context, branch string, n int, repos ...Remote) ([]ControlCommit, error) {
	for i, r := range repos {
		if r.URL == "" || slices.ContainsFunc(repos[:i], func(o Remote) bool { return o.URL == r.URL }) {
			continue
		}
		hist, err := ReadControlHistory(ctx, r.URL, branch, n, r.Auth)
		if err != nil || len(hist) > 0 {
			return hist, err
		}
	}
	return nil, nil
}
