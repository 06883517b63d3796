package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestREADMELayoutNamesEveryPackage keeps the README's layout table whole:
// a newcomer finds every package of the module in it, one hop from the
// README.
func TestREADMELayoutNamesEveryPackage(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "## Repository layout")
	if !ok {
		t.Fatal("README.md has no Repository layout section")
	}
	table, _, _ = strings.Cut(table, "\n## ")
	list := exec.Command("go", "list", "./...")
	list.Dir = "../.."
	out, err := list.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const module = "github.com/flotilla-gitops/flotilla/"
	for _, pkg := range strings.Fields(string(out)) {
		rel := strings.TrimPrefix(pkg, module)
		if !strings.Contains(table, rel+"/`") && !strings.Contains(table, rel+"`") {
			t.Errorf("README.md's layout table does not name %s", rel)
		}
	}
}
