package companion

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/flotilla-gitops/flotilla/internal/outdir"
	"github.com/go-git/go-git/v5/plumbing"
)

// Result says what a writer did.
type Result struct {
	// Changed is false when the hydrated files are what the destination
	// held: no commit was made (the source commit is then recorded only
	// in a note on the branch's tip).
	Changed bool `json:"changed"`
	// Commit is the branch's tip after writing (new or unchanged); empty
	// for a folder.
	Commit string `json:"commit,omitempty"`
	// Files counts the hydrated files; Added, Updated and Removed what
	// changed among them.
	Files   int `json:"files"`
	Added   int `json:"added"`
	Updated int `json:"updated"`
	Removed int `json:"removed"`
	// Pushed says the branch and its notes were pushed.
	Pushed bool `json:"pushed,omitempty"`
}

// previous is what a destination held: the blob hash of each file by
// slash-separated path, and a way to read one.
type previous struct {
	hashes map[string]plumbing.Hash
	read   func(string) ([]byte, error)
}

func blobHash(data []byte) plumbing.Hash {
	return plumbing.ComputeHash(plumbing.BlobObject, data)
}

// assemble decides the destination's new content: the hydrated files, what
// the failed bundles and clusters had before, and the hydrator.metadata
// files. A folder's metadata names the source commit that last changed
// the folder: it is rewritten only when something in the folder changed,
// so that an unchanged bundle keeps pointing at the commit that made it.
// The root's is rewritten when anything changed. It returns the files
// and whether they differ from old.
func assemble(out *Output, old *previous) (map[string][]byte, bool, error) {
	final := make(map[string][]byte, len(out.Files)+len(out.Dirs)+1)
	for p, data := range out.Files {
		final[p] = data
	}
	for _, l := range out.listings {
		for p, data := range l.files(func(p string) bool { _, ok := old.hashes[p]; return ok }) {
			final[p] = data
		}
	}
	kept := map[string]bool{}
	for p := range old.hashes {
		if slices.ContainsFunc(out.Keep, func(k string) bool { return under(p, k) }) {
			data, err := old.read(p)
			if err != nil {
				return nil, false, fmt.Errorf("keeping %s as it was: %w", p, err)
			}
			final[p] = data
			kept[path.Dir(p)] = true
		}
	}
	newMeta, err := jsonIndent(out.Metadata)
	if err != nil {
		return nil, false, err
	}
	hashes := make(map[string]plumbing.Hash, len(final))
	for p, data := range final {
		hashes[p] = blobHash(data)
	}
	before, after := folderDigests(old.hashes, out.Dirs), folderDigests(hashes, out.Dirs)
	for _, d := range out.Dirs {
		mp := d + "/" + MetadataFile
		h, had := old.hashes[mp]
		if had && before[d] == after[d] {
			data, err := old.read(mp)
			if err != nil {
				return nil, false, fmt.Errorf("reading %s: %w", mp, err)
			}
			final[mp], hashes[mp] = data, h
			continue
		}
		final[mp], hashes[mp] = newMeta, blobHash(newMeta)
	}
	changed := len(hashes) != len(withoutRootMetadata(old.hashes))
	for p, h := range hashes {
		if old.hashes[p] != h {
			changed = true
			break
		}
	}
	if !changed {
		if _, ok := old.hashes[MetadataFile]; ok {
			data, err := old.read(MetadataFile)
			if err != nil {
				return nil, false, err
			}
			final[MetadataFile] = data
			return final, false, nil
		}
	}
	final[MetadataFile] = newMeta
	return final, true, nil
}

func withoutRootMetadata(m map[string]plumbing.Hash) map[string]plumbing.Hash {
	if _, ok := m[MetadataFile]; !ok {
		return m
	}
	out := make(map[string]plumbing.Hash, len(m))
	for p, h := range m {
		if p != MetadataFile {
			out[p] = h
		}
	}
	return out
}

// folderDigests identifies the content of each folder of dirs: its files
// (but metadata files) and their hashes, whatever their depth.
func folderDigests(hashes map[string]plumbing.Hash, dirs []string) map[string]string {
	want := make(map[string]bool, len(dirs))
	for _, d := range dirs {
		want[d] = true
	}
	lines := map[string][]string{}
	for p, h := range hashes {
		if path.Base(p) == MetadataFile {
			continue
		}
		for _, d := range parentDirs(p) {
			if want[d] {
				lines[d] = append(lines[d], strings.TrimPrefix(p, d+"/")+" "+h.String())
			}
		}
	}
	out := make(map[string]string, len(lines))
	for d, l := range lines {
		sort.Strings(l)
		out[d] = strings.Join(l, "\n")
	}
	return out
}

// diffCounts counts the files added, updated and removed.
func diffCounts(old map[string]plumbing.Hash, final map[string][]byte) (added, updated, removed int) {
	for p, data := range final {
		h, ok := old[p]
		switch {
		case !ok:
			added++
		case h != blobHash(data):
			updated++
		}
	}
	for p := range old {
		if _, ok := final[p]; !ok {
			removed++
		}
	}
	return added, updated, removed
}

// WriteFolder writes the hydrated fleet into dir: clusters/ and the root
// hydrator.metadata, through the folder's root (a link inside never leads
// a write outside it; links in the way are replaced, not followed).
// Files of clusters and bundles that are gone are removed; other files of
// the folder are left alone.
func WriteFolder(out *Output, dir string) (*Result, error) {
	root, err := outdir.Open(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	old := &previous{hashes: map[string]plumbing.Hash{}, read: root.ReadFile}
	if data, err := root.ReadFile(MetadataFile); err == nil {
		old.hashes[MetadataFile] = blobHash(data)
	}
	err = fs.WalkDir(root.FS(), ClustersDir, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == ClustersDir {
			return fs.SkipAll
		}
		if err != nil {
			return err
		}
		switch {
		case d.Type().IsRegular():
			data, err := root.ReadFile(p)
			if err != nil {
				return err
			}
			old.hashes[p] = blobHash(data)
		case !d.IsDir():
			// A link or device: never read, always replaced.
			old.hashes[p] = plumbing.ZeroHash
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	final, changed, err := assemble(out, old)
	if err != nil {
		return nil, err
	}
	res := &Result{Changed: changed, Files: len(final)}
	res.Added, res.Updated, res.Removed = diffCounts(old.hashes, final)
	for _, p := range slices.Sorted(maps.Keys(final)) {
		data := final[p]
		if h, ok := old.hashes[p]; ok && h == blobHash(data) {
			continue
		}
		if err := root.MkdirAll(path.Dir(p), 0o755); err != nil {
			return nil, fmt.Errorf("writing %s: %w", p, err)
		}
		if err := root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("writing %s: %w", p, err)
		}
		if err := root.WriteFile(p, data, 0o644); err != nil {
			return nil, fmt.Errorf("writing %s: %w", p, err)
		}
	}
	emptied := map[string]bool{}
	for p := range old.hashes {
		if _, ok := final[p]; ok {
			continue
		}
		if err := root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("removing %s: %w", p, err)
		}
		for _, d := range parentDirs(p) {
			emptied[d] = true
		}
	}
	// Folders left empty go, deepest first.
	ds := slices.Collect(maps.Keys(emptied))
	sort.Slice(ds, func(i, j int) bool { return strings.Count(ds[i], "/") > strings.Count(ds[j], "/") })
	for _, d := range ds {
		if entries, err := fs.ReadDir(root.FS(), d); err == nil && len(entries) == 0 {
			_ = root.Remove(d)
		}
	}
	return res, nil
}

// ReadMetadata decodes a hydrator.metadata file.
func ReadMetadata(data []byte) (Metadata, error) {
	var m Metadata
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("%s: %w", MetadataFile, err)
	}
	return m, nil
}
