package preview

import (
	"crypto/sha256"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/sync/snapshot"
)

// A bundle's inputs digest covers what the fleet says (paths, values), not
// the files those paths hold: a chart's template or a manifest can change
// while the digest stays the same. changedFiles finds the files that
// differ between the two revisions' fleet folders, and sourcesChanged says
// whether a bundle reads any of them, so that only such bundles are
// rendered although their digest did not move.

// changedFiles lists the files (slash paths) that differ between two
// snapshots' folders: added, removed, or with other content (a symbolic
// link by its target). The .git folder is left out, and so are the files
// Git ignores in a work tree (what `make build` leaves there is no part of
// the change).
func changedFiles(a, b *snapshot.Snapshot) ([]string, error) {
	ha, err := hashTree(a.Dir, a.Ignored)
	if err != nil {
		return nil, err
	}
	hb, err := hashTree(b.Dir, b.Ignored)
	if err != nil {
		return nil, err
	}
	var out []string
	for p, h := range ha {
		if hb[p] != h {
			out = append(out, p)
		}
	}
	for p := range hb {
		if _, ok := ha[p]; !ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// hashTree maps every file below dir to a digest of its content, but for
// what ignored (when set) says to leave out.
func hashTree(dir string, ignored func(string, bool) bool) (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case d.Name() == ".git" && p != dir && d.IsDir():
			return filepath.SkipDir
		case d.Name() == ".git":
			return nil // a `git worktree`'s pointer to its repository
		case ignored != nil && p != dir && ignored(rel, d.IsDir()):
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		case d.IsDir():
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "symlink:" + target
			return nil
		case !d.Type().IsRegular():
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		out[rel] = string(h.Sum(nil))
		return nil
	})
	return out, err
}

// sourceChanges says which bundles read changed files.
type sourceChanges struct {
	changed []string // every changed file
	// loose are changed files that are not fleet code (*.cue) and not in
	// any chart or manifests folder of the fleet: a kustomization may
	// refer to them (bases, components, generator files). Which they are
	// is known once every planned bundle was seen (own, then settle);
	// until then candidates are the changed files that are not fleet code.
	loose      []string
	candidates []string
	owned      map[string]bool
	settled    bool
}

// changesOf starts a sourceChanges to which bundles are shown as they are
// planned (own), then settled.
func changesOf(changed []string) *sourceChanges {
	sc := &sourceChanges{changed: changed, owned: map[string]bool{}}
	for _, f := range changed {
		if !strings.HasSuffix(f, ".cue") {
			sc.candidates = append(sc.candidates, f)
		}
	}
	return sc
}

// own records the folder a planned bundle reads all of its files from.
func (sc *sourceChanges) own(b *fleet.Bundle) {
	if dir := ownFolder(b); dir != "" {
		sc.owned[dir] = true
	}
}

// settle works out the loose files, every bundle having been seen.
func (sc *sourceChanges) settle() {
	owned := slices.Sorted(maps.Keys(sc.owned))
	for _, f := range sc.candidates {
		if !underAny(f, owned) {
			sc.loose = append(sc.loose, f)
		}
	}
	sc.settled = true
}

// affectsYet is affects before settle: whether the bundle reads a changed
// file, and false for known when that depends on the loose files (a
// kustomization, with changed files that may be loose).
func (sc *sourceChanges) affectsYet(b *fleet.Bundle) (affects, known bool) {
	if !sc.settled && b.Source.Kustomize != nil && len(sc.candidates) > 0 && !sc.affects(b) {
		return false, false
	}
	return sc.affects(b), true
}

// ownFolder is the folder a local chart or manifests bundle reads all of
// its files from; "" for other sources.
func ownFolder(b *fleet.Bundle) string {
	src := b.Source
	switch {
	case src.Helm != nil && src.Helm.InRepository():
		return path.Clean(src.Helm.Chart)
	case src.Manifests != nil:
		return path.Clean(src.Manifests.Path)
	}
	return ""
}

// affects reports whether the bundle reads a changed file.
func (sc *sourceChanges) affects(b *fleet.Bundle) bool {
	if sc == nil || len(sc.changed) == 0 {
		return false
	}
	src := b.Source
	if src.Helm != nil {
		for _, f := range src.Helm.ValuesFiles {
			if slices.Contains(sc.changed, path.Clean(f)) {
				return true
			}
		}
	}
	switch {
	case src.Kustomize != nil:
		return len(sc.loose) > 0 || anyUnder(sc.changed, path.Clean(src.Kustomize.Path))
	case ownFolder(b) != "":
		return anyUnder(sc.changed, ownFolder(b))
	}
	return false // CUE objects, charts from a repository or registry: all in the inputs
}

// anyUnder reports whether a file is dir or below it.
func anyUnder(files []string, dir string) bool {
	for _, f := range files {
		if f == dir || dir == "." || strings.HasPrefix(f, dir+"/") {
			return true
		}
	}
	return false
}

// underAny reports whether f is one of dirs or below one.
func underAny(f string, dirs []string) bool {
	for _, d := range dirs {
		if f == d || d == "." || strings.HasPrefix(f, d+"/") {
			return true
		}
	}
	return false
}
