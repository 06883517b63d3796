package kustomize

import (
	"bytes"
	"fmt"
	"path"
	"slices"
	"strings"

	"sigs.k8s.io/kustomize/api/konfig"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/render"
)

// checkLocal walks the kustomization in dir and every kustomization and
// plugin configuration it refers to, and refuses what kustomize would
// fetch with git or HTTP, or read outside the repository. (krusty builds
// its own loader, with an HTTP client and `git`, and has no switch for
// remote content, so the check is done before the build.) repoDir is the
// repository on disk.
//
// The check is not a list of the fields that load files: every value of
// the kustomization is looked at, so a field added to kustomize later is
// covered too. Only fields kustomize never loads anything from (labels,
// annotations, literals, image names) may hold URLs.
//
// Resources, bases and components, and the plugin configurations of
// generators, transformers and validators, must also be in the repository:
// a path that climbs out, is absolute, leads out through a symlink, or
// does not exist says so.
func checkLocal(mem filesys.FileSystem, repoDir, dir string, seen map[string]bool) error {
	if seen[dir] {
		return nil
	}
	seen[dir] = true
	file, data, k, err := readKustomization(mem, dir)
	if err != nil || k == nil {
		return err
	}
	if err := checkNoRemote(display(file), data); err != nil {
		return err
	}
	refs := slices.Concat(k.Resources, k.Components, k.Bases) //nolint:staticcheck // Bases is deprecated but still read by kustomize
	plugins := slices.Concat(k.Generators, k.Transformers, k.Validators)
	for _, ref := range slices.Concat(refs, plugins) {
		if strings.Contains(ref, "\n") {
			// An inline plugin configuration: its values were checked with
			// the kustomization's.
			continue
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
		} else if slices.Contains(plugins, ref) {
			// A plugin configuration names files of its own.
			data, err := mem.ReadFile(p)
			if err != nil {
				return err
			}
			if err := checkNoRemote(display(p), data); err != nil {
				return err
			}
		}
	}
	return nil
}

// dataFields are the kustomization fields whose values kustomize never
// loads anything from: there a URL is data.
var dataFields = map[string]bool{
	"commonAnnotations": true, "commonLabels": true, "labels": true, "annotations": true,
	"literals": true, "images": true, "metadata": true, "patch": true,
}

// checkNoRemote refuses a kustomization (or plugin configuration, in any
// of its YAML documents) with a value kustomize would fetch.
func checkNoRemote(file string, data []byte) error {
	for _, doc := range bytes.Split(data, []byte("\n---")) {
		var v any
		if err := yaml.Unmarshal(doc, &v); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		if ref, ok := remoteValue(v); ok {
			return fmt.Errorf("%w: %s refers to %q, which kustomize would fetch from outside the fleet repository (--allow-remote-bases allows it)",
				ErrRemoteBase, file, ref)
		}
	}
	return nil
}

// remoteValue finds a value kustomize would fetch: a single token (not an
// inline patch or document) that is a remote reference, alone or after
// `key=` (generator files).
func remoteValue(v any) (string, bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if dataFields[k] {
				continue
			}
			if ref, ok := remoteValue(child); ok {
				return ref, true
			}
		}
	case []any:
		for _, child := range v {
			if ref, ok := remoteValue(child); ok {
				return ref, true
			}
		}
	case string:
		tok := strings.TrimSpace(v)
		if tok == "" || strings.ContainsAny(tok, " \t\n") {
			return "", false
		}
		_, after, _ := strings.Cut(tok, "=")
		if remoteRef(tok) || (after != "" && remoteRef(after)) {
			return tok, true
		}
	}
	return "", false
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

// readKustomization reads the kustomization file of dir, if any: its name,
// its bytes and what it says.
func readKustomization(mem filesys.FileSystem, dir string) (string, []byte, *types.Kustomization, error) {
	for _, name := range konfig.RecognizedKustomizationFileNames() {
		file := path.Join(dir, name)
		if !mem.Exists(file) {
			continue
		}
		data, err := mem.ReadFile(file)
		if err != nil {
			return file, nil, nil, err
		}
		var k types.Kustomization
		if err := yaml.Unmarshal(data, &k); err != nil {
			return file, nil, nil, fmt.Errorf("%s: %w", display(file), err)
		}
		return file, data, &k, nil
	}
	return "", nil, nil, nil
}

// display shows an in-memory path as a repository path.
func display(p string) string {
	return strings.TrimPrefix(strings.TrimPrefix(p, repoMount), "/")
}
