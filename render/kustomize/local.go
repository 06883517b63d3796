package kustomize

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/kustomize/api/konfig"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
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
// does not exist says so; and so must every file the kustomizations name
// (patches, generators' files, CRDs, replacements: see fileRefs).
func checkLocal(mem filesys.FileSystem, repoDir, dir string) error {
	w := &walker{fs: mem, repoDir: repoDir, seen: map[string]bool{}}
	w.kustomization(dir)
	return errors.Join(w.errs...)
}

// Check checks, without building and without network, what the bundle's
// kustomization and the kustomizations it reaches in the repository name:
// every resource, base and component is there (a folder with a
// kustomization file, or a file), every patch, generator file, CRD,
// configuration and replacement file is a file of the repository, none
// leaves it; and without allowRemote nothing would be fetched. Every
// problem is returned (joined), each naming the kustomization file, the
// field and the path, with a near name when one is there ("../bsae": did
// you mean "../base"?). The bundle's path and components are checked by
// render.CheckSource.
func Check(repoDir string, src *spec.Kustomize, allowRemote bool) error {
	root, err := os.OpenRoot(repoDir)
	if err != nil {
		return err
	}
	defer root.Close()
	w := &walker{fs: newRepoFS(context.Background(), root, nil), repoDir: repoDir, allowRemote: allowRemote, seen: map[string]bool{}}
	for _, p := range append([]string{src.Path}, src.Components...) {
		if _, err := render.RepoPath(repoDir, p); err == nil {
			w.kustomization(path.Join(repoMount, filepath.ToSlash(p)))
		}
	}
	return errors.Join(w.errs...)
}

// walker checks a tree of kustomizations, collecting every problem.
type walker struct {
	fs          filesys.FileSystem
	repoDir     string
	allowRemote bool
	seen        map[string]bool
	errs        []error
}

func (w *walker) fail(err error) { w.errs = append(w.errs, err) }

// kustomization checks the kustomization of dir (none: nothing to check)
// and, recursively, what it refers to.
func (w *walker) kustomization(dir string) {
	if w.seen[dir] {
		return
	}
	w.seen[dir] = true
	file, data, k, err := readKustomization(w.fs, dir)
	if err != nil || k == nil {
		if err != nil {
			w.fail(err)
		}
		return
	}
	if !w.allowRemote {
		if err := checkNoRemote(display(file), data); err != nil {
			w.fail(err)
			return
		}
	}
	plugins := slices.Concat(k.Generators, k.Transformers, k.Validators)
	for _, field := range []struct {
		name string
		refs []string
	}{
		{"resources", k.Resources}, {"bases", k.Bases}, {"components", k.Components}, //nolint:staticcheck // Bases is deprecated but still read by kustomize
		{"generators", k.Generators}, {"transformers", k.Transformers}, {"validators", k.Validators},
	} {
		for _, ref := range field.refs {
			w.ref(file, dir, field.name, ref, slices.Contains(plugins, ref))
		}
	}
	for _, f := range fileRefs(k) {
		switch p := w.inside(file, dir, f.field, f.path); {
		case p == "":
		case w.fs.IsDir(p):
			w.fail(fmt.Errorf("%s: %s %q: %w as a file (it is a folder)", display(file), f.field, f.path, render.ErrSourceMissing))
		case !w.fs.Exists(p):
			w.fail(fmt.Errorf("%s: %s %q: %w", display(file), f.field, f.path, missing(w.repoDir, dir, p)))
		}
	}
}

// inside is ref of the kustomization in dir as a path of the file
// system, or "" (the problem noted) when it is not in the repository. A
// remote reference is left alone: checkNoRemote refuses it unless remote
// content is allowed.
func (w *walker) inside(file, dir, field, ref string) string {
	if remoteRef(ref) {
		return ""
	}
	p := path.Join(dir, ref)
	rel, ok := inRepo(p)
	if path.IsAbs(ref) || !ok {
		w.fail(fmt.Errorf("%s: %s %q: %w", display(file), field, ref, render.ErrPathEscapes))
		return ""
	}
	if _, err := render.RepoPath(w.repoDir, rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		w.fail(fmt.Errorf("%s: %s %q: %w", display(file), field, ref, err))
		return ""
	}
	return p
}

// ref checks a resource, base, component or plugin configuration: a
// folder with a kustomization (walked in turn) or a file.
func (w *walker) ref(file, dir, field, ref string, plugin bool) {
	if strings.Contains(ref, "\n") {
		return // an inline plugin configuration, checked with the kustomization
	}
	p := w.inside(file, dir, field, ref)
	switch {
	case p == "":
	case w.fs.IsDir(p):
		if _, _, k, err := readKustomization(w.fs, p); err == nil && k == nil {
			w.fail(fmt.Errorf("%s: %s %q: the folder has no %s", display(file), field, ref, strings.Join(konfig.RecognizedKustomizationFileNames(), " or ")))
			return
		}
		w.kustomization(p)
	case !w.fs.Exists(p):
		w.fail(fmt.Errorf("%s: %s %q: %w", display(file), field, ref, missing(w.repoDir, dir, p)))
	case plugin && !w.allowRemote:
		// A plugin configuration names files of its own.
		data, err := w.fs.ReadFile(p)
		if err == nil {
			err = checkNoRemote(display(p), data)
		}
		if err != nil {
			w.fail(err)
		}
	}
}

// missing says that the repository has no p (a file system path, named
// in the kustomization of dir), with a near name when there is one, as the
// kustomization would write it.
func missing(repoDir, dir, p string) error {
	rel, _ := inRepo(p)
	near := render.Similar(repoDir, rel)
	if near == "" {
		return render.ErrSourceMissing
	}
	from, _ := inRepo(dir)
	if r, err := filepath.Rel(filepath.FromSlash(from), filepath.FromSlash(near)); err == nil {
		near = filepath.ToSlash(r)
	}
	return fmt.Errorf("%w (did you mean %q?)", render.ErrSourceMissing, near)
}

// fileRef is a file a kustomization names in one of its fields.
type fileRef struct{ field, path string }

// fileRefs are the files a kustomization names besides its resources and
// plugins: patches, the files and env files of its generators, CRDs,
// transformer configurations, replacements and the OpenAPI schema.
// Inline patches (YAML in the field) are not files.
func fileRefs(k *types.Kustomization) []fileRef {
	var out []fileRef
	add := func(field string, paths ...string) {
		for _, p := range paths {
			if p != "" {
				out = append(out, fileRef{field, p})
			}
		}
	}
	for _, p := range slices.Concat(k.Patches, k.PatchesJson6902) { //nolint:staticcheck // deprecated but still read by kustomize
		add("patches.path", p.Path)
	}
	for _, p := range k.PatchesStrategicMerge { //nolint:staticcheck // deprecated but still read by kustomize
		if s := string(p); !strings.ContainsAny(s, "\n:{") {
			add("patchesStrategicMerge", s)
		}
	}
	generators := make([]types.GeneratorArgs, 0, len(k.ConfigMapGenerator)+len(k.SecretGenerator))
	for _, g := range k.ConfigMapGenerator {
		generators = append(generators, g.GeneratorArgs)
	}
	for _, g := range k.SecretGenerator {
		generators = append(generators, g.GeneratorArgs)
	}
	for _, g := range generators {
		for _, f := range g.FileSources {
			_, file, ok := strings.Cut(f, "=")
			if !ok {
				file = f
			}
			add("files", file)
		}
		add("envs", g.EnvSources...)
		add("envs", g.EnvSource) //nolint:staticcheck // deprecated but still read by kustomize
	}
	add("crds", k.Crds...)
	add("configurations", k.Configurations...)
	for _, r := range k.Replacements {
		add("replacements.path", r.Path)
	}
	add("openapi.path", k.OpenAPI["path"])
	return out
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

// remoteValue finds a value kustomize would fetch: a one-line value (not
// an inline patch or document, which span lines) that is a remote
// reference, alone or after `key=` (generator files), whatever spaces it
// holds.
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
		// One line is one reference, spaces and all: kustomize's loader
		// fetches "http://host/p b.json" (url.Parse takes the space). Only
		// a value of several lines is an inline document or patch.
		tok := strings.TrimSpace(v)
		if tok == "" || strings.Contains(tok, "\n") {
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
// does not make it local), and takes as one (its internal/git repospec,
// which no caller can import): a URL with a scheme (https://, ssh://,
// file://, after go-getter's git:: prefix), a github.com path without a
// scheme, or anything that starts with a user name and @ — user@host:path,
// and user@host/org/repo too, which it clones over SSH. Any other scheme
// counts as remote as well: whatever kustomize does with it, it is not a
// file of the repository.
func remoteRef(ref string) bool {
	r := strings.ToLower(strings.TrimSpace(ref))
	r = strings.TrimPrefix(r, "git::")
	if strings.Contains(r, "://") || strings.HasPrefix(r, "github.com/") || strings.HasPrefix(r, "github.com:") {
		return true
	}
	return gitUser.MatchString(r)
}

// gitUser is how kustomize recognises a git URL's user name: a letter,
// then letters, digits and '-', then @.
var gitUser = regexp.MustCompile(`^[a-z][a-z0-9-]*@`)

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
