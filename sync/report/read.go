package report

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// Snapshot is the fleet's status as its status branches say it.
type Snapshot struct {
	// Statuses are the clusters' statuses, by cluster name.
	Statuses []Status
	// Problems are branches left out of Statuses: unreadable, or whose
	// file speaks for another cluster than the branch's (a cluster's
	// branch only speaks for that cluster), and the legacy shared branch.
	Problems []error
}

// Read returns every cluster's status: one ref advertisement of the
// branches under prefix and one upload-pack request for all their tips,
// in memory and one commit deep, however many clusters there are (a
// Reader's first read). No branch yet is an empty snapshot, not an error.
func Read(ctx context.Context, url, prefix string, auth transport.AuthMethod) (*Snapshot, error) {
	return NewReader(url, prefix, auth).Read(ctx)
}

// ReadCluster returns one cluster's status, fetching only its branch.
func ReadCluster(ctx context.Context, url, prefix, cluster string, auth transport.AuthMethod) (*Status, error) {
	st, err := readCluster(ctx, url, prefix, cluster, auth)
	return st, source.RedactError(err, url)
}

func readCluster(ctx context.Context, url, prefix, cluster string, auth transport.AuthMethod) (*Status, error) {
	repo, tracking, err := fetchCluster(ctx, url, prefix, cluster, 1, auth)
	if err != nil {
		return nil, err
	}
	st, err := readStatus(repo, tracking, cluster)
	if err != nil {
		return nil, fmt.Errorf("status branch %s: %w", Branch(prefix, cluster), err)
	}
	return st, nil
}

// fetchCluster fetches a cluster's status branch depth commits deep, and
// returns the reference it is at.
func fetchCluster(ctx context.Context, url, prefix, cluster string, depth int, auth transport.AuthMethod) (*git.Repository, plumbing.ReferenceName, error) {
	if err := ValidateClusterName(cluster); err != nil {
		return nil, "", err
	}
	branch := Branch(prefix, cluster)
	tracking := plumbing.NewRemoteReferenceName("origin", branch)
	repo, err := fetchDepth(ctx, url, auth, config.RefSpec("+"+plumbing.NewBranchReferenceName(branch).String()+":"+tracking.String()), depth)
	if isMissingBranch(err) {
		return nil, "", fmt.Errorf("cluster %s has not reported: no branch %s", cluster, branch)
	}
	if err != nil {
		return nil, "", fmt.Errorf("fetching status branch %s: %w", branch, err)
	}
	return repo, tracking, nil
}

// MaxHistory bounds how many of a cluster's reports ReadHistory reads.
const MaxHistory = 1000

// ReadHistory returns a cluster's last n reports, newest first: its
// branch fetched n commits deep. A commit whose file is not a status of
// this cluster is skipped (any agent can write its branch).
func ReadHistory(ctx context.Context, url, prefix, cluster string, n int, auth transport.AuthMethod) ([]Status, error) {
	out, err := readHistory(ctx, url, prefix, cluster, min(max(n, 1), MaxHistory), auth)
	return out, source.RedactError(err, url)
}

func readHistory(ctx context.Context, url, prefix, cluster string, n int, auth transport.AuthMethod) ([]Status, error) {
	repo, tracking, err := fetchCluster(ctx, url, prefix, cluster, n, auth)
	if err != nil {
		return nil, err
	}
	commit, err := tipCommit(repo, tracking)
	if err != nil {
		return nil, fmt.Errorf("status branch %s: %w", Branch(prefix, cluster), err)
	}
	var out []Status
	walkBack(commit, n, func(c *object.Commit) bool {
		st, err := statusAt(c, Path(cluster))
		if err == nil && st.Cluster.Name == cluster {
			out = append(out, *st)
			return true
		}
		return false
	})
	return out, nil
}

// walkBack calls keep on commit and its first parents, newest first,
// until keep has taken n of them or the history (or the shallow fetch)
// ends.
func walkBack(commit *object.Commit, n int, keep func(*object.Commit) bool) {
	for taken := 0; commit != nil && taken < n; {
		if keep(commit) {
			taken++
		}
		if commit.NumParents() == 0 {
			return
		}
		var err error
		if commit, err = commit.Parent(0); err != nil {
			return // the shallow fetch's end
		}
	}
}

// fetchBranches fetches refspec one commit deep into a repository in
// memory.
func fetchBranches(ctx context.Context, url string, auth transport.AuthMethod, refspec config.RefSpec) (*git.Repository, error) {
	return fetchDepth(ctx, url, auth, refspec, 1)
}

// fetchDepth fetches refspec depth commits deep into a repository in
// memory.
func fetchDepth(ctx context.Context, url string, auth transport.AuthMethod, refspec config.RefSpec, depth int) (*git.Repository, error) {
	repo, err := git.Init(memory.NewStorage(), nil)
	if err != nil {
		return nil, err
	}
	if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{url}}); err != nil {
		return nil, err
	}
	err = repo.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", Auth: auth, Depth: depth, Tags: git.NoTags,
		RefSpecs: []config.RefSpec{refspec}})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil, err
	}
	return repo, nil
}

// readStatus reads the status file at the tip of a fetched branch, and
// checks that it speaks for the branch's cluster.
func readStatus(repo *git.Repository, ref plumbing.ReferenceName, cluster string) (*Status, error) {
	commit, err := tipCommit(repo, ref)
	if err != nil {
		return nil, err
	}
	st, err := statusAt(commit, Path(cluster))
	if err != nil {
		return nil, err
	}
	if st.Cluster.Name != cluster {
		return nil, fmt.Errorf("%s speaks for cluster %q, not %q: ignored", Path(cluster), st.Cluster.Name, cluster)
	}
	return st, nil
}

// tipCommit is the commit a (fetched) reference points at.
func tipCommit(repo *git.Repository, ref plumbing.ReferenceName) (*object.Commit, error) {
	r, err := repo.Reference(ref, true)
	if err != nil {
		return nil, err
	}
	return repo.CommitObject(r.Hash())
}

// statusAt reads the status file at path in a commit.
func statusAt(commit *object.Commit, path string) (*Status, error) {
	f, err := commit.File(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	data, err := f.Contents()
	if err != nil {
		return nil, err
	}
	st, err := ParseStatus([]byte(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

// ParseStatus reads a status file. Whatever a branch holds is read
// defensively: a file of another kind or version, or without a valid
// cluster name, is an error (bounded, without escapes), never a panic.
func ParseStatus(data []byte) (*Status, error) {
	var st Status
	if err := yaml.Unmarshal(data, &st); err != nil {
		return nil, errors.New(errtext.Error(err))
	}
	if st.APIVersion != APIVersion || st.Kind != Kind {
		return nil, fmt.Errorf("not a status file: apiVersion %q, kind %q (want %s %s)",
			errtext.Clean(st.APIVersion), errtext.Clean(st.Kind), APIVersion, Kind)
	}
	if err := ValidateClusterName(st.Cluster.Name); err != nil {
		return nil, errors.New(errtext.Error(err))
	}
	st.Settle(time.Now())
	return &st, nil
}

// ReadRepository returns the statuses a local repository holds: its status
// branches (refs/heads/<prefix>/<name>) or, for clusters without one, the
// remote-tracking branches a fetch brought (refs/remotes/<remote>/<prefix>/<name>).
// A CI job that fetched the status branches previews with the clusters
// they name. No status branch at all is an empty snapshot.
func ReadRepository(repo *git.Repository, prefix string) (*Snapshot, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	refs, err := repo.References()
	if err != nil {
		return nil, err
	}
	found := map[string]plumbing.ReferenceName{}
	err = refs.ForEach(func(ref *plumbing.Reference) error {
		name := ref.Name().String()
		if rest, ok := strings.CutPrefix(name, "refs/heads/"+prefix+"/"); ok && !strings.Contains(rest, "/") {
			found[rest] = ref.Name() // a local branch wins
			return nil
		}
		if rest, ok := strings.CutPrefix(name, "refs/remotes/"); ok {
			_, branch, _ := strings.Cut(rest, "/")
			if cluster, ok := strings.CutPrefix(branch, prefix+"/"); ok && !strings.Contains(cluster, "/") {
				if _, local := found[cluster]; !local || !strings.HasPrefix(found[cluster].String(), "refs/heads/") {
					found[cluster] = ref.Name()
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	snap := &Snapshot{}
	for _, cluster := range slices.Sorted(maps.Keys(found)) {
		st, err := readStatus(repo, found[cluster], cluster)
		if err != nil {
			snap.Problems = append(snap.Problems, fmt.Errorf("status branch %s: %w", found[cluster].Short(), err))
			continue
		}
		snap.Statuses = append(snap.Statuses, *st)
	}
	return snap, nil
}

// Known is every cluster a fleet knows: those of its inventories and those
// that reported on a status branch (their reported identity, with real
// labels and facts, wins over the inventory's), sorted by name.
type Known struct {
	Clusters []fleet.Cluster
	// Where says where each cluster comes from.
	Where map[string]Origin
	// Warnings are status branches left out (unreadable, or speaking for
	// another cluster).
	Warnings []string
	// Statuses are the status files read, by cluster name.
	Statuses map[string]*Status
}

// Origin is where a known cluster comes from.
type Origin string

// Origins.
const (
	// OriginInventory: an inventory of the fleet names it, and no status
	// branch has reported for it.
	OriginInventory Origin = "inventory"
	// OriginStatus: known only from its status branch.
	OriginStatus Origin = "status"
	// OriginBoth: in an inventory and on a status branch (the branch's
	// identity wins).
	OriginBoth Origin = "both"
)

func (o Origin) String() string { return string(o) }

// Branches says where the clusters' status branches are read: from the
// repository at URL with Auth when URL is set, otherwise from the local
// repository's own status branches (or their remote-tracking copies).
type Branches struct {
	URL    string
	Prefix string
	Auth   transport.AuthMethod
}

// KnownClusters reads the status branches — from src.URL when it is set,
// otherwise the local repository's own (repo may be nil: no status
// branches) — and joins them with the inventories' clusters.
func KnownClusters(ctx context.Context, repo *git.Repository, src Branches, inventories ...[]fleet.Cluster) (*Known, error) {
	k := &Known{Where: map[string]Origin{}, Statuses: map[string]*Status{}}
	var inventory, reported []fleet.Cluster
	for _, inv := range inventories {
		for _, c := range inv {
			inventory = append(inventory, c)
			if _, ok := k.Where[c.Name]; !ok {
				k.Where[c.Name] = OriginInventory
			}
		}
	}
	var snap *Snapshot
	var err error
	switch {
	case src.URL != "":
		snap, err = Read(ctx, src.URL, src.Prefix, src.Auth)
	case repo != nil:
		snap, err = ReadRepository(repo, src.Prefix)
	}
	if err != nil {
		return nil, err
	}
	if snap != nil {
		for _, p := range snap.Problems {
			k.Warnings = append(k.Warnings, p.Error())
		}
		for i, st := range snap.Statuses {
			name := st.Cluster.Name
			k.Statuses[name] = &snap.Statuses[i]
			if k.Where[name] == OriginInventory {
				k.Where[name] = OriginBoth
			} else {
				k.Where[name] = OriginStatus
			}
			reported = append(reported, st.Cluster)
		}
	}
	k.Clusters = fleet.JoinClusters(inventory, reported)
	return k, nil
}

// Narrow keeps the named clusters (all when names is empty), and fails
// for a name the fleet does not know.
func (k *Known) Narrow(names []string) ([]fleet.Cluster, error) {
	if len(names) == 0 {
		return k.Clusters, nil
	}
	for _, want := range names {
		if _, ok := k.Where[want]; !ok {
			return nil, fmt.Errorf("cluster %q is in neither inventory nor on a status branch", want)
		}
	}
	var out []fleet.Cluster
	for _, c := range k.Clusters {
		if slices.Contains(names, c.Name) {
			out = append(out, c)
		}
	}
	return out, nil
}
