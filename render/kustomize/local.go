package kustomize

import (
	"fmt"
	"path"
	"strings"

	"sigs.k8s.io/kustomize/api/konfig"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// checkLocal walks the kustomization in dir and every kustomization it
// refers to, and refuses any resource, base or component that is not in
// the repository: kustomize would fetch it with git or HTTP. (krusty has no
// switch for this, so the check is done before the build.)
func checkLocal(mem filesys.FileSystem, dir string, seen map[string]bool) error {
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
		p := path.Join(dir, ref)
		switch {
		case strings.Contains(ref, "://") || strings.HasPrefix(ref, "git@") || !mem.Exists(p):
			return fmt.Errorf("%w: %s refers to %q, which is not in the fleet repository", ErrRemoteBase, display(file), ref)
		case mem.IsDir(p):
			if err := checkLocal(mem, p, seen); err != nil {
				return err
			}
		}
	}
	return nil
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
