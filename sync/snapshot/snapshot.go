// Package snapshot opens a local fleet repository's fleet at a revision,
// as the commands that work on the whole fleet begin: the revision written
// out of Git into a folder of its own (no checkout; the work tree as it is
// when no revision is named), the fleet loaded there, and every cluster it
// knows — its inventory and the status branches. preview opens two
// snapshots (base and head), hydrate one.
package snapshot

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/format/gitignore"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// Repo is a local fleet repository opened for snapshots. Close removes the
// folders the snapshots were written to.
type Repo struct {
	// Git is the repository (status branches and remotes are read from it).
	Git *git.Repository
	dir string // the folder opened (the fleet's, inside the work tree)
	sub string // that folder, from the repository's root
	tmp string // where snapshots are written
}

// Open opens the repository holding dir.
func Open(dir string) (*Repo, error) {
	repo, sub, err := source.OpenLocal(dir)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "flotilla-snapshot-")
	if err != nil {
		return nil, err
	}
	return &Repo{Git: repo, dir: dir, sub: sub, tmp: tmp}, nil
}

// Close removes what the snapshots wrote.
func (r *Repo) Close() error { return os.RemoveAll(r.tmp) }

// Snapshot is the fleet folder at one revision.
type Snapshot struct {
	// Commit is the revision; nil for the work tree.
	Commit *object.Commit
	// Dir holds the fleet folder's files at the revision.
	Dir string
	// Fleet is the fleet loaded there (after Load).
	Fleet *fleet.Fleet
	// Ignored reports, for the work tree, whether a path of Dir (slash
	// separated) is one Git ignores (.gitignore, .git/info/exclude): built
	// binaries and the like are no part of the fleet a commit would hold.
	// nil for a revision, which has no such files.
	Ignored func(rel string, isDir bool) bool
	name    string // the revision as asked for, for messages
}

// At writes the fleet folder at ref out of Git into a folder of its own;
// ref "" is the work tree as it is (nothing written).
func (r *Repo) At(ref string) (*Snapshot, error) {
	if ref == "" {
		return &Snapshot{Dir: r.dir, Ignored: r.ignored(), name: "the work tree"}, nil
	}
	commit, err := source.ResolveCommit(r.Git, ref)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(r.tmp, "rev-")
	if err != nil {
		return nil, err
	}
	if err := source.WriteTree(commit, r.sub, filepath.Clean(dir)); err != nil {
		return nil, fmt.Errorf("reading the fleet at %s: %w", ref, err)
	}
	return &Snapshot{Commit: commit, Dir: dir, name: ref}, nil
}

// ignored is the work tree's ignore rules, for paths of the fleet folder.
func (r *Repo) ignored() func(string, bool) bool {
	wt, err := r.Git.Worktree()
	if err != nil {
		return nil
	}
	patterns, _ := gitignore.ReadPatterns(wt.Filesystem, nil)
	m := gitignore.NewMatcher(append(patterns, wt.Excludes...))
	return func(rel string, isDir bool) bool {
		p := path.Join(r.sub, rel)
		return p != "." && m.Match(strings.Split(p, "/"), isDir)
	}
}

// Load loads the snapshot's fleet. An error names the revision, never the
// folder it was written to.
func (s *Snapshot) Load(opts fleet.LoadOptions) error {
	f, err := fleet.Load(s.Dir, opts)
	if err != nil {
		if msg := err.Error(); s.Commit != nil && fleet.AsDiagnostics(err) == nil && strings.Contains(msg, s.Dir) {
			msg = strings.ReplaceAll(msg, s.Dir+string(filepath.Separator), s.name+":")
			return renamed{msg: strings.ReplaceAll(msg, s.Dir, s.name+":."), err: err}
		}
		return err
	}
	s.Fleet = f
	return nil
}

// Revision is the snapshot's commit hash, or "" for the work tree.
func (s *Snapshot) Revision() string {
	if s.Commit == nil {
		return ""
	}
	return s.Commit.Hash.String()
}

// Known is every cluster the loaded snapshots' inventories name and the
// status branches (from branches, or the repository's own) report.
func (r *Repo) Known(ctx context.Context, branches report.Branches, snaps ...*Snapshot) (*report.Known, error) {
	var inventories [][]fleet.Cluster
	for _, s := range snaps {
		inventories = append(inventories, s.Fleet.Inventory())
	}
	return report.KnownClusters(ctx, r.Git, branches, inventories...)
}

// renamed is an error said in other words.
type renamed struct {
	msg string
	err error
}

func (e renamed) Error() string { return e.msg }
func (e renamed) Unwrap() error { return e.err }
