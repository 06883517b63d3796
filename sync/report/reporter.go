package report

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// DefaultPrefix is where status branches live when no prefix is
// configured: a cluster's branch is flotilla/status/<cluster>.
const DefaultPrefix = "flotilla/status"

// Options configure a Reporter.
type Options struct {
	// URL of the repository the status branches live in (the fleet
	// repository or another one).
	URL string
	// Prefix of the status branches; a cluster's is Prefix/<cluster>.
	// Default DefaultPrefix.
	Prefix string
	Auth   transport.AuthMethod
	// Heartbeat commits an unchanged status this often, so a silent
	// cluster can be told from a healthy one. Default 10 minutes.
	Heartbeat time.Duration
	// Attempts bounds the tries of one report when Git fails (down, or
	// the branch moved under the reporter). Default 5, with back-off.
	Attempts int
	// Timeout bounds each attempt (fetch the tip, commit, push); default
	// source.DefaultTimeout. A server that never answers fails the attempt.
	Timeout time.Duration
}

// Reporter writes one cluster's status file on the cluster's own status
// branch. A report is one push of that branch: no other cluster writes
// it, so there is nothing to contend with. A heartbeat (only the report
// time changed) replaces the previous heartbeat commit, so the branch's
// history holds changes, not every heartbeat.
//
// Every push is a compare-and-swap: it names the tip it builds on
// (force-with-lease), so a report is never lost to another writer of the
// branch — the push fails, and the report is tried again on the new tip.
type Reporter struct {
	opts Options
	// last is what was last pushed, without its time; lastPush when.
	last     []byte
	lastPush time.Time
	pushes   int // pushes the last Publish made

	// instance tells this agent's commits from another's (a trailer):
	// two agents started with the same cluster name would otherwise
	// overwrite each other's status unnoticed. pushed is this reporter's
	// last commit; interleaved counts the publishes in a row that found
	// the branch written by another instance since it; duplicate, once
	// that happened twice in a row, says so in every report.
	instance    string
	pushed      plumbing.Hash
	interleaved int
	duplicate   string
	// tip and hash are the last attempt's: the tip it built on, the
	// commit it pushed.
	tip  *branchTip
	hash plumbing.Hash
	// repo keeps, in memory, the commits of the last reports, and known
	// the branch's tip as this reporter's last push left it: the next
	// report builds on it without fetching (a Git host at 10,000 clusters
	// is spared a ref advertisement and a fetch per report). A push that
	// finds the branch moved (another writer) drops them, and the attempt
	// after it fetches. reused counts the reports made on repo, which is
	// started again after maxReused.
	repo   *git.Repository
	known  *branchTip
	reused int
}

// maxReused bounds the reports kept in a reporter's memory repository.
const maxReused = 50

// branchTip is what a report needs to know of the branch's tip.
type branchTip struct {
	hash, parent plumbing.Hash // parent: zero for a first commit
	content      []byte        // its status file without the report time
	heartbeat    bool
	instance     string // the agent instance that wrote it
}

// Pushes is how many pushes the last Publish made: 1 when Git is up, 0
// when nothing needed publishing.
func (r *Reporter) Pushes() int { return r.pushes }

// New returns a Reporter.
func New(opts Options) (*Reporter, error) {
	if opts.URL == "" {
		return nil, errors.New("a status repository URL is required")
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if err := validatePrefix(opts.Prefix); err != nil {
		return nil, err
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 10 * time.Minute
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 5
	}
	if opts.Timeout <= 0 {
		opts.Timeout = source.DefaultTimeout
	}
	id := make([]byte, 6)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	return &Reporter{opts: opts, instance: hex.EncodeToString(id)}, nil
}

// instanceTrailer names the agent instance that wrote a status commit.
const instanceTrailer = "Flotilla-Instance"

// trailer reads a trailer's value from a commit message.
func trailer(message, key string) string {
	for line := range strings.SplitSeq(message, "\n") {
		if v, ok := strings.CutPrefix(line, key+": "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// noteInterleaving notes whether another instance wrote the branch since
// this reporter's last commit. A handover (a new pod, the old one's last
// report) is once; another agent with the same name writes again and
// again: twice in a row is a duplicate, said in every report until it
// stops.
func (r *Reporter) noteInterleaving(cluster string, tip *branchTip) {
	if r.pushed.IsZero() || tip == nil || tip.hash == r.pushed {
		r.interleaved = 0
		r.duplicate = ""
		return
	}
	if tip.instance == "" || tip.instance == r.instance {
		return
	}
	r.interleaved++
	if r.interleaved >= 2 {
		r.duplicate = fmt.Sprintf("two agents report as cluster %s: agent instance %s writes its status branch too (each agent needs a cluster name of its own)",
			cluster, tip.instance)
	}
}

// Duplicate says, once this reporter has seen another agent write its
// cluster's status branch between its own reports twice in a row, that
// two agents share the cluster name; "" otherwise.
func (r *Reporter) Duplicate() string { return r.duplicate }

// Path is the status file of a cluster on its branch.
func Path(cluster string) string { return "clusters/" + cluster + ".yaml" }

// Branch is a cluster's status branch.
func Branch(prefix, cluster string) string {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return prefix + "/" + cluster
}

// heartbeatTrailer marks a commit whose only change is the report time:
// the next heartbeat replaces it.
const heartbeatTrailer = "Flotilla-Report: heartbeat"

// Publish commits st on the cluster's status branch when it differs from
// what was last pushed, or when the heartbeat is due, and pushes it. It
// reports whether it pushed. A failure never blocks applying: the caller
// publishes again next pass.
func (r *Reporter) Publish(ctx context.Context, st *Status, now time.Time) (bool, error) {
	r.pushes = 0
	if err := ValidateClusterName(st.Cluster.Name); err != nil {
		return false, err
	}
	st.APIVersion, st.Kind = APIVersion, Kind
	st.Cluster = st.Cluster.Normalized() // empty lists, not nulls (#Status)
	// Messages carry what the fleet wrote (template output, names): no
	// terminal escapes, no runaway lengths, in Git.
	st.Message = errtext.Clean(st.Message)
	if r.duplicate != "" {
		said := *st // the caller's status stays as it is
		said.Message = strings.TrimSuffix(r.duplicate+"; "+st.Message, "; ")
		st = &said
	}
	for i := range st.Bundles {
		st.Bundles[i].Message = errtext.Clean(st.Bundles[i].Message)
	}
	content, err := encode(st, time.Time{})
	if err != nil {
		return false, err
	}
	if bytes.Equal(content, r.last) && now.Sub(r.lastPush) < r.opts.Heartbeat {
		return false, nil
	}
	data, err := encode(st, now)
	if err != nil {
		return false, err
	}
	report := &commitSpec{
		branch:  Branch(r.opts.Prefix, st.Cluster.Name),
		path:    Path(st.Cluster.Name),
		content: content,
		data:    data,
		subject: fmt.Sprintf("status(%s): %s at %s", st.Cluster.Name, st.Phase, short(st.AppliedRevision)),
	}
	err = source.Retry(ctx, source.RetryOptions{Attempts: r.opts.Attempts, Timeout: r.opts.Timeout, Backoff: 500 * time.Millisecond,
		Stop: func(err error) bool { return errors.Is(err, ErrLegacyBranch) }},
		func(ctx context.Context) error { return r.publishOnce(ctx, report) })
	if err != nil {
		return false, source.RedactError(fmt.Errorf("status of %s not pushed to %s: %w", st.Cluster.Name, report.branch, err), r.opts.URL)
	}
	r.last, r.lastPush = content, now
	r.noteInterleaving(st.Cluster.Name, r.tip)
	r.pushed = r.hash
	return true, nil
}

// commitSpec is one report to commit.
type commitSpec struct {
	branch, path string
	// content is the file without its report time, data with it.
	content, data []byte
	subject       string
}

// publishOnce fetches the branch's tip (two commits deep, in memory),
// commits the file on it — or, for a heartbeat over a heartbeat, in its
// place — and pushes it as a compare-and-swap on that tip.
//
// The tip's commits must be at hand: go-git looks for the new commit's
// parents in the local store to decide what to send, so a report cannot
// be built on a tip it only knows by hash. The reporter keeps them in
// memory after a push (repo, known), so that the next report skips the
// fetch; a report after a failed push, a restart or maxReused reports
// fetches.
func (r *Reporter) publishOnce(ctx context.Context, c *commitSpec) error {
	ref := plumbing.NewBranchReferenceName(c.branch)
	repo, tip := r.repo, r.known
	r.repo, r.known = nil, nil // kept again only once this push lands
	if repo == nil || tip == nil || r.reused >= maxReused {
		var err error
		if repo, err = source.MemoryRepository(r.opts.URL); err != nil {
			return err
		}
		tracking := plumbing.NewRemoteReferenceName("origin", c.branch)
		if tip, err = fetchTip(ctx, repo, r.opts, ref, tracking, c.path); err != nil {
			return err
		}
		r.reused = 0
	}
	r.tip = tip
	parents, message := placement(tip, c)
	message = strings.TrimRight(message, "\n")
	if !strings.Contains(message, "\n\n") {
		message += "\n"
	}
	message += "\n" + instanceTrailer + ": " + r.instance + "\n"
	who := object.Signature{Name: "flotilla", Email: "flotilla@flotilla.dev", When: time.Now()}
	hash, err := source.CommitFiles(repo.Storer, map[string][]byte{c.path: c.data}, parents, message, who)
	if err != nil {
		return err
	}
	if err := repo.Storer.SetReference(plumbing.NewHashReference(ref, hash)); err != nil {
		return err
	}
	var lease plumbing.Hash
	if tip != nil {
		lease = tip.hash
	}
	r.pushes++
	if err := source.PushLeased(ctx, repo, "origin", r.opts.Auth, ref, lease); err != nil {
		return r.explainPush(ctx, err)
	}
	r.hash = hash
	r.repo, r.reused = repo, r.reused+1
	r.known = &branchTip{hash: hash, content: c.content, heartbeat: strings.Contains(message, heartbeatTrailer), instance: r.instance}
	if len(parents) == 1 {
		r.known.parent = parents[0]
	}
	return nil
}

// fetchTip fetches the tip of the branch and its parent, and reads what a
// report needs of them; nil when the branch does not exist yet.
func fetchTip(ctx context.Context, repo *git.Repository, opts Options, ref, tracking plumbing.ReferenceName, path string) (*branchTip, error) {
	err := repo.FetchContext(ctx, &git.FetchOptions{
		RemoteName: "origin", Auth: opts.Auth, Depth: 2, Tags: git.NoTags,
		RefSpecs: []config.RefSpec{config.RefSpec("+" + ref.String() + ":" + tracking.String())},
	})
	switch {
	case isMissingBranch(err):
		return nil, nil
	case err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate):
		return nil, &source.GitError{Op: "fetch", Err: err}
	}
	commit, err := tipCommit(repo, tracking)
	if err != nil {
		return nil, err
	}
	tip := &branchTip{hash: commit.Hash, content: fileContent(commit, path), heartbeat: strings.Contains(commit.Message, heartbeatTrailer),
		instance: trailer(commit.Message, instanceTrailer)}
	if len(commit.ParentHashes) == 1 {
		tip.parent = commit.ParentHashes[0]
	}
	return tip, nil
}

// placement decides where the report goes: on the tip (a change, or the
// first heartbeat after one), or in place of the tip when both the tip and
// this report are heartbeats. It returns the parents and the message.
func placement(tip *branchTip, c *commitSpec) ([]plumbing.Hash, string) {
	if tip == nil {
		return nil, c.subject
	}
	if !bytes.Equal(tip.content, c.content) {
		return []plumbing.Hash{tip.hash}, c.subject
	}
	message := c.subject + " (heartbeat)\n\n" + heartbeatTrailer + "\n"
	if tip.heartbeat && !tip.parent.IsZero() {
		return []plumbing.Hash{tip.parent}, message
	}
	return []plumbing.Hash{tip.hash}, message
}

// fileContent is the status file of a commit without its report time, or
// nil when it has none that reads.
func fileContent(commit *object.Commit, path string) []byte {
	st, err := statusAt(commit, path)
	if err != nil {
		return nil
	}
	content, err := encode(st, time.Time{})
	if err != nil {
		return nil
	}
	return content
}

// encode is the file's YAML with the report time set.
func encode(st *Status, at time.Time) ([]byte, error) {
	c := *st
	c.ReportedAt = at
	return yaml.Marshal(c)
}

// isMissingBranch reports a fetch that failed because the branch does not
// exist yet (or the repository is empty).
func isMissingBranch(err error) bool {
	return errors.Is(err, plumbing.ErrReferenceNotFound) || errors.Is(err, transport.ErrEmptyRemoteRepository) ||
		errors.Is(err, git.NoMatchingRefSpecError{})
}

// short is a revision in a commit subject.
func short(rev string) string {
	if rev == "" {
		return "no revision"
	}
	return gitrev.Short(rev)
}
