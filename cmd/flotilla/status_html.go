package main

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// The status page (`flotilla status -o html`): one self-contained file —
// inline style and script, no external resource, opens from disk — built
// from the fleet view. What a person asks first is at the top (counts by
// phase, the tip's progress, the rollout, the distinct problems, each
// bundle across the fleet); then every cluster, failed and stale first,
// with filters, a search box and a detail view drawn by the script from
// the page's compact data. At 1,000 clusters × 50 bundles it stays under
// 2 MB: the cluster × bundle detail is data (a letter per bundle phase,
// counts only where not zero, messages only where there are), not markup.

//go:embed status_page.html
var statusPageHTML string

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"short":   short,
	"count":   english.Count,
	"time":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"phases":  func() []apply.Phase { return bundlePhases },
	"phaseOf": func(b report.BundleCounts, p apply.Phase) int { return b.Phases[p] },
}).Parse(statusPageHTML))

// bundlePhases are the columns of the bundle table.
var bundlePhases = []apply.Phase{apply.PhaseFailed, apply.PhaseProgressing, apply.PhaseDrifted, apply.PhaseSkipped, apply.PhaseReady, apply.PhasePruned}

// statusPageData is what the page template reads.
type statusPageData struct {
	Now     time.Time
	Stale   time.Duration
	View    *report.FleetView
	Rows    []clusterRow
	Waves   []string
	Regions []string
	Bundles []report.BundleCounts // worst first
	// Data is the detail of every cluster, for the script.
	Data pageData
	// Warning, on a served page, says its last read failed.
	Warning string
}

// clusterRow is a cluster's row in the page's table.
type clusterRow struct {
	Name, Region, Wave, Labels string
	Standing                   report.Standing
	Applied                    string
	AtTip                      bool
	Ready, Total               int
	// NotReady names the bundles not Ready (the first few).
	NotReady string
	Age      string
	Message  string
}

// pageData is the page's detail data: bundle names once, then per
// cluster a letter per bundle (its phase, or - where it has none), the
// counts that are not zero, and the messages.
type pageData struct {
	Bundles []string `json:"bundles"`
	// Phases maps the letters to phases.
	Phases   map[string]string `json:"phases"`
	Clusters []pageCluster     `json:"clusters"`
	// Reload is how often a served page reloads (seconds; 0: never), and
	// History where a served page's clusters' reports are (NAME after it).
	Reload  int    `json:"reload,omitempty"`
	History string `json:"history,omitempty"`
}

type pageCluster struct {
	Name     string `json:"name"`
	Applied  string `json:"applied,omitempty"`
	Seen     string `json:"seen,omitempty"`
	Agent    string `json:"agent,omitempty"`
	Reported string `json:"reported"`
	Message  string `json:"message,omitempty"`
	Rollout  string `json:"rollout,omitempty"`
	// Phases has a letter per bundle of pageData.Bundles.
	Phases string `json:"phases"`
	// Counts are created/configured/deleted/drifted by bundle index,
	// where any is not zero.
	Counts map[string][4]int `json:"counts,omitempty"`
	// Messages and Revisions (where not the applied one) by bundle index.
	Messages  map[string]string `json:"messages,omitempty"`
	Revisions map[string]string `json:"revisions,omitempty"`
}

// phaseLetters are the letters of the bundle phases in the page's data.
var phaseLetters = map[apply.Phase]string{
	apply.PhaseReady: "R", apply.PhaseProgressing: "P", apply.PhaseFailed: "F",
	apply.PhaseDrifted: "D", apply.PhaseSkipped: "S", apply.PhasePruned: "X",
}

// statusPageOf builds the page's data from the clusters it lists (in the
// view's order) and their view.
func statusPageOf(statuses []report.Status, view *report.FleetView, opts report.ViewOptions) statusPageData {
	d := statusPageData{Now: opts.Now, Stale: opts.Stale, View: view, Bundles: slices.Clone(view.Bundles)}
	slices.SortStableFunc(d.Bundles, func(a, b report.BundleCounts) int {
		return (b.Phases[apply.PhaseFailed] + b.Phases[apply.PhaseProgressing]) - (a.Phases[apply.PhaseFailed] + a.Phases[apply.PhaseProgressing])
	})
	index := map[string]int{}
	for i, b := range view.Bundles {
		d.Data.Bundles = append(d.Data.Bundles, b.Name)
		index[b.Name] = i
	}
	d.Data.Phases = map[string]string{"-": "none"}
	for p, l := range phaseLetters {
		d.Data.Phases[l] = string(p)
	}
	waves, regions := map[string]bool{}, map[string]bool{}
	for _, st := range statuses {
		row, data := clusterOf(st, index, opts)
		d.Rows = append(d.Rows, row)
		d.Data.Clusters = append(d.Data.Clusters, data)
		if st.Wave != "" {
			waves[st.Wave] = true
		}
		if st.Cluster.Region != "" {
			regions[st.Cluster.Region] = true
		}
	}
	if view.Rollout != nil {
		for _, w := range view.Rollout.Waves {
			d.Waves = append(d.Waves, w.Name)
		}
	}
	for _, w := range slices.Sorted(maps.Keys(waves)) {
		if !slices.Contains(d.Waves, w) {
			d.Waves = append(d.Waves, w)
		}
	}
	d.Regions = slices.Sorted(maps.Keys(regions))
	return d
}

// maxNotReady is how many bundles not Ready a cluster's row names.
const maxNotReady = 3

// clusterOf is a cluster's row and detail data. Any agent can write a
// status branch: its texts are bounded (errtext.Clean) before the page
// holds them, and the template escapes them.
func clusterOf(st report.Status, index map[string]int, opts report.ViewOptions) (clusterRow, pageCluster) {
	st = cleanStatus(st)
	row := clusterRow{Name: st.Cluster.Name, Region: st.Cluster.Region, Wave: st.Wave, Labels: fleet.LabelString(st.Cluster.Labels),
		Standing: report.StandingOf(st, opts.Now, opts.Stale), Applied: gitrev.Short(st.AppliedRevision),
		AtTip: opts.Tip != "" && st.AppliedRevision == opts.Tip, Total: len(st.Bundles),
		Age: opts.Now.Sub(st.ReportedAt).Round(time.Second).String(), Message: oneLine(st.Message)}
	data := pageCluster{Name: st.Cluster.Name, Applied: st.AppliedRevision, Seen: st.SeenRevision, Agent: st.Agent,
		Reported: st.ReportedAt.UTC().Format(time.RFC3339), Message: st.Message}
	if r := st.Rollout; r != nil && len(r.Waves) > 0 {
		data.Rollout = fmt.Sprintf("%s at %s", r.State, gitrev.Short(r.Revision))
		if r.Message != "" {
			data.Rollout += ": " + r.Message
		}
	}
	phases := []byte(strings.Repeat("-", len(index)))
	var notReady []string
	for _, b := range st.Bundles {
		if b.Phase == apply.PhaseReady || b.Phase == apply.PhasePruned {
			row.Ready++
		} else {
			if len(notReady) < maxNotReady {
				notReady = append(notReady, b.Name)
			}
			if row.Message == "" && b.Message != "" {
				row.Message = b.Name + ": " + oneLine(b.Message)
			}
		}
		i, ok := index[b.Name]
		if !ok {
			continue
		}
		key := strconv.Itoa(i)
		if l, ok := phaseLetters[b.Phase]; ok {
			phases[i] = l[0]
		} else {
			phases[i] = '?'
		}
		if c := b.Counts; c.Created+c.Configured+c.Deleted+c.Drifted > 0 {
			if data.Counts == nil {
				data.Counts = map[string][4]int{}
			}
			data.Counts[key] = [4]int{c.Created, c.Configured, c.Deleted, c.Drifted}
		}
		if b.Message != "" {
			if data.Messages == nil {
				data.Messages = map[string]string{}
			}
			data.Messages[key] = errtext.Clean(b.Message)
		}
		if b.Revision != "" && b.Revision != st.AppliedRevision {
			if data.Revisions == nil {
				data.Revisions = map[string]string{}
			}
			data.Revisions[key] = gitrev.Short(b.Revision)
		}
	}
	if n := row.Total - row.Ready; n > len(notReady) {
		notReady = append(notReady, fmt.Sprintf("%d more", n-len(notReady)))
	}
	row.NotReady = strings.Join(notReady, ", ")
	data.Phases = string(phases)
	return row, data
}

// writeStatusHTML writes the status page.
func writeStatusHTML(w io.Writer, d statusPageData) error {
	return statusPage.Execute(w, d)
}
