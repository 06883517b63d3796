package main

import (
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
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

// TestDocsNameRealTests: the docs back each guarantee with a test by name
// (docs/security-model.md, docs/what-happens-when.md); every name they
// give is a test of the repository, so a renamed or removed test cannot
// leave a guarantee unbacked in silence.
func TestDocsNameRealTests(t *testing.T) {
	var sources strings.Builder
	err := filepath.WalkDir("../..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "bin" || d.Name() == ".git" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, "_test.go") {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sources.Write(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	named := regexp.MustCompile("`((?:Test|Fuzz)[A-Z][A-Za-z0-9_]*)`")
	found := 0
	for _, doc := range docs {
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range named.FindAllStringSubmatch(string(data), -1) {
			found++
			if !strings.Contains(sources.String(), "func "+m[1]+"(") {
				t.Errorf("%s names %s, which is no test of the repository", filepath.Base(doc), m[1])
			}
		}
	}
	if found < 20 {
		t.Errorf("only %d tests named in docs/: is the pattern still right?", found)
	}
}

// TestTheCommandLineIsUniform: the conventions of the kubectl family hold
// on every command — -o takes text, json and yaml wherever it exists; a
// command that talks to a cluster takes both --kubeconfig and --context;
// no flag's placeholder is a plural word lifted from its usage (pflag takes
// the first backquoted word: "--cluster clusters").
func TestTheCommandLineIsUniform(t *testing.T) {
	var walk func(c *cobra.Command)
	checked := 0
	walk = func(c *cobra.Command) {
		fs := c.Flags()
		if o := fs.Lookup("output"); o != nil {
			checked++
			for _, format := range []string{"text", "json", "yaml"} {
				if !regexp.MustCompile(`\b` + format + `\b`).MatchString(o.Usage) {
					t.Errorf("%s -o lacks %s: %s", c.CommandPath(), format, o.Usage)
				}
			}
		}
		if (fs.Lookup("kubeconfig") == nil) != (fs.Lookup("context") == nil) {
			t.Errorf("%s has one of --kubeconfig and --context without the other", c.CommandPath())
		}
		fs.VisitAll(func(f *pflag.Flag) {
			if name, _ := pflag.UnquoteUsage(f); name != "" && strings.ToLower(name) == name && !slices.Contains([]string{"string", "strings", "stringArray", "duration", "int", "uint", "float"}, name) {
				t.Errorf("%s --%s shows %q as its placeholder: backquote a NAME in its usage", c.CommandPath(), f.Name, name)
			}
		})
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(newRootCmd(io.Discard, io.Discard))
	if checked < 9 {
		t.Errorf("only %d commands with -o found", checked)
	}
}
