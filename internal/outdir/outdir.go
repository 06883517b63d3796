// Package outdir opens a folder a command writes its output into (render
// --out, hydrate --out) without following a link to it: a fleet checkout
// is untrusted, and a committed symbolic link named like the output folder
// (`rendered -> ~/.ssh`) would have the output written, and files
// replaced, wherever it points. A leaf: standard library only.
package outdir

import (
	"fmt"
	"os"
	"path/filepath"
)

// Open creates dir if needed and opens it as a root, refusing a dir that
// is, or lies under, a symbolic link among the parts of the path as given
// (for a relative path, every part; for an absolute one, the last: system
// folders such as /tmp may well be links).
func Open(dir string) (*os.Root, error) {
	clean := filepath.Clean(dir)
	parts := []string{clean}
	if !filepath.IsAbs(clean) {
		parts = parts[:0]
		for p := clean; p != "." && p != string(filepath.Separator); p = filepath.Dir(p) {
			parts = append(parts, p)
		}
	}
	for _, p := range parts {
		if st, err := os.Lstat(p); err == nil && st.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			return nil, fmt.Errorf("output folder %s: %s is a symbolic link (to %s): give a real folder", dir, p, target)
		}
	}
	if err := os.MkdirAll(clean, 0o755); err != nil {
		return nil, err
	}
	return os.OpenRoot(clean)
}
