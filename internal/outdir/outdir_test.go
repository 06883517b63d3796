package outdir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenRefusesLinks: an output folder that is a link, or under one
// (a relative path's every part; an absolute path's last), is refused and
// nothing is created where it points; a real folder is made and opened.
func TestOpenRefusesLinks(t *testing.T) {
	outside := t.TempDir()
	t.Chdir(t.TempDir())
	if err := os.Symlink(outside, "rendered"); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs("rendered")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"rendered", "rendered/", "rendered/sub/deeper", abs} {
		if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "is a symbolic link") {
			t.Errorf("%s: %v", dir, err)
		}
	}
	if list, _ := os.ReadDir(outside); len(list) != 0 {
		t.Errorf("%d entries made in the linked folder", len(list))
	}
	root, err := Open("out/a")
	if err != nil {
		t.Fatal(err)
	}
	root.Close()
	if st, err := os.Lstat("out/a"); err != nil || !st.IsDir() {
		t.Errorf("out/a: %v, %v", st, err)
	}
}
