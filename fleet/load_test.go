package fleet_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/fleet"
)

// TestLoadStaysInsideTheRepository checks that neither the fleet path nor a
// symlink can make the loader read outside the repository.
func TestLoadStaysInsideTheRepository(t *testing.T) {
	outside := writeFleet(t, `bundles: secret: {resources: []}`)

	t.Run("path with ..", func(t *testing.T) {
		repo := writeFleet(t, `bundles: b: {resources: []}`)
		_, err := fleet.Load(repo, fleet.LoadOptions{Path: "../" + filepath.Base(outside)})
		if !errors.Is(err, fleet.ErrInvalid) || !strings.Contains(err.Error(), "inside the repository") {
			t.Errorf("error %v, want a refusal", err)
		}
	})
	t.Run("absolute path", func(t *testing.T) {
		repo := writeFleet(t, `bundles: b: {resources: []}`)
		if _, err := fleet.Load(repo, fleet.LoadOptions{Path: outside}); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("error %v, want a refusal", err)
		}
	})
	t.Run("symlinked fleet folder", func(t *testing.T) {
		repo := t.TempDir()
		if err := os.Symlink(outside, filepath.Join(repo, "fleet")); err != nil {
			t.Fatal(err)
		}
		f, err := fleet.Load(repo, fleet.LoadOptions{Path: "fleet"})
		if err == nil {
			t.Fatalf("loaded a fleet through a symlink leaving the repository: bundles %v", f.Bundles())
		}
	})
	t.Run("symlinked CUE file", func(t *testing.T) {
		repo := writeFleet(t, `bundles: b: {resources: []}`)
		if err := os.Symlink(filepath.Join(outside, "fleet.cue"), filepath.Join(repo, "other.cue")); err != nil {
			t.Fatal(err)
		}
		f, err := fleet.Load(repo, fleet.LoadOptions{})
		if err == nil && strings.Contains(strings.Join(f.Bundles(), ","), "secret") {
			t.Fatal("a symlinked file outside the repository was read")
		}
		if err == nil {
			t.Fatal("load succeeded; want an error naming the escaping file")
		}
	})
}

// TestLoadWithCUEModule checks that a fleet repository that is a CUE module
// can import its own packages, and that a registry dependency is refused
// with an explanation rather than fetched.
func TestLoadWithCUEModule(t *testing.T) {
	module := "module: \"example.com/fleet@v0\"\nlanguage: version: \"v0.12.0\"\n"
	repo := writeFleet(t, `import "example.com/fleet/lib"

bundles: a: {resources: [], values: {replicas: lib.#Replicas & 2, region: lib.home}}`,
		"cue.mod/module.cue", module,
		"lib/lib.cue", "package lib\n\n#Replicas: int & >=1\nhome: \"eu-west-1\"\n")
	b := mustPlan(t, mustLoad(t, repo), euProd).Bundle("a")
	if b.Failed() || string(b.Values) != `{"region":"eu-west-1","replicas":2}` {
		t.Errorf("bundle a: values %s, errors %v", b.Values, b.Errors)
	}

	remote := writeFleet(t, `import "example.com/remote/x"

bundles: a: {resources: [], values: v: x.v}`,
		"cue.mod/module.cue", module+"deps: \"example.com/remote@v0\": v: \"v0.1.0\"\n")
	_, err := fleet.Load(remote, fleet.LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), "never fetches CUE modules") || !strings.Contains(err.Error(), "fleet.cue:3:") {
		t.Errorf("error %v, want a positioned refusal to fetch", err)
	}
}

// TestLoadNamesMissingFleet checks the error for a folder with no fleet.
func TestLoadNamesMissingFleet(t *testing.T) {
	_, err := fleet.Load(t.TempDir(), fleet.LoadOptions{})
	if !errors.Is(err, fleet.ErrInvalid) || !strings.Contains(err.Error(), "expected fleet.cue") {
		t.Errorf("error %v, want one that asks for fleet.cue", err)
	}
}

// TestLoadSeveralFiles checks that a fleet may be split into files.
func TestLoadSeveralFiles(t *testing.T) {
	repo := writeFleet(t, `bundles: a: {resources: []}`,
		"teams.cue", "package fleet\n\nbundles: b: {resources: [], dependsOn: [\"a\"]}\n",
		"notes.cue", "package other\n\nbundles: c: {}\n")
	if got := strings.Join(mustLoad(t, repo).Bundles(), ","); got != "a,b" {
		t.Errorf("bundles %s, want a,b (package other ignored)", got)
	}
}

// TestLoadRefusesInvalidUTF8: a byte that is not UTF-8 is an error at its
// line and column, not silently replaced (the value would differ from the
// file), in the fleet's files and in files it imports.
func TestLoadRefusesInvalidUTF8(t *testing.T) {
	dir := writeFleet(t, "bundles: web: {resources: [], values: x: \"a\xffb\"}")
	_, err := fleet.Load(dir, fleet.LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), "fleet.cue: line 3, column 44: invalid UTF-8 (byte 0xff)") {
		t.Fatalf("got %v", err)
	}
	dir = writeFleet(t, "bundles: web: {resources: []}", "extra.cue", "package fleet\n// \xc3\x28\n")
	if _, err := fleet.Load(dir, fleet.LoadOptions{}); err == nil || !strings.Contains(err.Error(), "extra.cue: line 2, column 4: invalid UTF-8 (byte 0xc3)") {
		t.Fatalf("got %v", err)
	}
}
