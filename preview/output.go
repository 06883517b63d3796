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
	if len(r.Invariants) > 0 {
		fmt.Fprintf(w, "\nthe change breaks %s:\n", english.Count(len(r.Invariants), "invariant"))
		for _, b := range r.Invariants {
			fmt.Fprintf(w, "%s\n", indent(errtext.Clean(b.Message), "  "))
		}
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
					fmt.Fprintf(w, "%s\n", indent(strings.Join(fieldLines(f), "\n"), "      "))
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

// mdEscape keeps names and messages from being read as Markdown or HTML:
// no emphasis, code, link, table cell or element, and no address a forge
// would turn into a link by itself (GFM's autolinks: "://", "www.").
func mdEscape(s string) string {
	r := strings.NewReplacer("|", `\|`, "&", "&amp;", "<", "&lt;", ">", "&gt;", "*", `\*`, "_", `\_`, "`", "\\`", "[", `\[`, "]", `\]`,
		"\n", " ", "\r", " ", "://", "&#58;//", "www.", "www&#46;", "WWW.", "WWW&#46;")
	return r.Replace(s)
}

// flat is a name on one line, for a diff's header lines.
func flat(s string) string {
	return strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
}
