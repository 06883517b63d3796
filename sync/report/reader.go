package report

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/sideband"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// Reader reads every cluster's status, as Read does, in one exchange with
// the Git host, and remembers each branch's tip and status file from one
// read to the next: a read is one ref advertisement and, for the branches
// that moved since (only those), one upload-pack request that wants their
// tips one commit deep and offers nothing it has — a status commit is a
// few hundred bytes, so sending it whole costs the host less than
// negotiating over every branch it has, which is what a fetch into a kept
// repository does (bench/githost: at 10,000 clusters a read after 40
// reports costs the host 273 ms that way). An agent of a fleet with waves
// reads the others at every pass while it waits; `status serve` and
// `status --wait` read at every refresh. The files are kept, not the
// statuses: each read parses them again (ParseStatus settles a status at
// the time of reading).
type Reader struct {
	url, prefix string
	auth        transport.AuthMethod
	// known: cluster → its branch's tip at the last read, and the status
	// file there (or why it could not be read).
	known map[string]knownBranch
}

// knownBranch is a status branch as last read.
type knownBranch struct {
	tip  plumbing.Hash
	data []byte
	err  error
}

// NewReader returns a Reader of the status branches under prefix.
func NewReader(url, prefix string, auth transport.AuthMethod) *Reader {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Reader{url: url, prefix: prefix, auth: auth}
}

// Read returns every cluster's status. No branch yet is an empty
// snapshot, not an error.
func (r *Reader) Read(ctx context.Context) (*Snapshot, error) {
	snap, err := r.read(ctx)
	return snap, source.RedactError(err, r.url)
}

func (r *Reader) read(ctx context.Context) (*Snapshot, error) {
	ep, err := transport.NewEndpoint(r.url)
	if err != nil {
		return nil, err
	}
	cli, err := client.NewClient(ep)
	if err != nil {
		return nil, err
	}
	sess, err := cli.NewUploadPackSession(ep, r.auth)
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	adv, err := sess.AdvertisedReferencesContext(ctx)
	if errors.Is(err, transport.ErrEmptyRemoteRepository) {
		r.known = nil
		return &Snapshot{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing the status branches: %w", err)
	}
	refs, err := adv.AllReferences()
	if err != nil {
		return nil, err
	}
	snap, tips := &Snapshot{}, map[string]plumbing.Hash{}
	for name, ref := range refs {
		cluster, ok := strings.CutPrefix(name.String(), "refs/heads/"+r.prefix+"/")
		switch {
		case ok && !strings.Contains(cluster, "/"):
			tips[cluster] = ref.Hash()
		case name == plumbing.NewBranchReferenceName(r.prefix):
			snap.Problems = append(snap.Problems, legacyBranch(r.prefix))
		}
	}
	moved := map[plumbing.Hash]bool{}
	for cluster, tip := range tips {
		if k, ok := r.known[cluster]; !ok || k.tip != tip {
			moved[tip] = true
		}
	}
	store := memory.NewStorage()
	if len(moved) > 0 {
		if err := fetchCommits(ctx, sess, adv, slices.Collect(maps.Keys(moved)), store); err != nil {
			return nil, fmt.Errorf("fetching %s: %w", english.Count(len(moved), "status branch"), err)
		}
	}
	known := make(map[string]knownBranch, len(tips))
	for _, cluster := range slices.Sorted(maps.Keys(tips)) {
		k, ok := r.known[cluster]
		if !ok || k.tip != tips[cluster] {
			k = knownBranch{tip: tips[cluster]}
			k.data, k.err = statusFile(store, k.tip, cluster)
		}
		known[cluster] = k
		st, err := k.status(cluster)
		if err != nil {
			snap.Problems = append(snap.Problems, fmt.Errorf("status branch %s: %w", Branch(r.prefix, cluster), err))
			continue
		}
		snap.Statuses = append(snap.Statuses, *st)
	}
	r.known = known
	return snap, nil
}

// fetchCommits asks the session for the commits, one commit deep, offering
// nothing (a status commit is smaller than the negotiation), into store.
func fetchCommits(ctx context.Context, sess transport.UploadPackSession, adv *packp.AdvRefs, wants []plumbing.Hash, store *memory.Storage) error {
	req := packp.NewUploadPackRequestFromCapabilities(adv.Capabilities)
	req.Wants = wants
	req.Depth = packp.DepthCommits(1)
	if err := req.Capabilities.Set(capability.Shallow); err != nil {
		return err
	}
	if adv.Capabilities.Supports(capability.NoProgress) {
		if err := req.Capabilities.Set(capability.NoProgress); err != nil {
			return err
		}
	}
	resp, err := sess.UploadPack(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Close()
	var pack io.Reader = resp
	switch {
	case req.Capabilities.Supports(capability.Sideband64k):
		pack = sideband.NewDemuxer(sideband.Sideband64k, resp)
	case req.Capabilities.Supports(capability.Sideband):
		pack = sideband.NewDemuxer(sideband.Sideband, resp)
	}
	return packfile.UpdateObjectStorage(store, pack)
}

// statusFile is the status file of a cluster at a fetched commit.
func statusFile(store *memory.Storage, tip plumbing.Hash, cluster string) ([]byte, error) {
	commit, err := object.GetCommit(store, tip)
	if err != nil {
		return nil, err
	}
	f, err := commit.File(Path(cluster))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Path(cluster), err)
	}
	data, err := f.Contents()
	return []byte(data), err
}

// status parses the kept file, and checks that it speaks for the branch's
// cluster.
func (k knownBranch) status(cluster string) (*Status, error) {
	if k.err != nil {
		return nil, k.err
	}
	st, err := ParseStatus(k.data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Path(cluster), err)
	}
	if st.Cluster.Name != cluster {
		return nil, fmt.Errorf("%s speaks for cluster %q, not %q: ignored", Path(cluster), st.Cluster.Name, cluster)
	}
	return st, nil
}

// legacyBranch is the problem of the shared status branch of old agents.
func legacyBranch(prefix string) error {
	return fmt.Errorf("%w: branch %s holds the statuses of agents from before per-cluster branches; delete it once they are upgraded (git push origin --delete %s)",
		ErrLegacyBranch, prefix, prefix)
}
