package main

import (
	"html/template"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// statusPage is the self-contained page `flotilla status -o html` writes:
// a clusters × bundles matrix coloured by phase, with the errors. No
// script, no external resource: it opens from a file.
var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"short": short,
	"join":  func(s []string) string { return strings.Join(s, ", ") },
	"age":   func(t time.Time, now time.Time) string { return now.Sub(t).Round(time.Second).String() },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Flotilla fleet status</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;color:#1b1f24}
table{border-collapse:collapse;margin-bottom:2rem}
th,td{border:1px solid #d0d7de;padding:.35rem .6rem;text-align:left;font-size:.9rem}
th{background:#f6f8fa}
.Ready{background:#dafbe1}.Progressing,.Drifted{background:#fff8c5}
.Failed,.Skipped{background:#ffebe9}.Pruned,.none{background:#f6f8fa;color:#57606a}
.stale{color:#cf222e;font-weight:600}
.Done{background:#dafbe1}.Applying,.Baking,.Waiting,.Empty{background:#fff8c5}.Halted,.Failed{background:#ffebe9}
pre{white-space:pre-wrap;margin:0}
</style></head><body>
<h1>Fleet status</h1>
<p>{{len .Clusters}} clusters, read from the status branch at {{.Now.UTC.Format "2006-01-02 15:04:05 MST"}}{{if .Tip}}; fleet tip {{short .Tip}}{{end}}.</p>
<table id="matrix">
<thead><tr><th>Cluster</th><th>Region</th><th>Phase</th><th>Applied</th><th>Reported</th>{{range .Bundles}}<th>{{.}}</th>{{end}}</tr></thead>
<tbody>
{{- range $c := .Clusters}}
<tr class="cluster" data-cluster="{{$c.Status.Cluster.Name}}">
<td>{{$c.Status.Cluster.Name}}</td><td>{{$c.Status.Cluster.Region}}</td>
<td class="{{$c.Status.Phase}}">{{$c.Status.Phase}}</td>
<td>{{short $c.Status.AppliedRevision}}</td>
<td{{if $c.Stale}} class="stale"{{end}}>{{age $c.Status.ReportedAt $.Now}} ago{{if $c.Stale}} (stale){{end}}</td>
{{- range $c.Cells}}<td class="{{if .}}{{.}}{{else}}none{{end}}">{{if .}}{{.}}{{else}}–{{end}}</td>{{end}}
</tr>
{{- end}}
</tbody></table>
{{- with .Rollout}}
<h2>Rollout of {{short .Revision}}</h2>
<table id="rollout"><thead><tr><th>Wave</th><th>Ready</th><th>State</th><th>Clusters</th><th>Detail</th></tr></thead><tbody>
{{- range .Waves}}
<tr data-wave="{{.Name}}"><td>{{.Name}}</td><td>{{.Ready}}/{{len .Clusters}}</td><td class="{{.State}}">{{.State}}</td><td>{{join .Clusters}}</td><td>{{.Detail}}</td></tr>
{{- end}}
</tbody></table>
{{- if .NotSeen}}<p>Not yet seen by {{join .NotSeen}}.</p>{{end}}
{{- end}}
{{- if .Problems}}
<h2>Problems</h2>
<table id="problems"><thead><tr><th>Cluster</th><th>Bundle</th><th>Phase</th><th>Message</th></tr></thead><tbody>
{{- range .Problems}}
<tr><td>{{.Cluster}}</td><td>{{.Bundle}}</td><td class="{{.Phase}}">{{.Phase}}</td><td><pre>{{.Message}}</pre></td></tr>
{{- end}}
</tbody></table>
{{- end}}
</body></html>
`))

// writeStatusHTML writes the status page.
func writeStatusHTML(w io.Writer, statuses []report.Status, tip string, view *report.RolloutView, stale time.Duration, now time.Time) error {
	type cluster struct {
		Status report.Status
		Stale  bool
		Cells  []string
	}
	type problem struct{ Cluster, Bundle, Phase, Message string }
	var bundles []string
	for _, st := range statuses {
		for _, b := range st.Bundles {
			if !slices.Contains(bundles, b.Name) {
				bundles = append(bundles, b.Name)
			}
		}
	}
	slices.Sort(bundles)
	data := struct {
		Now      time.Time
		Tip      string
		Bundles  []string
		Clusters []cluster
		Problems []problem
		Rollout  *rolloutHTML
	}{Now: now, Tip: tip, Bundles: bundles}
	if view != nil {
		data.Rollout = &rolloutHTML{Revision: view.Revision, NotSeen: view.NotSeen}
		for _, wv := range view.Waves {
			data.Rollout.Waves = append(data.Rollout.Waves, waveHTML{WaveView: wv, Detail: wv.Detail()})
		}
	}
	for _, st := range statuses {
		c := cluster{Status: st, Stale: now.Sub(st.ReportedAt) > stale, Cells: make([]string, len(bundles))}
		for _, b := range st.Bundles {
			c.Cells[slices.Index(bundles, b.Name)] = string(b.Phase)
			if b.Message != "" && b.Phase != apply.PhaseReady {
				data.Problems = append(data.Problems, problem{st.Cluster.Name, b.Name, string(b.Phase), b.Message})
			}
		}
		if st.Message != "" {
			data.Problems = append(data.Problems, problem{st.Cluster.Name, "", string(st.Phase), st.Message})
		}
		data.Clusters = append(data.Clusters, c)
	}
	return statusPage.Execute(w, data)
}

// rolloutHTML is the rollout view as the page shows it.
type rolloutHTML struct {
	Revision string
	Waves    []waveHTML
	NotSeen  []string
}

type waveHTML struct {
	report.WaveView
	Detail string
}
