package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/spf13/cobra"

	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/flotilla-gitops/flotilla/preview"
	"github.com/flotilla-gitops/flotilla/render/sops"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
	"github.com/flotilla-gitops/flotilla/sync/rollout"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// revertFlags are the flags of `flotilla rollout revert`.
type revertFlags struct {
	branch string
	push   bool
	by     string
	auth   source.Auth
}

func newRolloutRevertCmd() *cobra.Command {
	rf := &revertFlags{}
	cmd := &cobra.Command{
		Use:   "revert REVISION [DIR] [--branch B] [--push]",
		Short: "Write the commit that undoes a revision, and preview it for every cluster",
		Long: `Write, in the fleet repository at DIR (default: the current directory), a
normal commit that restores every file REVISION changed to what it was before
REVISION (for a merge: before it, on its first parent), and print 'flotilla
preview' of that commit, so that whoever reverts sees which clusters it
touches before it goes anywhere.

The commit carries the trailer Flotilla-Revert: REVISION, which the agents
read: the rollout lets a revert through its waves without their bake, or
everywhere at once with rollout.reverts: "immediate". Approvals, pauses and
holds still apply.

A file REVISION changed that changed again since is not overwritten: the
command stops and names it (revert those by hand). Without --branch the
commit goes on the current branch; --branch B creates B at HEAD, switches
to it and commits there (for a pull request). Nothing leaves the machine
without --push, which pushes that branch to origin (credentials as for the
agent: --username/--password-file or --ssh-key).

Exit status: 0 written (and pushed), 2 an error, or a cluster that the revert
would leave failing (as flotilla preview).`,
		Example: `  flotilla rollout revert 3f2a9c1 --branch revert-3f2a9c1 --push
  flotilla rollout revert HEAD~2 ./fleet --push`,
		Args: cobra.RangeArgs(1, 2),
	}
	fs := cmd.Flags()
	fs.StringVar(&rf.branch, "branch", "", "commit on a new branch `B` created at HEAD (default: the current branch)")
	fs.BoolVar(&rf.push, "push", false, "push the branch to origin once the commit is written")
	fs.StringVar(&rf.by, "by", "", "the commit's author, as `\"NAME <EMAIL>\"` (default: git config user.name and user.email)")
	addGitAuthFlags(cmd, &rf.auth, "", " for --push")
	ff := addFleetFlags(cmd)
	ff.boundExit = exitPreviewTrouble
	limits := addLimitFlags(cmd, false)
	known := addKnownClusterFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		trouble := func(err error) error { return &exitCodeError{code: exitPreviewTrouble, err: err} }
		dir := repoDir(args[1:])
		author, err := gitAuthor(rf.by, "who reverts?")
		if err != nil {
			return trouble(err)
		}
		rv, err := writeRevert(dir, args[0], rf.branch, author)
		if err != nil {
			return trouble(err)
		}
		w := cmd.OutOrStdout()
		fmt.Fprintf(w, "wrote %s on %s: %s\n  restores %s\n", gitrev.Short(rv.commit.String()), rv.branch, rv.subject, strings.Join(rv.files, ", "))
		if rf.push {
			if err := rf.pushBranch(cmd.Context(), rv); err != nil {
				return trouble(fmt.Errorf("the commit is written, not pushed: %w", err))
			}
			fmt.Fprintf(w, "pushed %s to origin\n", rv.branch)
		} else {
			fmt.Fprintf(w, "not pushed: git push origin %s (or --push) when the preview below is what you want\n", rv.branch)
		}
		fmt.Fprintf(w, "\npreview of %s against %s:\n", gitrev.Short(rv.commit.String()), gitrev.Short(rv.base.String()))
		if err := previewRevert(cmd, rv, dir, ff.path, limits, known); err != nil {
			return trouble(err)
		}
		return nil
	}
	return cmd
}

// previewRevert prints `flotilla preview` of the revert's commit against
// the commit it was written on.
func previewRevert(cmd *cobra.Command, rv *reverted, dir, path string, limits *limitFlags, known *knownClusterFlags) error {
	limits.sources.Secrets = sops.ModeMask
	opts, closeWorkers, err := limits.options(planrender.Options{})
	if err != nil {
		return err
	}
	defer closeWorkers()
	po := preview.Options{Dir: dir, Path: path, Base: rv.base.String(), Head: rv.commit.String(), Render: opts,
		Progress: func(s string) { fmt.Fprintln(progressTo(cmd), s) }}
	if po.Status, err = known.resolve(); err != nil {
		return err
	}
	rep, err := preview.Run(cmd.Context(), po)
	if err != nil {
		return fmt.Errorf("the commit is written; its preview failed: %w", err)
	}
	if err := rep.WriteText(cmd.OutOrStdout()); err != nil {
		return err
	}
	if failures := rep.NewFailures(); len(failures) > 0 {
		return fmt.Errorf("%w: %s", preview.ErrNewFailure, strings.Join(failures, ", "))
	}
	return nil
}

// reverted is the revert commit written.
type reverted struct {
	repo         *git.Repository
	base, commit plumbing.Hash
	branch       string
	subject      string
	files        []string
}

// writeRevert writes, at dir's HEAD (on a new branch when given), the
// commit that restores the files rev changed to their content before rev.
func writeRevert(dir, rev, branch string, author object.Signature) (*reverted, error) {
	repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true})
	if err != nil {
		return nil, fmt.Errorf("%s is not in a Git repository: %w", dir, err)
	}
	h, err := repo.ResolveRevision(plumbing.Revision(rev))
	if err != nil {
		return nil, fmt.Errorf("revision %s: %w", rev, err)
	}
	target, err := repo.CommitObject(*h)
	if err != nil {
		return nil, err
	}
	if target.NumParents() == 0 {
		return nil, fmt.Errorf("%s is the repository's first commit: there is nothing before it to go back to", gitrev.Short(h.String()))
	}
	head, err := repo.Head()
	if err != nil {
		return nil, fmt.Errorf("HEAD: %w", err)
	}
	restore, err := restoreOf(repo, target, head.Hash())
	if err != nil {
		return nil, err
	}
	wt, err := repo.Worktree()
	if err != nil {
		return nil, err
	}
	if err := cleanFor(wt, restore); err != nil {
		return nil, err
	}
	name := head.Name().Short()
	if branch != "" {
		ref := plumbing.NewBranchReferenceName(branch)
		if err := wt.Checkout(&git.CheckoutOptions{Branch: ref, Create: true, Keep: true}); err != nil {
			return nil, fmt.Errorf("creating branch %s: %w", branch, err)
		}
		name = branch
	}
	if err := restore.write(wt); err != nil {
		return nil, err
	}
	subject := firstLine(target.Message)
	msg := fmt.Sprintf("Revert %q\n\nThis reverts commit %s: the fleet files it changed are as they were before it.\n\n%s: %s\n",
		subject, h, rollout.RevertTrailer, h)
	author.When = time.Now()
	commit, err := wt.Commit(msg, &git.CommitOptions{Author: &author})
	if err != nil {
		return nil, err
	}
	return &reverted{repo: repo, base: head.Hash(), commit: commit, branch: name,
		subject: fmt.Sprintf("Revert %q", subject), files: restore.paths()}, nil
}

// restore is what a revert writes: path → the file before the reverted
// commit (nil: the commit added it, the revert deletes it).
type restore map[string]*object.File

func (r restore) paths() []string {
	var out []string
	for p := range r {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// restoreOf is what reverting target means at head: every file target
// changed, as it was in target's first parent. A file changed again since
// target (its content at head is not target's) stops the revert.
func restoreOf(repo *git.Repository, target *object.Commit, head plumbing.Hash) (restore, error) {
	parent, err := target.Parent(0)
	if err != nil {
		return nil, err
	}
	before, err := parent.Tree()
	if err != nil {
		return nil, err
	}
	after, err := target.Tree()
	if err != nil {
		return nil, err
	}
	hc, err := repo.CommitObject(head)
	if err != nil {
		return nil, err
	}
	now, err := hc.Tree()
	if err != nil {
		return nil, err
	}
	changes, err := object.DiffTree(before, after)
	if err != nil {
		return nil, err
	}
	out := restore{}
	var moved []string
	for _, ch := range changes {
		for _, p := range []string{ch.From.Name, ch.To.Name} {
			if _, done := out[p]; p == "" || done || slices.Contains(moved, p) {
				continue
			}
			was, _ := before.File(p)
			if was != nil && (was.Mode == filemode.Symlink || was.Mode == filemode.Submodule) {
				return nil, fmt.Errorf("%s was a %s before %s: revert it by hand", p, was.Mode, gitrev.Short(target.Hash.String()))
			}
			if link := linkedParent(now, p); link != "" {
				return nil, fmt.Errorf("%s: %s is a symbolic link at HEAD, and nothing is written through one: revert it by hand", p, link)
			}
			if blobOf(after, p) != blobOf(now, p) {
				moved = append(moved, p)
				continue
			}
			out[p] = was
		}
	}
	if len(moved) > 0 {
		slices.Sort(moved)
		return nil, fmt.Errorf("%s changed again since %s: not reverted; revert by hand, or revert the later commits first",
			strings.Join(moved, ", "), gitrev.Short(target.Hash.String()))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s changed no file: nothing to revert", gitrev.Short(target.Hash.String()))
	}
	return out, nil
}

// linkedParent is the first folder of path that is a symbolic link in the
// tree, or "": a file is never written through a link the repository
// holds (the work tree's filesystem refuses it too, after other files
// were written; this refuses before any is).
func linkedParent(t *object.Tree, path string) string {
	parts := strings.Split(path, "/")
	for i := 1; i < len(parts); i++ {
		dir := strings.Join(parts[:i], "/")
		if e, err := t.FindEntry(dir); err == nil && e.Mode == filemode.Symlink {
			return dir
		}
	}
	return ""
}

// blobOf is a file's blob in a tree (zero: no such file).
func blobOf(t *object.Tree, path string) plumbing.Hash {
	f, err := t.File(path)
	if err != nil {
		return plumbing.ZeroHash
	}
	return f.Hash
}

// cleanFor refuses to write over uncommitted changes to the files the
// revert restores.
func cleanFor(wt *git.Worktree, r restore) error {
	st, err := wt.Status()
	if err != nil {
		return err
	}
	var dirty []string
	for _, p := range r.paths() {
		if s, ok := st[p]; ok && (s.Worktree != git.Unmodified || s.Staging != git.Unmodified) {
			dirty = append(dirty, p)
		}
	}
	if len(dirty) > 0 {
		return fmt.Errorf("uncommitted changes to %s: commit or stash them first", strings.Join(dirty, ", "))
	}
	return nil
}

// write puts the restored files in the work tree and the index.
func (r restore) write(wt *git.Worktree) error {
	for _, p := range r.paths() {
		f := r[p]
		if f == nil {
			if _, err := wt.Remove(p); err != nil {
				return fmt.Errorf("removing %s: %w", p, err)
			}
			continue
		}
		if err := writeBlob(wt, p, f); err != nil {
			return err
		}
		if _, err := wt.Add(p); err != nil {
			return fmt.Errorf("adding %s: %w", p, err)
		}
	}
	return nil
}

// writeBlob writes a file's content at path in the work tree (its
// filesystem is rooted there), with its mode.
func writeBlob(wt *git.Worktree, p string, f *object.File) error {
	mode, err := f.Mode.ToOSFileMode()
	if err != nil {
		return err
	}
	out, err := wt.Filesystem.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode.Perm())
	if err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	rd, err := f.Reader()
	if err != nil {
		out.Close()
		return err
	}
	defer rd.Close()
	if _, err := io.Copy(out, rd); err != nil {
		out.Close()
		return fmt.Errorf("writing %s: %w", p, err)
	}
	return out.Close()
}

// pushBranch pushes the revert's branch to origin.
func (rf *revertFlags) pushBranch(ctx context.Context, rv *reverted) error {
	remote, err := rv.repo.Remote("origin")
	if err != nil {
		return fmt.Errorf("no remote origin to push to: %w", err)
	}
	urls := remote.Config().URLs
	if len(urls) == 0 {
		return errors.New("remote origin has no URL")
	}
	auth, err := rf.auth.Method(urls[0])
	if err != nil {
		return err
	}
	ref := plumbing.NewBranchReferenceName(rv.branch)
	err = rv.repo.PushContext(ctx, &git.PushOptions{RemoteName: "origin", Auth: auth,
		RefSpecs: []config.RefSpec{config.RefSpec(ref.String() + ":" + ref.String())}})
	if errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil
	}
	return source.RedactError(err, urls[0])
}

// firstLine is a commit message's subject.
func firstLine(msg string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(msg), "\n")
	return strings.TrimSpace(line)
}
