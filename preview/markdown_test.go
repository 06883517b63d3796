package preview_test

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/renderer/html"

	"github.com/flotilla-gitops/flotilla/internal/golden"
	"github.com/flotilla-gitops/flotilla/preview"
)

// script is a 30-line shell script, with line 12 as given.
func script(line12 string) string {
	var b strings.Builder
	for i := 1; i <= 30; i++ {
		if i == 12 {
			b.WriteString(line12 + "\n")
			continue
		}
		fmt.Fprintf(&b, "echo step %d\n", i)
	}
	return b.String()
}

// syntheticPreview is a preview of one pull request on n clusters, as a
// fleet of that size gets it: four regions, three waves (2% canary, 8%
// early, the rest); the pull request changes web's replicas in the two eu
// regions (the same change everywhere), one line of a 30-line script on
// every canary cluster, breaks web's values on every 50th cluster (an
// error naming the cluster), and gives every 97th cluster a change of its
// own; the other clusters do not change.
func syntheticPreview(n int) *preview.Report {
	regions := []string{"eu-west-1", "eu-central-1", "us-east-1", "ap-south-1"}
	rep := &preview.Report{Base: strings.Repeat("1a", 20), Head: strings.Repeat("2b", 20), Waves: []string{"canary", "early", "rest"}}
	for i := range n {
		name := fmt.Sprintf("prod-%s-%04d", regions[i%4], i)
		wave := "rest"
		switch {
		case i < max(1, n/50):
			wave = "canary"
		case i < max(2, n/10):
			wave = "early"
		}
		c := preview.Cluster{Name: name, Region: regions[i%4], InWave: wave, Bundles: []preview.Bundle{{Name: "web", Change: preview.Unchanged}, {Name: "scripts", Change: preview.Unchanged}}}
		if strings.HasPrefix(c.Region, "eu-") {
			c.Bundles[0] = preview.Bundle{Name: "web", Change: preview.Changed, Objects: []preview.Object{{Object: "apps/v1, Kind=Deployment, web/web", Change: preview.Changed,
				Fields: []preview.Field{{Op: "replace", Path: "/spec/replicas", Old: float64(3), New: float64(5)}}}}}
		}
		if wave == "canary" {
			c.Bundles[1] = preview.Bundle{Name: "scripts", Change: preview.Changed, Objects: []preview.Object{{Object: "v1, Kind=ConfigMap, ops/scripts", Change: preview.Changed,
				Fields: []preview.Field{{Op: "replace", Path: "/data/rotate.sh", Old: script("rotate --keep 7"), New: script("rotate --keep 14")}}}}}
		}
		if i%50 == 7 {
			c.Bundles[0] = preview.Bundle{Name: "web", Change: preview.Failed, NewError: true,
				Error: "fleet.cue:41:12: cluster " + name + ": bundles.web.values.replicas: conflicting values 5 and \"five\""}
		}
		if i%97 == 5 {
			c.Bundles = append(c.Bundles, preview.Bundle{Name: "tenant", Change: preview.Added, Objects: []preview.Object{
				{Object: fmt.Sprintf("v1, Kind=Namespace, tenant-%d", i), Change: preview.Added}}})
		}
		for _, b := range c.Bundles {
			c.Changed = c.Changed || b.Change != preview.Unchanged
		}
		rep.Clusters = append(rep.Clusters, c)
	}
	return rep
}

// TestMarkdownAtScale writes the comment of syntheticPreview for 5, 300
// and 1,000 clusters and keeps each as a golden file; each is under the
// limit, accounts for every changed cluster, shows the identical change
// once, the one-line script change as one line removed and one added, and
// renders as GitHub-flavoured Markdown with its diffs in diff blocks.
func TestMarkdownAtScale(t *testing.T) {
	for _, n := range []int{5, 300, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			rep := syntheticPreview(n)
			var b bytes.Buffer
			if err := rep.WriteMarkdown(&b); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			golden.Check(t, fmt.Sprintf("testdata/comment-%d.md", n), b.Bytes())
			t.Logf("the comment on %d clusters: %d characters", n, len(out))
			if len(out) > preview.MaxMarkdown {
				t.Errorf("%d characters, more than %d", len(out), preview.MaxMarkdown)
			}
			// Each cluster's changes are counted in their groups.
			changed := 0
			for _, c := range rep.Clusters {
				for _, b := range c.Bundles {
					if b.Change != preview.Unchanged {
						changed++
					}
				}
			}
			counted := 0
			for _, m := range regexp.MustCompile(`(?m)^\*\*(\d+) clusters\*\*|^\*\*cluster `+"`"+`[^`+"`"+`]+`+"`"+`\*\*`).FindAllStringSubmatch(out, -1) {
				if m[1] == "" {
					counted++
				} else {
					counted += atoi(t, m[1])
				}
			}
			if m := regexp.MustCompile(`\*\*\d+ more distinct changes, on (\d+) clusters?\*\*`).FindStringSubmatch(out); m != nil {
				counted += atoi(t, m[1])
			}
			if counted != changed {
				t.Errorf("the groups account for %d changes of clusters, there are %d", counted, changed)
			}
			if n >= 300 && strings.Count(out, "@@ replace /spec/replicas @@") != 1 {
				t.Errorf("the replicas change, the same on every eu cluster, is shown %d times", strings.Count(out, "@@ replace /spec/replicas @@"))
			}
			if !strings.Contains(out, "@@ replace /data/rotate.sh @@\n@@ -9,7 +9,7 @@\n echo step 9\n echo step 10\n echo step 11\n-rotate --keep 7\n+rotate --keep 14\n echo step 13\n") {
				t.Errorf("the script's one-line change is not a line diff:\n%s", out)
			}
			if i, j := strings.Index(out, "New failures"), strings.Index(out, "#### Changes"); n > 7 && (i < 0 || j < 0 || i > j) {
				t.Errorf("the new failures should come first")
			}
			checkMarkdown(t, fmt.Sprint(n), out)
		})
	}
}

// checkMarkdown renders a comment as GitHub-flavoured Markdown (goldmark
// with the GFM extensions, raw HTML passed through as GitHub passes
// <details>): its summary is a table, every diff is a code block of
// language diff whose lines start with a diff marker, and the only HTML
// is the comment's own <details> and <summary>, balanced.
func checkMarkdown(t *testing.T, name, md string) {
	t.Helper()
	var out bytes.Buffer
	gfm := goldmark.New(goldmark.WithExtensions(extension.GFM), goldmark.WithRendererOptions(html.WithUnsafe()))
	if err := gfm.Convert([]byte(md), &out); err != nil {
		t.Fatalf("%s: goldmark: %v", name, err)
	}
	page := out.String()
	if !strings.Contains(page, "<table>") || !regexp.MustCompile(`<th[^>]*>clusters</th>`).MatchString(page) {
		t.Errorf("%s: the summary is not a table:\n%.1500s", name, page)
	}
	blocks := regexp.MustCompile(`(?s)<pre><code class="language-diff">(.*?)</code></pre>`).FindAllStringSubmatch(page, -1)
	if strings.Count(md, "diff\n") > 0 && len(blocks) == 0 {
		t.Errorf("%s: no diff block rendered", name)
	}
	for _, b := range blocks {
		for _, line := range strings.Split(strings.TrimSuffix(b[1], "\n"), "\n") {
			if line == "" || !strings.ContainsAny(line[:1], "-+ @~\\") && !strings.HasPrefix(line, "&quot;") {
				t.Errorf("%s: a diff line without a marker: %q", name, line)
				break
			}
		}
	}
	if pre := strings.Count(page, "<pre>"); pre != len(blocks) {
		t.Errorf("%s: %d code blocks, %d of them diffs", name, pre, len(blocks))
	}
	if strings.Count(page, "<details>") != strings.Count(page, "</details>") {
		t.Errorf("%s: <details> opened %d times, closed %d", name, strings.Count(page, "<details>"), strings.Count(page, "</details>"))
	}
	// Outside the code blocks, no HTML but the comment's own.
	rest := regexp.MustCompile(`(?s)<pre><code.*?</code></pre>`).ReplaceAllString(page, "")
	for _, tag := range regexp.MustCompile(`<([a-zA-Z][a-zA-Z0-9]*)`).FindAllStringSubmatch(rest, -1) {
		switch tag[1] {
		case "h3", "h4", "p", "strong", "em", "code", "table", "thead", "tbody", "tr", "th", "td", "details", "summary", "blockquote", "br", "ul", "li":
		default:
			t.Errorf("%s: the rendered comment has a <%s> element", name, tag[1])
		}
	}
}
