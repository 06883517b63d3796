package report

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/internal/gitrev"
)

// Approvals of rollout waves live on one branch, in one file: each
// `flotilla rollout approve` is a commit that adds an entry, so who
// approved what and when is in the branch's history, and agents read the
// whole set with one fetch.
const (
	// DefaultApprovalsBranch is the approvals branch's default name.
	DefaultApprovalsBranch = "flotilla/approvals"
	// ApprovalsPath is the file on it.
	ApprovalsPath = "rollout/approvals.yaml"
	// ApprovalsKind is the file's kind.
	ApprovalsKind = "RolloutApprovals"
	// maxApprovals bounds the file: the oldest entries go first (the
	// history keeps them).
	maxApprovals = 500
)

// Approval lets one wave apply one revision.
type Approval struct {
	Revision string    `json:"revision"`
	Wave     string    `json:"wave"`
	By       string    `json:"by"`
	At       time.Time `json:"at"`
	Message  string    `json:"message,omitempty"`
	// Signature is an armored SSH signature (SignApproval) of the
	// revision and the wave: what a fleet whose rollout names approvers
	// requires.
	Signature string `json:"signature,omitempty"`
}

// approvalsFile is the file's content.
type approvalsFile struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Approvals  []Approval `json:"approvals"`
}

// Approved reports whether approvals hold one for the wave at revision.
// With approvers (SSH public keys, authorized_keys lines: the rollout's),
// only an approval signed by one of them counts (VerifyApproval); without,
// any does.
func Approved(approvals []Approval, wave, revision string, approvers []string) bool {
	return slices.ContainsFunc(approvals, func(a Approval) bool {
		if a.Wave != wave || a.Revision != revision {
			return false
		}
		if len(approvers) == 0 {
			return true
		}
		_, err := VerifyApproval(a, approvers)
		return err == nil
	})
}

// approvalNamespace is the SSH signature namespace of approvals (a
// signature made for git or for a file cannot be replayed as one).
const approvalNamespace = "flotilla-rollout-approval"

// approvalMessage is what an approval's signature covers: every field but
// the signature — the revision and the wave it lets through, and who,
// when and why, so that the history cannot be rewritten under it — as
// JSON, which no two approvals share (a field cannot run into the next).
func approvalMessage(a Approval) []byte {
	a.Signature = ""
	data, err := json.Marshal(a)
	if err != nil {
		return nil // a struct of strings and a time always encodes
	}
	return append([]byte("flotilla rollout approval v1\n"), data...)
}

// SignApproval signs the approval's revision and wave with the signer (an
// SSH key: a private key file, or one held by ssh-agent).
func SignApproval(a *Approval, signer ssh.Signer) error {
	// Signed as it is stored and read back: in UTC, without the clock's
	// monotonic reading.
	a.At = a.At.UTC().Round(0)
	sig, err := sshsig.Sign(bytes.NewReader(approvalMessage(*a)), signer, sshsig.HashSHA512, approvalNamespace)
	if err != nil {
		return fmt.Errorf("signing the approval: %w", err)
	}
	a.Signature = string(sshsig.Armor(sig))
	return nil
}

// ErrUnsignedApproval is wrapped when an approval is not signed by one of
// the rollout's approvers.
var ErrUnsignedApproval = errors.New("not signed by one of the rollout's approvers")

// VerifyApproval checks that the approval is signed by one of approvers
// (authorized_keys lines) and returns that key's comment, or its
// fingerprint when it has none.
func VerifyApproval(a Approval, approvers []string) (string, error) {
	if a.Signature == "" {
		return "", fmt.Errorf("%w: it has no signature", ErrUnsignedApproval)
	}
	sig, err := sshsig.Unarmor([]byte(a.Signature))
	if err != nil {
		return "", fmt.Errorf("%w: its signature does not parse", ErrUnsignedApproval)
	}
	for _, line := range approvers {
		key, comment, err := fleet.ParseApprover(line)
		if err != nil {
			continue // the fleet refuses such a key when it is planned
		}
		if sshsig.Verify(bytes.NewReader(approvalMessage(a)), sig, key, sig.HashAlgorithm, approvalNamespace) == nil {
			if comment == "" {
				comment = ssh.FingerprintSHA256(key)
			}
			return comment, nil
		}
	}
	return "", fmt.Errorf("%w: signed by %s", ErrUnsignedApproval, ssh.FingerprintSHA256(sig.PublicKey))
}

// ReadApprovals reads the approvals on branch (default
// DefaultApprovalsBranch): one fetch, one commit deep, in memory. No
// branch yet is no approval.
func ReadApprovals(ctx context.Context, url, branch string, auth transport.AuthMethod) ([]Approval, error) {
	cb, err := ReadControlBranch(ctx, url, branch, auth)
	if err != nil {
		return nil, err
	}
	return cb.Approvals, nil
}

// ReadControlBranchRepository reads the approvals and controls on a local
// repository's branch (or its remote-tracking branch origin/<branch>, as a
// CI job that fetched it has it). No branch: none.
func ReadControlBranchRepository(repo *git.Repository, branch string) (*ControlBranch, error) {
	if branch == "" {
		branch = DefaultApprovalsBranch
	}
	for _, ref := range []plumbing.ReferenceName{plumbing.NewBranchReferenceName(branch), plumbing.NewRemoteReferenceName("origin", branch)} {
		commit, err := tipCommit(repo, ref)
		if errors.Is(err, plumbing.ErrReferenceNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return controlBranchAt(commit, branch)
	}
	return &ControlBranch{}, nil
}

// approvalsAt reads the approvals file of a commit.
func approvalsAt(commit *object.Commit, branch string) ([]Approval, error) {
	data, err := fileAt(commit, ApprovalsPath)
	if err != nil || data == nil {
		return nil, err
	}
	var file approvalsFile
	if err := yaml.Unmarshal(data, &file); err != nil {
		return nil, fmt.Errorf("%s on %s: %s", ApprovalsPath, branch, errtext.Error(err))
	}
	if file.APIVersion != APIVersion || file.Kind != ApprovalsKind {
		return nil, fmt.Errorf("%s on %s is not an approvals file: apiVersion %q, kind %q", ApprovalsPath, branch,
			errtext.Clean(file.APIVersion), errtext.Clean(file.Kind))
	}
	return file.Approvals, nil
}

// ApproveOptions say where an approval goes.
type ApproveOptions struct {
	URL  string
	Auth transport.AuthMethod
	// Branch defaults to DefaultApprovalsBranch.
	Branch string
	// Author signs the commit (the approver's Git identity).
	Author object.Signature
	// Attempts bounds the tries when the branch moves under the push
	// (another approval at the same time); default 5.
	Attempts int
	// Approvers are the rollout's (Approved): an approval already there
	// counts only when one of them signed it.
	Approvers []string
}

// Approve adds an approval to the approvals branch, as a commit on its
// tip pushed with a lease on that tip (an approval pushed at the same
// moment is kept: the push fails and is tried again on the new tip). It
// reports false when the approval was already there.
func Approve(ctx context.Context, opts ApproveOptions, a Approval) (bool, error) {
	if !gitrev.Full(a.Revision) {
		return false, fmt.Errorf("revision %q: a full commit hash (40 hex digits) is required", a.Revision)
	}
	if a.Wave == "" || a.By == "" {
		return false, errors.New("an approval needs a wave and an approver")
	}
	if opts.Author.Name == "" {
		opts.Author = object.Signature{Name: a.By, Email: "flotilla@flotilla.dev"}
	}
	opts.Author.When = a.At
	return Update(ctx, opts, func(cb *ControlBranch) (string, error) {
		if Approved(cb.Approvals, a.Wave, a.Revision, opts.Approvers) {
			return "", nil
		}
		cb.Approvals = append(cb.Approvals, a)
		subject := fmt.Sprintf("rollout: approve wave %s for %s", a.Wave, short(a.Revision))
		return trailed(subject, a.Message, "Approved-By", a.By), nil
	})
}

// parentOf is the one parent of a commit, or zero for a first commit.
func parentOf(parents []plumbing.Hash) plumbing.Hash {
	if len(parents) == 0 {
		return plumbing.ZeroHash
	}
	return parents[0]
}
