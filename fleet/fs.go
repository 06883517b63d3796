package fleet

import (
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"testing/fstest"
	"unicode/utf8"
)

// overlayFS shows extra in-memory files on top of a base file system. The
// loader reads the fleet repository through it so that the embedded schemas
// join the fleet's package without being written into the checkout.
//
// The base is an os.Root file system, which refuses `..` and symlinks that
// lead outside the repository: CUE files and imports cannot escape it.
type overlayFS struct {
	base  fs.FS
	extra fstest.MapFS
}

var (
	_ fs.ReadDirFS = overlayFS{}
	_ fs.StatFS    = overlayFS{}
)

func (o overlayFS) Open(name string) (fs.File, error) {
	if _, ok := o.extra[name]; ok {
		return o.extra.Open(name)
	}
	if strings.HasSuffix(name, ".cue") {
		return openCUE(o.base, name)
	}
	return o.base.Open(name)
}

// openCUE reads a CUE file whole and refuses it unless it is valid UTF-8:
// CUE's loader would replace a bad byte with U+FFFD and carry on, so a
// value would silently differ from what the file says.
func openCUE(base fs.FS, name string) (fs.File, error) {
	data, err := fs.ReadFile(base, name)
	if err != nil {
		return nil, err
	}
	if !utf8.Valid(data) {
		line, col, offset := 1, 1, 0
		for offset < len(data) {
			r, size := utf8.DecodeRune(data[offset:])
			if r == utf8.RuneError && size <= 1 {
				break
			}
			if r == '\n' {
				line, col = line+1, 0
			}
			col++
			offset += size
		}
		return nil, &fs.PathError{Op: "read", Path: name, Err: fmt.Errorf(
			"line %d, column %d: invalid UTF-8 (byte 0x%02x): CUE files must be UTF-8", line, col, data[offset])}
	}
	info, err := fs.Stat(base, name)
	if err != nil {
		return nil, err
	}
	return fstest.MapFS{name: {Data: data, Mode: info.Mode(), ModTime: info.ModTime()}}.Open(name)
}

func (o overlayFS) Stat(name string) (fs.FileInfo, error) {
	if _, ok := o.extra[name]; ok {
		return o.extra.Stat(name)
	}
	return fs.Stat(o.base, name)
}

// ReadDir lists the base folder with the extra files of that folder merged
// in (an extra file replaces a base file of the same name).
func (o overlayFS) ReadDir(name string) ([]fs.DirEntry, error) {
	entries, err := fs.ReadDir(o.base, name)
	if err != nil {
		return nil, err
	}
	for file := range o.extra {
		if path.Dir(file) != name {
			continue
		}
		extra, err := o.extra.Stat(file)
		if err != nil {
			return nil, err
		}
		entries = slices.DeleteFunc(entries, func(e fs.DirEntry) bool { return e.Name() == extra.Name() })
		entries = append(entries, fs.FileInfoToDirEntry(extra))
	}
	slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return entries, nil
}
