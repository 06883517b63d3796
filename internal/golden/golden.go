// Package golden compares test output with golden files under testdata/,
// and rewrites them when UPDATE_GOLDEN is set (UPDATE_GOLDEN=1 go test
// ./...): the one switch for every golden file of the repository.
package golden

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Update reports whether golden files are being rewritten.
func Update() bool { return os.Getenv("UPDATE_GOLDEN") != "" }

// Check compares got with the file at path, or rewrites the file.
func Check(t testing.TB, path string, got []byte) {
	t.Helper()
	if Update() {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with UPDATE_GOLDEN=1 to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs from the output (-golden +got); review and run with UPDATE_GOLDEN=1 to accept:\n%s", path, diff)
	}
}
