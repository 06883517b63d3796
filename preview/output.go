package preview

import (
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"sigs.k8s.io/yaml"
)

// MaxMarkdown bounds the Markdown output: a pull-request comment (GitHub
// takes 65,536 characters; GitLab more).
const MaxMarkdown = 60000

// bundleClusters maps each bundle that changes to the clusters it changes
// in, and its kinds of change.
func (r *Report) bundleClusters() map[string][]string {
	out := map[string][]string{}
	for _, c := range r.Clusters {
		for _, b := range c.Bundles {
			if b.Change != Unchanged {
				out[b.Name] = append(out[b.Name], c.Name+" ("+b.Change.String()+")")
			}
		}
	}
	return out
}

// summaryLine says how much changes.
func (r *Report) summaryLine() string {
	s := fmt.Sprintf("%d of %s %s", r.ChangedClusters(), english.Count(len(r.Clusters), "cluster"), verb(r.ChangedClusters(), "changes", "change"))
	if f := r.NewFailures(); len(f) > 0 {
		s += fmt.Sprintf("; %d newly %s", len(f), verb(len(f), "fails", "fail"))
	}
	return s
}

// verb is the verb agreeing with n things.
func verb(n int, one, more string) string {
	if n == 1 {
		return one
	}
	return more
}

func (r *Report) revisions() string {
	head := "the work tree"
	if r.Head != "" {
		head = gitrev.Short(r.Head)
	}
	return fmt.Sprintf("%s → %s", gitrev.Short(r.Base), head)
}

// WriteText writes the preview for a terminal: the summary, per bundle
// the clusters it changes in, then per changed cluster its changes and
// the field-level diffs.
func (r *Report) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "preview %s: %s\n", r.revisions(), r.summaryLine())
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	byBundle := r.bundleClusters()
	if len(byBundle) > 0 {
		fmt.Fprintln(w, "\nbundles:")
		for _, b := range slices.Sorted(maps.Keys(byBundle)) {
			fmt.Fprintf(w, "  %s: %s\n", b, strings.Join(byBundle[b], ", "))
		}
	}
	for _, c := range r.Clusters {
		if !c.Changed {
			continue
		}
		fmt.Fprintf(w, "\ncluster %s\n", errtext.Clean(c.Name))
		if c.Wave != nil {
			fmt.Fprintf(w, "  moves from wave %s to wave %s\n", dash(c.Wave.From), dash(c.Wave.To))
		}
		if c.Error != "" {
			fmt.Fprintf(w, "  the fleet does not evaluate for it%s:\n%s\n", newly(c.NewError), indent(c.Error, "    "))
		}
		for _, v := range c.Violations {
			fmt.Fprintf(w, "  breaks a policy (newly):\n%s\n", indent(v, "    "))
		}
		for _, b := range c.Bundles {
			if b.Change == Unchanged {
				continue
			}
			fmt.Fprintf(w, "  bundle %s: %s%s\n", errtext.Clean(b.Name), b.Change, newly(b.NewError))
			if b.Error != "" {
				fmt.Fprintf(w, "%s\n", indent(b.Error, "    "))
			}
			for _, o := range b.Objects {
				fmt.Fprintf(w, "    %s %s\n", sign(o.Change), o.Object)
				for _, f := range o.Fields {
					fmt.Fprintf(w, "%s", fieldText(f, "      "))
				}
			}
		}
	}
	return nil
}

func newly(b bool) string {
	if b {
		return " (newly)"
	}
	return ""
}

func sign(change Change) string {
	switch change {
	case Added:
		return "+"
	case Removed:
		return "-"
	}
	return "~"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// fieldText is one changed field as diff lines.
func fieldText(f Field, prefix string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s@@ %s %s @@\n", prefix, f.Op, f.Path)
	if f.Old != nil {
		b.WriteString(indent(yamlValue(f.Old), prefix+"-"))
		b.WriteString("\n")
	}
	if f.New != nil {
		b.WriteString(indent(yamlValue(f.New), prefix+"+"))
		b.WriteString("\n")
	}
	return b.String()
}

func yamlValue(v any) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSuffix(string(data), "\n")
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}

// WriteMarkdown writes the preview as a pull-request comment: a summary
// table first (per bundle, the clusters it changes in), then each changed
// cluster's details in a collapsible section, kept under MaxMarkdown
// characters: clusters whose details do not fit are listed, and a note
// says what was left out.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var head strings.Builder
	fmt.Fprintf(&head, "### Flotilla preview %s\n\n**%s.**\n\n", r.revisions(), r.summaryLine())
	if f := r.NewFailures(); len(f) > 0 {
		fmt.Fprintf(&head, ":x: Newly failing: %s\n\n", mdEscape(joinNames(f, 20)))
	}
	byBundle := r.bundleClusters()
	if len(byBundle) > 0 {
		head.WriteString("| bundle | clusters |\n|---|---|\n")
		for _, b := range slices.Sorted(maps.Keys(byBundle)) {
			fmt.Fprintf(&head, "| %s | %s |\n", mdCode(b), mdEscape(joinNames(byBundle[b], 30)))
		}
		head.WriteString("\n")
	}
	var moves []string
	for _, c := range r.Clusters {
		if c.Wave != nil {
			moves = append(moves, fmt.Sprintf("%s (%s → %s)", c.Name, dash(c.Wave.From), dash(c.Wave.To)))
		}
	}
	if len(moves) > 0 {
		fmt.Fprintf(&head, "Rollout wave moves: %s\n\n", mdEscape(joinNames(moves, 30)))
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(&head, "> warning: %s\n\n", mdEscape(warn))
	}

	// Details, as many as fit; the rest listed by name.
	const room = 1000 // kept for the note of what was left out
	out := head.String()
	var left []string
	for _, c := range r.Clusters {
		if !c.Changed {
			continue
		}
		d := clusterMarkdown(c)
		if len(left) == 0 && len(out)+len(d) <= MaxMarkdown-room {
			out += d
			continue
		}
		left = append(left, c.Name)
	}
	if len(left) > 0 {
		note := fmt.Sprintf("\n_The details of %s are left out to keep this comment under %d characters: %s. Run `flotilla preview` locally, or with `-o json`, for all of it._\n",
			english.Count(len(left), "cluster"), MaxMarkdown, mdEscape(joinNames(left, 20)))
		out += note
	}
	_, err := io.WriteString(w, out)
	return err
}

// clusterMarkdown is one changed cluster's collapsible section.
func clusterMarkdown(c Cluster) string {
	var b strings.Builder
	var changes []string
	for _, bd := range c.Bundles {
		if bd.Change != Unchanged {
			changes = append(changes, bd.Name+" "+bd.Change.String())
		}
	}
	if c.Wave != nil {
		changes = append(changes, "wave "+dash(c.Wave.From)+" → "+dash(c.Wave.To))
	}
	if c.Error != "" {
		changes = append(changes, "does not evaluate")
	}
	if len(c.Violations) > 0 {
		changes = append(changes, "breaks "+english.Count(len(c.Violations), "policy"))
	}
	fmt.Fprintf(&b, "<details><summary><b>%s</b>: %s</summary>\n\n", mdEscape(c.Name), mdEscape(strings.Join(changes, ", ")))
	var text strings.Builder
	if c.Error != "" {
		fmt.Fprintf(&text, "the fleet does not evaluate for it%s:\n%s\n", newly(c.NewError), indent(c.Error, "  "))
	}
	for _, v := range c.Violations {
		fmt.Fprintf(&text, "breaks a policy (newly):\n%s\n", indent(v, "  "))
	}
	for _, bd := range c.Bundles {
		if bd.Change == Unchanged {
			continue
		}
		fmt.Fprintf(&text, "bundle %s: %s%s\n", bd.Name, bd.Change, newly(bd.NewError))
		if bd.Error != "" {
			fmt.Fprintf(&text, "%s\n", indent(bd.Error, "  "))
		}
		for _, o := range bd.Objects {
			fmt.Fprintf(&text, "%s %s\n", sign(o.Change), o.Object)
			for _, f := range o.Fields {
				text.WriteString(fieldText(f, "  "))
			}
		}
	}
	// A fence longer than any backtick run inside keeps the block closed.
	fence := "```"
	for strings.Contains(text.String(), fence) {
		fence += "`"
	}
	fmt.Fprintf(&b, "%sdiff\n%s%s\n\n</details>\n\n", fence, text.String(), fence)
	return b.String()
}

// mdCode shows a name as code: in backticks when it is a plain name (a
// fleet's own), escaped as text when it is not (a bundle key the schema
// refuses, with backticks, pipes or HTML in it, is the fleet's to choose).
func mdCode(s string) string {
	if plainName.MatchString(s) {
		return "`" + s + "`"
	}
	return mdEscape(s)
}

// plainName is a name as the fleet's schema allows it.
var plainName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// mdEscape keeps names and messages from being read as Markdown or HTML.
func mdEscape(s string) string {
	r := strings.NewReplacer("|", `\|`, "&", "&amp;", "<", "&lt;", ">", "&gt;", "*", `\*`, "_", `\_`, "`", "\\`", "[", `\[`, "]", `\]`,
		"\n", " ", "\r", " ")
	return r.Replace(s)
}
