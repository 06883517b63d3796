package preview

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// The pull-request comment (`flotilla preview -o markdown`), for a fleet
// of any size: a summary table first (clusters that change, do not, newly
// fail — for the whole fleet, per wave and per region); then the changes,
// clusters whose change is the same shown as one group (the change once,
// its clusters counted and listed on demand), groups with a new failure or
// a newly broken policy first. Every diff is in a ```diff block with its
// markers in the first column, so forges colour it. The comment stays
// under MaxMarkdown characters and still accounts for every changed
// cluster: what does not fit is cut from the end of the lists and diffs
// first, then whole groups are counted instead of shown, and a note says
// what was cut and how to see it.

// changeGroup is one distinct change — a bundle's change with its diff,
// a new evaluation error, a newly broken policy, a move between waves —
// and the clusters that have it (a cluster with two changes is in two
// groups).
type changeGroup struct {
	text     string // the change as diff lines, the cluster's name generalized
	summary  string // the change in a line of Markdown
	failing  bool   // a new failure or a newly broken policy
	clusters []Cluster
}

// change is one change of one cluster.
type change struct {
	summary, text string
	failing       bool
}

// groups folds the changed clusters' changes into groups of the same
// change: failing groups first, then the largest, then in the order met.
func (r *Report) groups() []*changeGroup {
	byText := map[string]*changeGroup{}
	var out []*changeGroup
	for _, c := range r.Clusters {
		if !c.Changed {
			continue
		}
		for _, ch := range clusterChanges(c) {
			text := report.Generalize(ch.text, c.Name)
			key := text + "\x00" + fmt.Sprint(ch.failing)
			g := byText[key]
			if g == nil {
				g = &changeGroup{text: text, summary: report.Generalize(ch.summary, mdEscape(c.Name)), failing: ch.failing}
				byText[key] = g
				out = append(out, g)
			}
			g.clusters = append(g.clusters, c)
		}
	}
	slices.SortStableFunc(out, func(a, b *changeGroup) int {
		if a.failing != b.failing {
			if a.failing {
				return -1
			}
			return 1
		}
		return cmp.Compare(len(b.clusters), len(a.clusters))
	})
	return out
}

// clusterChanges is a changed cluster's changes, each with its diff lines.
func clusterChanges(c Cluster) []change {
	var out []change
	if c.Error != "" {
		out = append(out, change{summary: "the fleet does not evaluate" + newly(c.NewError), failing: c.NewError,
			text: strings.Join(append([]string{"@@ the fleet does not evaluate for it" + newly(c.NewError) + " @@"}, marked("-", c.Error)...), "\n")})
	}
	for _, v := range c.Violations {
		out = append(out, change{summary: "breaks a policy (newly)", failing: true,
			text: strings.Join(append([]string{"@@ breaks a policy (newly) @@"}, marked("-", v)...), "\n")})
	}
	if c.Wave != nil {
		out = append(out, change{summary: "moves from wave " + mdEscape(dash(c.Wave.From)) + " to " + mdEscape(dash(c.Wave.To)),
			text: strings.Join([]string{"@@ rollout wave @@", "-" + flat(dash(c.Wave.From)), "+" + flat(dash(c.Wave.To))}, "\n")})
	}
	for _, b := range c.Bundles {
		if b.Change == Unchanged {
			continue
		}
		lines := []string{fmt.Sprintf("@@ bundle %s: %s%s @@", flat(b.Name), b.Change, newly(b.NewError))}
		if b.Error != "" {
			lines = append(lines, marked("-", b.Error)...)
		}
		for _, o := range b.Objects {
			lines = append(lines, sign(o.Change)+" "+flat(o.Object))
			for _, f := range o.Fields {
				lines = append(lines, fieldLines(f)...)
			}
		}
		out = append(out, change{summary: mdCode(b.Name) + " " + b.Change.String() + newly(b.NewError), failing: b.NewError,
			text: strings.Join(lines, "\n")})
	}
	return out
}

// failing says whether a cluster newly fails or newly breaks a policy.
func failing(c Cluster) bool {
	if c.NewError || len(c.Violations) > 0 {
		return true
	}
	return slices.ContainsFunc(c.Bundles, func(b Bundle) bool { return b.NewError })
}

// WriteMarkdown writes the preview as a pull-request comment.
func (r *Report) WriteMarkdown(w io.Writer) error {
	_, err := io.WriteString(w, r.markdown(MaxMarkdown))
	return err
}

// maxInvariantLines bounds the invariants the comment lists (the rest
// are counted).
const maxInvariantLines = 20

// writeInvariants lists the invariants the change breaks, first: what a
// reviewer must see before any diff.
func (r *Report) writeInvariants(w *strings.Builder) {
	if len(r.Invariants) == 0 {
		return
	}
	fmt.Fprintf(w, "#### :x: The change breaks %s\n\n", english.Count(len(r.Invariants), "invariant"))
	for i, b := range r.Invariants {
		if i == maxInvariantLines {
			fmt.Fprintf(w, "- and %d more (`flotilla preview` lists them)\n", len(r.Invariants)-i)
			break
		}
		fmt.Fprintf(w, "- %s\n", mdEscape(errtext.Clean(b.Message)))
	}
	w.WriteString("\n")
}

// markdown is the comment, under max characters.
func (r *Report) markdown(maxLen int) string {
	var head strings.Builder
	fmt.Fprintf(&head, "### Flotilla preview %s\n\n**%s.**\n\n", r.revisions(), r.summaryLine())
	r.writeSummaryTable(&head)
	for _, warn := range r.Warnings {
		fmt.Fprintf(&head, "> warning: %s\n\n", mdEscape(warn))
	}
	r.writeInvariants(&head)
	groups := r.groups()
	if len(groups) == 0 {
		return head.String()
	}
	const room = 600 // kept for the note of what was cut
	budget := maxLen - head.Len() - room
	// Every group shown needs at least its header; those that do not fit
	// are counted instead.
	headers := make([]string, len(groups))
	shown, reserve := 0, 0
	for i, g := range groups {
		headers[i] = g.header(r.Waves)
		if reserve+len(headers[i]) > budget/2 && shown > 0 {
			break
		}
		reserve += len(headers[i])
		shown++
	}
	out := head.String()
	cut := false
	failingTitle, changesTitle := false, false
	for i, g := range groups[:shown] {
		if g.failing && !failingTitle {
			out += fmt.Sprintf("#### :x: New failures: %s\n\n", english.Count(countFailing(r.Clusters), "cluster"))
			failingTitle = true
		}
		if !g.failing && !changesTitle {
			n := len(groups) - countGroups(groups, true)
			out += fmt.Sprintf("#### Changes: %d distinct, on %s\n\n", n, english.Count(r.ChangedClusters(), "cluster"))
			changesTitle = true
		}
		reserve -= len(headers[i])
		// What this group may take beyond its header: the rest of the
		// budget, less the headers still to come.
		avail := maxLen - room - len(out) - len(headers[i]) - reserve
		body, whole := g.body(avail)
		out += headers[i] + body
		cut = cut || !whole
	}
	if rest := groups[shown:]; len(rest) > 0 {
		var names []string
		for _, g := range rest {
			for _, c := range g.clusters {
				if !slices.Contains(names, c.Name) {
					names = append(names, c.Name)
				}
			}
		}
		out += fmt.Sprintf("**%d more distinct changes, on %s** (not shown): %s\n\n", len(rest), english.Count(len(names), "cluster"), mdEscape(english.Names(names, 20)))
		cut = true
	}
	if cut {
		out += fmt.Sprintf("_Some details are cut to keep this comment under %d characters; every changed cluster is counted above. "+
			"`flotilla preview --cluster NAME` shows one cluster in full, `-o json` everything._\n", maxLen)
	}
	return out
}

// writeSummaryTable writes the clusters that change, do not and newly
// fail: for the fleet, per wave and per region.
func (r *Report) writeSummaryTable(b *strings.Builder) {
	type tally struct{ all, changed, unchanged, failing int }
	total := tally{}
	waves, regions := map[string]*tally{}, map[string]*tally{}
	count := func(t *tally, c Cluster) {
		t.all++
		switch {
		case failing(c):
			t.failing++
			t.changed++
		case c.Changed:
			t.changed++
		default:
			t.unchanged++
		}
	}
	for _, c := range r.Clusters {
		count(&total, c)
		if c.InWave != "" {
			if waves[c.InWave] == nil {
				waves[c.InWave] = &tally{}
			}
			count(waves[c.InWave], c)
		}
		if c.Region != "" {
			if regions[c.Region] == nil {
				regions[c.Region] = &tally{}
			}
			count(regions[c.Region], c)
		}
	}
	b.WriteString("| | clusters | change | unchanged | newly fail |\n|---|--:|--:|--:|--:|\n")
	row := func(name string, t tally) {
		fmt.Fprintf(b, "| %s | %d | %d | %d | %d |\n", name, t.all, t.changed, t.unchanged, t.failing)
	}
	row("**the fleet**", total)
	// Waves in the fleet's order, regions by name.
	if len(waves) > 1 {
		order := slices.Sorted(maps.Keys(waves))
		slices.SortStableFunc(order, func(a, b string) int { return cmp.Compare(waveRank(r.Waves, a), waveRank(r.Waves, b)) })
		for _, w := range order {
			row("wave "+mdCode(w), *waves[w])
		}
	}
	if len(regions) > 1 {
		for _, reg := range slices.Sorted(maps.Keys(regions)) {
			row("region "+mdCode(reg), *regions[reg])
		}
	}
	b.WriteString("\n")
}

// waveRank is a wave's place in the fleet's order (unknown ones last).
func waveRank(order []string, wave string) int {
	if i := slices.Index(order, wave); i >= 0 {
		return i
	}
	return len(order)
}

// countFailing counts the clusters that newly fail.
func countFailing(clusters []Cluster) int {
	n := 0
	for _, c := range clusters {
		if failing(c) {
			n++
		}
	}
	return n
}

func countGroups(groups []*changeGroup, failing bool) int {
	n := 0
	for _, g := range groups {
		if g.failing == failing {
			n++
		}
	}
	return n
}

// maxRegionsNamed is how many regions (and waves) a group's header names.
const maxRegionsNamed = 6

// header is a group's line: how many clusters, where, and the change in
// brief.
func (g *changeGroup) header(order []string) string {
	var regions, waves []string
	for _, c := range g.clusters {
		if c.Region != "" && !slices.Contains(regions, c.Region) {
			regions = append(regions, c.Region)
		}
		if c.InWave != "" && !slices.Contains(waves, c.InWave) {
			waves = append(waves, c.InWave)
		}
	}
	who := english.Count(len(g.clusters), "cluster")
	if len(g.clusters) == 1 {
		who = "cluster " + mdCode(g.clusters[0].Name)
	}
	var where []string
	if len(regions) > 0 {
		slices.Sort(regions)
		where = append(where, english.Noun(len(regions), "region")+" "+mdEscape(english.Names(regions, maxRegionsNamed)))
	}
	if len(waves) > 0 {
		slices.SortStableFunc(waves, func(a, b string) int { return cmp.Compare(waveRank(order, a), waveRank(order, b)) })
		where = append(where, english.Noun(len(waves), "wave")+" "+mdEscape(english.Names(waves, maxRegionsNamed)))
	}
	line := "**" + who + "**"
	if len(where) > 0 {
		line += " (" + strings.Join(where, "; ") + ")"
	}
	same := ""
	if len(g.clusters) > 1 {
		same = "the same change: "
	}
	return line + ": " + same + g.summary + "\n\n"
}

// body is a group's cluster list and its diff, in at most avail
// characters; whole says nothing had to be cut.
func (g *changeGroup) body(avail int) (string, bool) {
	var b strings.Builder
	whole := true
	if len(g.clusters) > 1 {
		names := make([]string, len(g.clusters))
		for i, c := range g.clusters {
			names[i] = c.Name
		}
		list := mdEscape(strings.Join(names, ", "))
		if len(list) > avail/3 {
			list = mdEscape(english.Names(names, 30))
			whole = false
		}
		fmt.Fprintf(&b, "<details><summary>the %s</summary>\n\n%s\n\n</details>\n\n", english.Count(len(names), "cluster"), list)
	}
	// A fence longer than any backtick run inside keeps the block closed.
	fence := "```"
	for strings.Contains(g.text, fence) {
		fence += "`"
	}
	diff := fence + "diff\n" + g.text + "\n" + fence + "\n\n"
	if b.Len()+len(diff) <= avail {
		b.WriteString(diff)
		return b.String(), whole
	}
	lines := strings.Split(g.text, "\n")
	if keep := avail - b.Len() - 200; keep > 0 {
		var kept []string
		size := 0
		for _, l := range lines {
			if size+len(l)+1 > keep {
				break
			}
			kept = append(kept, l)
			size += len(l) + 1
		}
		if len(kept) > 0 {
			fmt.Fprintf(&b, "%sdiff\n%s\n%s\n\n", fence, strings.Join(kept, "\n"), fence)
		}
		fmt.Fprintf(&b, "_%s of the change's %s cut: `flotilla preview --cluster` %s shows it all._\n\n",
			english.Count(len(lines)-len(kept), "line"), english.Count(len(lines), "line"), mdCode(g.clusters[0].Name))
	}
	return b.String(), false
}
