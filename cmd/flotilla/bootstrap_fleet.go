package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"cuelang.org/go/cue/literal"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/spf13/cobra"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// fleetEntry is bootstrap's --add-to-fleet: the cluster written into the
// fleet's inventory (clusters:), so that previews and rollouts name it
// before its first status arrives.
type fleetEntry struct {
	enabled  bool
	prBranch string
	path     string
	by       string
	auth     source.Auth
}

func addFleetEntryFlags(cmd *cobra.Command) *fleetEntry {
	fe := &fleetEntry{}
	fs := cmd.Flags()
	fs.BoolVar(&fe.enabled, "add-to-fleet", false, "also commit the cluster into the fleet's inventory (clusters: in fleet.cue) on --branch, before installing")
	fs.StringVar(&fe.prBranch, "pr-branch", "", "with --add-to-fleet, commit on this new `BRANCH` (for a pull request) instead of --branch")
	fs.StringVar(&fe.path, "path", ".", "`DIR` of fleet.cue inside the repository (with --add-to-fleet)")
	fs.StringVar(&fe.by, "by", "", "with --add-to-fleet, the commit's author `\"NAME <EMAIL>\"` (default: git config user.name and user.email)")
	addGitAuthFlags(cmd, &fe.auth, "fleet-", " to push to the fleet repository with --add-to-fleet (default: the --git-* credential)")
	return fe
}

// add commits the cluster into the fleet's inventory: a declaration
// appended to fleet.cue, which CUE unifies with the inventory wherever it
// is declared. The fleet is loaded before and after: a cluster already
// there with the same identity commits nothing, one there with another
// identity, or an edit the fleet does not accept, fails before anything
// is pushed (or installed).
func (fe *fleetEntry) add(ctx context.Context, w io.Writer, repo, branch string, c fleet.Cluster, fallback source.Auth) error {
	a := fe.auth
	if a == (source.Auth{}) {
		a = fallback
	}
	url := repoURL(repo)
	auth, err := a.Method(url)
	if err != nil {
		return err
	}
	who, err := gitAuthor(fe.by, "who adds the cluster to the fleet?")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "flotilla-bootstrap-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	r, err := git.PlainCloneContext(ctx, dir, false, &git.CloneOptions{
		URL: url, Auth: auth, ReferenceName: plumbing.NewBranchReferenceName(branch), SingleBranch: true, Depth: 1,
	})
	if err != nil {
		return fmt.Errorf("--add-to-fleet: cloning %s (%s): %w", source.RedactURL(url), branch, err)
	}
	f, err := fleet.Load(dir, fleet.LoadOptions{Path: fe.path})
	if err != nil {
		return fmt.Errorf("--add-to-fleet: the fleet at %s does not load: %w", branch, err)
	}
	if have, err := f.InventoryCluster(c.Name); err == nil {
		if sameIdentity(have, c) {
			fmt.Fprintf(w, "cluster %s is already in the fleet's inventory\n", c.Name)
			return nil
		}
		return fmt.Errorf("--add-to-fleet: cluster %s is in the fleet's inventory as region %q, labels %v; bootstrap gives region %q, labels %v: edit the inventory, or give the same identity",
			c.Name, have.Region, have.Labels, c.Region, c.Labels)
	}
	file := filepath.Join(fe.path, "fleet.cue")
	if err := appendEntry(dir, file, c); err != nil {
		return err
	}
	f, err = fleet.Load(dir, fleet.LoadOptions{Path: fe.path})
	if err != nil {
		return fmt.Errorf("--add-to-fleet: the fleet does not accept the cluster: %w", err)
	}
	have, err := f.InventoryCluster(c.Name)
	if err != nil {
		return fmt.Errorf("--add-to-fleet: after the edit: %w", err)
	}
	if !sameIdentity(have, c) {
		return fmt.Errorf("--add-to-fleet: after the edit, the fleet's inventory names cluster %s with region %q, labels %v (another declaration adds to it)", c.Name, have.Region, have.Labels)
	}
	return fe.commit(ctx, w, r, branch, file, c.Name, who, auth)
}

func (fe *fleetEntry) commit(ctx context.Context, w io.Writer, r *git.Repository, branch, file, cluster string, who object.Signature, auth transport.AuthMethod) error {
	wt, err := r.Worktree()
	if err != nil {
		return err
	}
	if _, err := wt.Add(filepath.ToSlash(file)); err != nil {
		return err
	}
	who.When = time.Now()
	sha, err := wt.Commit("fleet: add cluster "+cluster+"\n\nWritten by flotilla bootstrap --add-to-fleet.", &git.CommitOptions{Author: &who})
	if err != nil {
		return err
	}
	target := branch
	if fe.prBranch != "" {
		target = fe.prBranch
	}
	spec := config.RefSpec(sha.String() + ":" + plumbing.NewBranchReferenceName(target).String())
	if err := r.PushContext(ctx, &git.PushOptions{RemoteName: "origin", Auth: auth, RefSpecs: []config.RefSpec{spec}}); err != nil {
		if fe.prBranch != "" {
			return fmt.Errorf("--add-to-fleet: pushing %s (does the branch exist already?): %w", target, err)
		}
		return fmt.Errorf("--add-to-fleet: pushing to %s (it may have moved: run again): %w", target, err)
	}
	fmt.Fprintf(w, "added cluster %s to the fleet's inventory: %s on %s\n", cluster, gitrev.Short(sha.String()), target)
	if fe.prBranch != "" {
		fmt.Fprintf(w, "open a pull request from %s to %s\n", target, branch)
	}
	return nil
}

// appendEntry appends the cluster's inventory entry to the fleet file at
// path in the clone at dir. The clone is the fleet repository's content,
// which anyone who can push to it wrote: the file is opened through the
// clone's root (never outside it) and must be a regular file, not a link.
func appendEntry(dir, path string, c fleet.Cluster) error {
	var b strings.Builder
	fmt.Fprintf(&b, "\n// Added by flotilla bootstrap --add-to-fleet.\nclusters: %s: {", literal.String.Quote(c.Name))
	var fields []string
	if c.Region != "" {
		fields = append(fields, "region: "+literal.String.Quote(c.Region))
	}
	var labels []string
	for _, k := range slices.Sorted(maps.Keys(c.Labels)) {
		labels = append(labels, literal.String.Quote(k)+": "+literal.String.Quote(c.Labels[k]))
	}
	fields = append(fields, "labels: {"+strings.Join(labels, ", ")+"}")
	b.WriteString(strings.Join(fields, ", ") + "}\n")
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	fi, err := root.Lstat(path)
	if err != nil {
		return fmt.Errorf("--add-to-fleet: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("--add-to-fleet: %s is not a regular file (a link?): add the cluster by hand", path)
	}
	f, err := root.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("--add-to-fleet: %w", err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func sameIdentity(a, b fleet.Cluster) bool {
	return a.Region == b.Region && maps.Equal(a.Labels, b.Labels)
}
