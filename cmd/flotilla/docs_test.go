package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// docCommand is a flotilla command shown to users: in README.md, in docs/,
// or in a command's --help examples.
type docCommand struct {
	where   string // file:line, or "flotilla X --help"
	line    string // the command, from "flotilla"
	comment string // what the text beside it says (a trailing # comment)
	// prose: inline in a sentence, where a bare `flotilla render` names the
	// command rather than running it.
	prose bool
}

// TestDocumentedCommandsRun: every flotilla command shown in README.md,
// docs/ and the commands' --help examples is checked against the real
// command tree — its command exists, every flag it uses exists, and the
// files and folders it names are in the repository — and every one that
// needs no cluster, no remote and no agents' reports runs, in a copy of
// the checkout (the demo fleet, examples/, a Git history with an origin),
// and exits as the text says (0; preview 0 or 1, as diff(1)), with the
// output the text beside it shows ("# ok: …"). A removed folder, a
// renamed flag or a fleet that no longer evaluates fails here. Those that
// cannot run here (counted by why, in the log) are validated all the same,
// and run in the tests of what they need: a cluster (TestApplyAndDiff,
// TestAgentOnce), agents' reports (TestStatusCommand,
// TestRolloutStatusAndApprove), a server (TestPluginGenerator,
// TestStatusServe).
func TestDocumentedCommandsRun(t *testing.T) {
	checkout, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmds := documentedCommands(t, checkout)
	if len(cmds) < 60 {
		t.Fatalf("only %d documented commands found", len(cmds))
	}
	work := copyCheckout(t, checkout)
	subst := substitutions(t, work)
	ran, skipped := 0, map[string]int{}
	for _, dc := range cmds {
		args, concrete := words(dc.line, subst)
		c, err := validate(args)
		if err != nil {
			t.Errorf("%s: %s: %v", dc.where, dc.line, err)
			continue
		}
		if !concrete || dc.prose && !slices.ContainsFunc(args, func(w string) bool { return strings.HasPrefix(w, "-") }) {
			skipped["a synopsis, or a command named in prose"]++
			continue
		}
		if why := cannotRunHere(c, args); why != "" {
			skipped[why]++
			continue
		}
		ran++
		runDocumented(t, work, dc, args)
	}
	t.Logf("%d documented commands ran; not run here: %v", ran, skipped)
	if ran < 30 {
		t.Errorf("only %d documented commands ran", ran)
	}
}

// documentedCommands collects the commands of README.md, docs/*.md and
// every command's --help examples.
func documentedCommands(t *testing.T, checkout string) []docCommand {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(checkout, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	var out []docCommand
	for _, f := range append([]string{filepath.Join(checkout, "README.md")}, files...) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(checkout, f)
		out = append(out, commandsOfMarkdown(rel, string(data))...)
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, line := range strings.Split(c.Example, "\n") {
			if dc, ok := commandOf(line); ok {
				dc.where = c.CommandPath() + " --help"
				out = append(out, dc)
			}
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(newRootCmd(io.Discard, io.Discard))
	return out
}

var (
	fence       = regexp.MustCompile("^\\s*```")
	inlineCode  = regexp.MustCompile("`((?:bin/)?flotilla [^`]+)`")
	commandLine = regexp.MustCompile(`^(?:\$ |- |run: )?((?:bin/)?flotilla(?: .*)?)$`)
)

// commandsOfMarkdown finds the commands of a Markdown file: lines of its
// code blocks (shell, and CI YAML's `run:` steps), with \ continuations
// joined, and inline code in its prose.
func commandsOfMarkdown(name, text string) []docCommand {
	var out []docCommand
	in, pending, pendingAt := false, "", 0
	for i, line := range strings.Split(text, "\n") {
		if fence.MatchString(line) {
			in = !in
			continue
		}
		if !in {
			for _, m := range inlineCode.FindAllStringSubmatch(line, -1) {
				if dc, ok := commandOf(m[1]); ok {
					dc.where, dc.prose = fmt.Sprintf("%s:%d", name, i+1), true
					out = append(out, dc)
				}
			}
			continue
		}
		line = strings.TrimSpace(line)
		if pending != "" {
			line, pending = pending+" "+line, ""
		} else {
			pendingAt = i + 1
		}
		if rest, ok := strings.CutSuffix(line, "\\"); ok {
			pending = strings.TrimSpace(rest)
			continue
		}
		if dc, ok := commandOf(line); ok {
			dc.where = fmt.Sprintf("%s:%d", name, pendingAt)
			out = append(out, dc)
		}
	}
	return out
}

// commandOf reads one line as a flotilla command: without "bin/", a
// trailing comment, a pipe into another program, or an output
// redirection.
func commandOf(line string) (docCommand, bool) {
	m := commandLine.FindStringSubmatch(strings.TrimSpace(line))
	if m == nil {
		return docCommand{}, false
	}
	cmd := strings.TrimPrefix(m[1], "bin/")
	dc := docCommand{}
	if before, comment, ok := strings.Cut(cmd, " # "); ok {
		cmd, dc.comment = before, strings.TrimSpace(comment)
	}
	for _, sep := range []string{" | ", " > ", "; code=", " || ", " && "} {
		if before, _, ok := strings.Cut(cmd, sep); ok {
			cmd = before
		}
	}
	dc.line = strings.TrimSpace(cmd)
	return dc, dc.line != "flotilla"
}

// placeholder is a word of a synopsis, not a value: DIR, NAME, [--push],
// bash|zsh, <cluster>, ….
var placeholder = regexp.MustCompile(`^[A-Z][A-Z_]*$|[\[\]()|<>…]|^\.\.\.$|^/$`)

// words splits a command line as a shell would (quotes, $(…) substituted
// from subst, in order), and says whether it is concrete: no
// placeholders, every variable known.
func words(line string, subst [][2]string) ([]string, bool) {
	for _, kv := range subst {
		line = strings.ReplaceAll(line, kv[0], kv[1])
	}
	var out []string
	concrete := true
	var cur strings.Builder
	quote := rune(0)
	flush := func() {
		if cur.Len() > 0 {
			w := cur.String()
			if placeholder.MatchString(w) && w != "HEAD" || strings.Contains(w, "$") {
				concrete = false
			}
			out = append(out, w)
			cur.Reset()
		}
	}
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote = r
		case r == ' ' || r == '\t':
			flush()
		default:
			cur.WriteRune(r)
		}
	}
	flush()
	return out[1:], concrete
}

// validate finds the command and checks every flag of the line against
// it (a synopsis's flags too).
func validate(args []string) (*cobra.Command, error) {
	root := newRootCmd(io.Discard, io.Discard)
	root.InitDefaultCompletionCmd() // (cobra adds it when it executes)
	c, rest, err := root.Find(args)
	if err != nil {
		return nil, err
	}
	if c == root && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		return nil, fmt.Errorf("no command %q", rest[0])
	}
	for _, w := range rest {
		w = strings.Trim(w, "[]()")
		if !strings.HasPrefix(w, "-") || w == "-" {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(w, "-"), "=")
		var f *pflag.Flag
		if strings.HasPrefix(w, "--") {
			f = c.Flags().Lookup(name)
		} else {
			f = c.Flags().ShorthandLookup(name[:1])
		}
		if f == nil && !slices.Contains([]string{"help", "h", "version"}, name) {
			return nil, fmt.Errorf("%s has no flag %s", c.CommandPath(), w)
		}
	}
	return c, nil
}

// cannotRunHere says why a documented command does not run in this test
// (it needs a cluster, a remote or agents' reports, or serves forever),
// or "".
func cannotRunHere(c *cobra.Command, args []string) string {
	line := strings.Join(args, " ")
	switch path := c.CommandPath(); {
	case path == "flotilla bootstrap" && strings.Contains(line, "--dry-run") && !strings.Contains(line, "--context"):
		return "" // prints the install; reads files, asks no cluster and no remote
	case slices.Contains([]string{"flotilla agent", "flotilla apply", "flotilla diff"}, path),
		strings.Contains(line, "--kubeconfig"), strings.Contains(line, "--context"):
		return "needs a cluster"
	case path == "flotilla generator serve", path == "flotilla status serve":
		return "serves until stopped"
	case strings.Contains(line, "://"), strings.Contains(line, "git.example.com"):
		return "needs a remote"
	case strings.Contains(line, "--branch-per-wave"):
		// The checkout's fleet has no waves; TestPromoterReadsABranchPerWave
		// runs the same command on a fleet that has.
		return "needs rollout waves"
	case path == "flotilla rollout approve", path == "flotilla status" && (strings.Contains(line, "--cluster") || strings.Contains(line, "--wait") || strings.Contains(line, "--repo")):
		return "needs agents' reports"
	case strings.HasPrefix(path, "flotilla rollout "):
		// TestRolloutControls, TestRolloutRevert and TestRolloutExplain run
		// them against a status repository and a fleet history.
		return "needs agents' reports and the fleet's history"
	}
	return ""
}

// runDocumented runs a documented command in the copy of the checkout and
// checks what the docs say of it.
func runDocumented(t *testing.T, work string, dc docCommand, args []string) {
	t.Helper()
	t.Chdir(work)
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, &stdout, &stderr)
	want := []int{exitOK}
	if len(args) > 0 && args[0] == "preview" {
		want = append(want, exitPreviewChanges) // as diff(1): 1 says something changes
	}
	if !slices.Contains(want, code) {
		t.Errorf("%s: %s: exit %d\n%s%s", dc.where, dc.line, code, stdout.String(), lastLines(stderr.String(), 10))
		return
	}
	if strings.HasPrefix(dc.comment, "ok: ") && !strings.Contains(stdout.String(), dc.comment) {
		t.Errorf("%s: %s: the docs say %q; it printed\n%s", dc.where, dc.line, dc.comment, stdout.String())
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// copyCheckout copies the checkout's files (what Git tracks or would: no
// build output) into a new repository with one commit, whose origin (a
// bare clone) has main: the docs' `--base origin/main` and `--push` work
// there, and nothing they write reaches the checkout.
func copyCheckout(t *testing.T, checkout string) string {
	t.Helper()
	list, err := exec.Command("git", "-C", checkout, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	work := filepath.Join(t.TempDir(), "fleet")
	for _, rel := range strings.Split(strings.TrimRight(string(list), "\x00"), "\x00") {
		src := filepath.Join(checkout, rel)
		st, err := os.Lstat(src)
		if err != nil || !st.Mode().IsRegular() {
			continue // deleted in the work tree, or a link
		}
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		writeTestFile(t, filepath.Join(work, rel), string(data))
	}
	git := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git(work, "init", "-q", "-b", "main")
	git(work, "add", "-A")
	git(work, "commit", "-qm", "the checkout")
	origin := filepath.Join(filepath.Dir(work), "origin.git")
	git(work, "clone", "-q", "--bare", work, origin)
	git(work, "remote", "add", "origin", origin)
	git(work, "fetch", "-q", "origin")
	git(work, "config", "user.name", "Docs Test")
	git(work, "config", "user.email", "docs@example.com")
	return work
}

// substitutions are the values of the docs' variables and paths outside
// the repository: the HEAD hash, a folder for /tmp, an age key.
func substitutions(t *testing.T, work string) [][2]string {
	t.Helper()
	head, err := exec.Command("git", "-C", work, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "prod.agekey")
	writeTestFile(t, key, id.String()+"\n")
	return [][2]string{
		{"/tmp/", t.TempDir() + "/"}, // first: the values below are in /tmp too
		{"$(git rev-parse HEAD)", strings.TrimSpace(string(head))},
		{"~/.config/flotilla/prod.agekey", key},
		{`"origin/${{ github.base_ref }}"`, "origin/main"},
		{`"origin/$CI_MERGE_REQUEST_TARGET_BRANCH_NAME"`, "origin/main"},
	}
}
