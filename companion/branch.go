package companion

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/flotilla-gitops/flotilla/sync/source"
)

// CommitOptions say where a hydration is committed.
type CommitOptions struct {
	// Branch is the hydrated branch, written in the local repository
	// without a work tree (it must not be the branch checked out).
	Branch string
	// Push fetches the branch and its notes from Remote first (they are
	// what the new commit builds on), then pushes both; when another
	// hydration pushed in between, it starts again on the new tip, for at
	// most Timeout (default 2 minutes).
	Push    bool
	Remote  string
	Auth    transport.AuthMethod
	Timeout time.Duration
	// Committer signs the hydrated commit and the note (default
	// "flotilla hydrate <flotilla@flotilla.dev>").
	Committer *object.Signature
}

// Trailers of a hydrated commit's message, naming its source commit.
const (
	TrailerDrySHA  = "Flotilla-Dry-Sha"
	TrailerDryRepo = "Flotilla-Dry-Repo"
	// TrailerHeld names a cluster ("eu-1") or a cluster's bundle
	// ("eu-1/web") whose folder the rollout held at an earlier source
	// commit in this hydration: its content is not the Dry-Sha's.
	TrailerHeld = "Flotilla-Held"
)

// CommitBranch commits the hydrated fleet to a branch of the repository
// holding dir: one commit when the files changed, none otherwise, and in
// both cases a note on the branch's tip in NotesRef ({"drySha": …}, as
// Argo CD's hydrator writes it) saying that the source commit is
// hydrated there.
func CommitBranch(ctx context.Context, dir string, out *Output, opts CommitOptions) (*Result, error) {
	repo, _, err := source.OpenLocal(dir)
	if err != nil {
		return nil, err
	}
	if opts.Branch == "" {
		return nil, errors.New("no branch to hydrate into")
	}
	branch := plumbing.NewBranchReferenceName(opts.Branch)
	if err := branch.Validate(); err != nil {
		return nil, fmt.Errorf("branch %q: %w", opts.Branch, err)
	}
	if head, err := repo.Head(); err == nil && head.Name() == branch {
		return nil, fmt.Errorf("branch %s is checked out: hydrate writes it without a work tree, so check out another branch (or hydrate with --out)", opts.Branch)
	}
	who := object.Signature{Name: "flotilla hydrate", Email: "flotilla@flotilla.dev"}
	if opts.Committer != nil {
		who = *opts.Committer
	}
	if !opts.Push {
		return commitOnce(repo, branch, out, who)
	}
	if opts.Remote == "" {
		opts.Remote = "origin"
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	remote, err := repo.Remote(opts.Remote)
	if err != nil {
		return nil, fmt.Errorf("remote %q: %w", opts.Remote, err)
	}
	url := ""
	if urls := remote.Config().URLs; len(urls) > 0 {
		url = urls[0]
	}
	// Another hydration that pushed first loses nobody's work: build on
	// its tip and push again, until the deadline.
	attempt := 0
	var res *Result
	err = source.Retry(ctx, source.RetryOptions{Attempts: math.MaxInt, Stop: func(err error) bool { return !errors.Is(err, source.ErrLeaseLost) }},
		func(ctx context.Context) error {
			attempt++
			if err := fetchRefs(ctx, repo, opts, branch); err != nil {
				return source.RedactError(fmt.Errorf("fetching %s and its notes from %s: %w", opts.Branch, opts.Remote, err), url)
			}
			var err error
			if res, err = commitOnce(repo, branch, out, who); err != nil {
				return err
			}
			err = repo.PushContext(ctx, &git.PushOptions{
				RemoteName: opts.Remote, Auth: opts.Auth,
				RefSpecs: []config.RefSpec{
					config.RefSpec(branch.String() + ":" + branch.String()),
					config.RefSpec(NotesRef + ":" + NotesRef),
				},
			})
			if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
				return source.RedactError(fmt.Errorf("pushing %s and its notes to %s (attempt %d): %w", opts.Branch, opts.Remote, attempt, source.PushFailed(err)), url)
			}
			res.Pushed = true
			return nil
		})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// fetchRefs sets the local branch and notes to the remote's (either may
// not exist yet). The hydrated branch belongs to the hydration: the
// remote's tip wins over a local one.
func fetchRefs(ctx context.Context, repo *git.Repository, opts CommitOptions, branch plumbing.ReferenceName) error {
	refs, err := remoteRefs(ctx, repo, opts)
	if err != nil {
		return err
	}
	var specs []config.RefSpec
	for _, name := range []plumbing.ReferenceName{branch, NotesRef} {
		if _, ok := refs[name]; ok {
			specs = append(specs, config.RefSpec("+"+name.String()+":"+name.String()))
		} else if err := repo.Storer.RemoveReference(name); err != nil {
			return err
		}
	}
	if len(specs) == 0 {
		return nil
	}
	err = repo.FetchContext(ctx, &git.FetchOptions{RemoteName: opts.Remote, Auth: opts.Auth, RefSpecs: specs, Tags: git.NoTags, Force: true})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return err
	}
	return nil
}

func remoteRefs(ctx context.Context, repo *git.Repository, opts CommitOptions) (map[plumbing.ReferenceName]plumbing.Hash, error) {
	remote, err := repo.Remote(opts.Remote)
	if err != nil {
		return nil, err
	}
	list, err := remote.ListContext(ctx, &git.ListOptions{Auth: opts.Auth})
	if err != nil && !errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return nil, err
	}
	out := map[plumbing.ReferenceName]plumbing.Hash{}
	for _, r := range list {
		out[r.Name()] = r.Hash()
	}
	return out, nil
}

// commitOnce commits out on the local branch's tip (when the files
// changed) and notes the tip.
func commitOnce(repo *git.Repository, branch plumbing.ReferenceName, out *Output, who object.Signature) (*Result, error) {
	s := repo.Storer
	who.When = time.Now()
	var parent *object.Commit
	ref, err := s.Reference(branch)
	switch {
	case errors.Is(err, plumbing.ErrReferenceNotFound):
	case err != nil:
		return nil, err
	default:
		if parent, err = repo.CommitObject(ref.Hash()); err != nil {
			return nil, fmt.Errorf("branch %s: %w", branch.Short(), err)
		}
	}
	old := &previous{hashes: map[string]plumbing.Hash{}, read: func(string) ([]byte, error) { return nil, errors.New("no such file") }}
	if parent != nil {
		tree, err := parent.Tree()
		if err != nil {
			return nil, err
		}
		if err := tree.Files().ForEach(func(f *object.File) error {
			old.hashes[f.Name] = f.Hash
			return nil
		}); err != nil {
			return nil, err
		}
		old.read = func(p string) ([]byte, error) {
			h, ok := old.hashes[p]
			if !ok {
				return nil, fmt.Errorf("%s: no such file", p)
			}
			return readBlob(repo, h)
		}
	}
	final, changed, err := assemble(out, old)
	if err != nil {
		return nil, err
	}
	res := &Result{Changed: changed, Files: len(final)}
	res.Added, res.Updated, res.Removed = diffCounts(old.hashes, final)
	tip := plumbing.ZeroHash
	if parent != nil {
		tip = parent.Hash
	}
	if changed {
		treeHash, err := source.StoreTree(s, final)
		if err != nil {
			return nil, err
		}
		c := &object.Commit{Author: who, Committer: who, Message: commitMessage(out.Metadata, out.HeldPaths()), TreeHash: treeHash}
		if parent != nil {
			c.ParentHashes = []plumbing.Hash{parent.Hash}
		}
		if tip, err = source.StoreObject(s, c); err != nil {
			return nil, err
		}
		newRef := plumbing.NewHashReference(branch, tip)
		if parent != nil {
			err = s.CheckAndSetReference(newRef, ref)
		} else {
			err = s.SetReference(newRef)
		}
		if err != nil {
			return nil, fmt.Errorf("moving %s: %w", branch.Short(), err)
		}
	}
	res.Commit = tip.String()
	if err := addNote(repo, tip, noteJSON{DrySHA: out.Metadata.DrySHA, Held: out.HeldPaths()}, who); err != nil {
		return nil, fmt.Errorf("noting %s on %s: %w", out.Metadata.DrySHA, short(tip.String()), err)
	}
	return res, nil
}

// commitMessage is a hydrated commit's message: the source commit's subject
// and the trailers naming it.
func commitMessage(m Metadata, held []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s\n\nHydrated by flotilla hydrate from %s.\n\n", short(m.DrySHA), strings.ReplaceAll(m.Subject, "\n", " "), m.RepoURL)
	fmt.Fprintf(&b, "%s: %s\n%s: %s\n", TrailerDrySHA, m.DrySHA, TrailerDryRepo, m.RepoURL)
	for _, h := range held {
		fmt.Fprintf(&b, "%s: %s\n", TrailerHeld, h)
	}
	return b.String()
}

// heldOf reads the Flotilla-Held trailers of a hydrated commit's message.
func heldOf(message string) []string {
	var out []string
	for _, line := range strings.Split(message, "\n") {
		if v, ok := strings.CutPrefix(line, TrailerHeld+": "); ok {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

// DrySHAOf reads the source commit a hydrated commit's message names, or
// "" when it names none.
func DrySHAOf(message string) string {
	for _, line := range strings.Split(message, "\n") {
		if v, ok := strings.CutPrefix(line, TrailerDrySHA+": "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// noteJSON is the note's content, Argo CD's CommitNote, with the
// clusters and bundles the rollout held (Flotilla's own field).
type noteJSON struct {
	DrySHA string   `json:"drySha"`
	Held   []string `json:"flotillaHeld,omitempty"`
}

// addNote sets target's note in NotesRef to name drySha, keeping every
// other note; nothing is written when the note says so already. Notes
// trees written by Git with fan-out folders (ab/cdef…) keep their
// fan-out.
func addNote(repo *git.Repository, target plumbing.Hash, note noteJSON, who object.Signature) error {
	s := repo.Storer
	content, err := jsonIndent(note)
	if err != nil {
		return err
	}
	files := map[string]plumbing.Hash{}
	var parents []plumbing.Hash
	fanout := false
	ref, err := s.Reference(NotesRef)
	switch {
	case errors.Is(err, plumbing.ErrReferenceNotFound):
		ref = nil
	case err != nil:
		return err
	default:
		notes, err := repo.CommitObject(ref.Hash())
		if err != nil {
			return err
		}
		parents = []plumbing.Hash{notes.Hash}
		tree, err := notes.Tree()
		if err != nil {
			return err
		}
		for _, e := range tree.Entries {
			if e.Mode == filemode.Dir && len(e.Name) == 2 {
				fanout = true
			}
		}
		if err := tree.Files().ForEach(func(f *object.File) error {
			files[f.Name] = f.Hash
			return nil
		}); err != nil {
			return err
		}
	}
	name := target.String()
	if fanout {
		name = name[:2] + "/" + name[2:]
	}
	for _, p := range []string{target.String(), target.String()[:2] + "/" + target.String()[2:]} {
		if h, ok := files[p]; ok {
			if existing, err := readBlob(repo, h); err == nil {
				var n noteJSON
				if json.Unmarshal(existing, &n) == nil && n.DrySHA == note.DrySHA && slices.Equal(n.Held, note.Held) {
					return nil
				}
			}
			delete(files, p)
		}
	}
	if files[name], err = source.StoreBlob(s, content); err != nil {
		return err
	}
	tree, err := source.StoreTreeOf(s, files)
	if err != nil {
		return err
	}
	c, err := source.StoreObject(s, &object.Commit{Author: who, Committer: who, TreeHash: tree, ParentHashes: parents,
		Message: "Notes added by 'flotilla hydrate'\n"})
	if err != nil {
		return err
	}
	newRef := plumbing.NewHashReference(NotesRef, c)
	if ref != nil {
		return s.CheckAndSetReference(newRef, ref)
	}
	return s.SetReference(newRef)
}

func readBlob(repo *git.Repository, h plumbing.Hash) ([]byte, error) {
	b, err := repo.BlobObject(h)
	if err != nil {
		return nil, err
	}
	r, err := b.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// Note reads the source commit noted on a hydrated commit, or "".
func Note(repo *git.Repository, commit plumbing.Hash) (string, error) {
	n, err := readNote(repo, commit)
	return n.DrySHA, err
}

// readNote reads the note on a hydrated commit (empty: none).
func readNote(repo *git.Repository, commit plumbing.Hash) (noteJSON, error) {
	ref, err := repo.Storer.Reference(NotesRef)
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return noteJSON{}, nil
	}
	if err != nil {
		return noteJSON{}, err
	}
	notes, err := repo.CommitObject(ref.Hash())
	if err != nil {
		return noteJSON{}, err
	}
	tree, err := notes.Tree()
	if err != nil {
		return noteJSON{}, err
	}
	name := commit.String()
	for _, p := range []string{name, path.Join(name[:2], name[2:])} {
		f, err := tree.File(p)
		if err != nil {
			continue
		}
		data, err := f.Contents()
		if err != nil {
			return noteJSON{}, err
		}
		var n noteJSON
		if err := json.Unmarshal([]byte(data), &n); err != nil {
			return noteJSON{}, fmt.Errorf("note on %s: %w", short(name), err)
		}
		return n, nil
	}
	return noteJSON{}, nil
}

// Hydration is what one hydrated commit holds: the source commit it was
// hydrated from, the clusters and bundles the rollout held at an earlier
// one (TrailerHeld), and the commit before it.
type Hydration struct {
	Dry    string
	Held   map[string]bool
	Parent string
}

// Hydrations are a hydrated branch's commits, by hash.
type Hydrations map[string]Hydration

// Revision is the source commit a cluster's bundle is hydrated from in
// the hydrated commit: the commit's source commit, unless the rollout held
// the cluster or the bundle there; then the one of the commit before,
// and so on. "" when the history read does not say.
func (h Hydrations) Revision(commit, cluster, bundle string) string {
	for range len(h) + 1 {
		c, ok := h[commit]
		if !ok {
			return ""
		}
		if !c.Held[cluster] && !c.Held[cluster+"/"+bundle] {
			return c.Dry
		}
		commit = c.Parent
	}
	return ""
}

// SourceCommits reads the hydrated branch at url (its last depth commits)
// and its notes: each hydrated commit's source commit and what the
// rollout held there (its note, or its trailers when it has no note). An
// agent observing Flux reads what Flux applied (a hydrated commit) as the
// source commit each of its bundles was hydrated from. tip is the
// branch's tip.
func SourceCommits(ctx context.Context, url, branch string, auth transport.AuthMethod, depth int) (sources Hydrations, tip string, err error) {
	repo, err := git.Init(memory.NewStorage(), nil)
	if err != nil {
		return nil, "", err
	}
	if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{url}}); err != nil {
		return nil, "", err
	}
	branchRef := plumbing.NewBranchReferenceName(branch)
	err = repo.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", Auth: auth, Depth: depth, Tags: git.NoTags,
		RefSpecs: []config.RefSpec{config.RefSpec("+" + branchRef.String() + ":" + branchRef.String())}})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil, "", source.RedactError(fmt.Errorf("fetching the hydrated branch %s: %w", branch, err), url)
	}
	// No notes yet is no error: the trailers say enough.
	_ = repo.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", Auth: auth, Depth: 1, Tags: git.NoTags,
		RefSpecs: []config.RefSpec{config.RefSpec("+" + NotesRef + ":" + NotesRef)}})
	ref, err := repo.Reference(branchRef, true)
	if err != nil {
		return nil, "", err
	}
	sources = Hydrations{}
	c, err := repo.CommitObject(ref.Hash())
	for n := 0; err == nil && n < depth; n++ {
		h := Hydration{Held: map[string]bool{}}
		note, nerr := readNote(repo, c.Hash)
		held := note.Held
		if h.Dry = note.DrySHA; nerr != nil || h.Dry == "" {
			h.Dry, held = DrySHAOf(c.Message), heldOf(c.Message)
		}
		for _, x := range held {
			h.Held[x] = true
		}
		if len(c.ParentHashes) > 0 {
			h.Parent = c.ParentHashes[0].String()
		}
		if h.Dry != "" {
			sources[c.Hash.String()] = h
		}
		if len(c.ParentHashes) == 0 {
			break
		}
		c, err = repo.CommitObject(c.ParentHashes[0])
	}
	return sources, ref.Hash().String(), nil
}
