package kustomize

import (
	"fmt"
	"path"
	"strings"

	"sigs.k8s.io/kustomize/api/konfig"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/render"
)

// checkLocal walks the kustomization in dir and every kustomization it
// refers to, and refuses any resource, base or component that kustomize
// would fetch with git or HTTP, or that is not in the repository: a path
// that climbs out of it, is absolute, leads out through a symlink, or does
// not exist. (krusty has no switch for remote bases, so the check is done
// before the build.) repoDir is the repository on disk.
func checkLocal(mem filesys.FileSystem, repoDir, dir string, seen map[string]bool) error {
	if seen[dir] {
		return nil
	}
	seen[dir] = true
	file, k, err := readKustomization(mem, dir)
	if err != nil || k == nil {
		return err
	}
	refs := append(append(append([]string{}, k.Resources...), k.Components...), k.Bases...) //nolint:staticcheck // Bases is deprecated but still read by kustomize
	for _, ref := range refs {
		if remoteRef(ref) {
			return fmt.Errorf("%w: %s refers to %q, which kustomize would fetch from outside the fleet repository (--allow-remote-bases allows it)",
				ErrRemoteBase, display(file), ref)
		}
		p := path.Join(dir, ref)
		rel, inside := inRepo(p)
		if path.IsAbs(ref) || !inside {
			return fmt.Errorf("%w: %s refers to %q, which is outside the fleet repository", render.ErrPathEscapes, display(file), ref)
		}
		if _, err := render.RepoPath(repoDir, rel); err != nil {
			return fmt.Errorf("%s refers to %q: %w", display(file), ref, err)
		}
		if mem.IsDir(p) {
			if err := checkLocal(mem, repoDir, p, seen); err != nil {
				return err
			}
		}
	}
	return nil
}

// remoteRef reports whether kustomize would fetch ref instead of reading
// it from the repository. Kustomize tries a reference as a git URL before
// it looks for a file or folder of that name (so a folder named like a URL
// does not make it local), and takes as one: a URL with a scheme
// (https://, ssh://, file://, or go-getter's git:: prefix), a github.com
// path without a scheme, or SCP-style user@host:path.
func remoteRef(ref string) bool {
	r := strings.ToLower(strings.TrimSpace(ref))
	r = strings.TrimPrefix(r, "git::")
	if strings.Contains(r, "://") || strings.HasPrefix(r, "github.com/") || strings.HasPrefix(r, "github.com:") {
		return true
	}
	user, rest, ok := strings.Cut(r, "@")
	return ok && user != "" && !strings.Contains(user, "/") && strings.Contains(rest, ":")
}

// readKustomization reads the kustomization file of dir, if any.
func readKustomization(mem filesys.FileSystem, dir string) (string, *types.Kustomization, error) {
	for _, name := range konfig.RecognizedKustomizationFileNames() {
		file := path.Join(dir, name)
		if !mem.Exists(file) {
			continue
		}
		data, err := mem.ReadFile(file)
		if err != nil {
			return file, nil, err
		}
		var k types.Kustomization
		if err := yaml.Unmarshal(data, &k); err != nil {
			return file, nil, fmt.Errorf("%s: %w", display(file), err)
		}
		return file, &k, nil
	}
	return "", nil, nil
}

// display shows an in-memory path as a repository path.
func display(p string) string {
	return strings.TrimPrefix(strings.TrimPrefix(p, repoMount), "/")
}
