package main

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-logr/logr"
	"github.com/spf13/cobra"

	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// statusServeLong is `status serve --help`.
const statusServeLong = `Serve the status page live: the page of 'flotilla status -o html',
read again from the status branches every --interval (one ls-remote and one
fetch, whatever the fleet's size), and kept when a read fails (the page
says so, with the time of the read it shows). The open page follows: it
reloads at each interval and keeps its filters and search. Each cluster's
detail links to its last reports (/clusters/NAME, its status branch read
--history commits deep when asked for); /status.json is 'status -o json'.

The server only reads: it answers GET, holds no credential but the ones it
reads the repository with, and never shows them. By default it listens on
loopback only; to listen where others can reach it, give --token-file: the
reader presents the token as "Authorization: Bearer <token>", or once as
?token=... in the address, which a cookie then keeps for the browser.`

// statusServeFlags are the flags of `status serve`.
type statusServeFlags struct {
	statusFlags
	listen    string
	tokenFile string
	interval  time.Duration
	history   int
}

func newStatusServeCmd() *cobra.Command {
	sv := &statusServeFlags{}
	cmd := &cobra.Command{
		Use:   "serve [--repo URL] [--listen ADDR] [--token-file F]",
		Short: "Serve the fleet's status page live, read from the status branches",
		Long:  statusServeLong,
		Example: `  flotilla status serve --repo https://git.example.com/platform/fleet.git
  flotilla status serve --repo ../fleet --listen 127.0.0.1:8090 --interval 1m
  flotilla status serve --repo $REPO --listen :8090 --token-file /etc/flotilla/status-token`,
		Args: cobra.NoArgs,
	}
	sv.addReadFlags(cmd)
	fs := cmd.Flags()
	fs.StringVar(&sv.listen, "listen", "127.0.0.1:8090", "`ADDRESS` to serve on (loopback unless --token-file is given)")
	fs.StringVar(&sv.tokenFile, "token-file", "", "`FILE` holding the bearer token readers present (required to listen beyond loopback)")
	fs.DurationVar(&sv.interval, "interval", 30*time.Second, "how often the status branches are read again")
	fs.IntVar(&sv.history, "history", 20, fmt.Sprintf("how many of a cluster's last reports its history page shows (at most %d)", report.MaxHistory))
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return sv.run(cmd) }
	return cmd
}

// run serves until the command's context ends.
func (sv *statusServeFlags) run(cmd *cobra.Command) error {
	if sv.interval < time.Second {
		return errors.New("--interval must be at least 1s")
	}
	if sv.history < 1 || sv.history > report.MaxHistory {
		return fmt.Errorf("--history must be between 1 and %d", report.MaxHistory)
	}
	var token []byte
	if sv.tokenFile != "" {
		data, err := readKeyFile(sv.tokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		if token = bytes.TrimSpace(data); len(token) < 16 {
			return fmt.Errorf("--token-file %s: the token must be at least 16 characters", sv.tokenFile)
		}
	} else if !loopback(sv.listen) {
		return fmt.Errorf("--listen %s is reachable from other hosts: give --token-file (the bearer token readers present), or listen on 127.0.0.1", sv.listen)
	}
	if sv.repo == "" {
		if _, err := sv.fromCheckout(progressTo(cmd), true); err != nil {
			return err
		}
	}
	sv.repo = repoURL(sv.repo)
	auth, err := sv.auth.Method(sv.repo)
	if err != nil {
		return err
	}
	s := &statusServer{sv: sv, auth: auth, token: token, reader: report.NewReader(sv.repo, sv.prefix, auth)}
	ctx := cmd.Context()
	if err := s.refresh(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", sv.listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	go s.loop(ctx, logr.FromContextOrDiscard(ctx))
	fmt.Fprintf(progressTo(cmd), "serving the status of %s on http://%s/ (read every %s)\n", source.RedactURL(sv.repo), ln.Addr(), sv.interval)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// loopback says whether an address to listen on is reachable only from
// this host.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// statusServer holds the last page read and serves it.
type statusServer struct {
	sv    *statusServeFlags
	auth  transport.AuthMethod
	token []byte
	// reader keeps the status branches between refreshes: a refresh
	// fetches only the ones that moved.
	reader *report.Reader

	mu     sync.RWMutex
	page   []byte // the last page built
	doc    []byte // the same as status -o json
	readAt time.Time
	data   statusPageData // what the page was built from
}

// refresh reads the status branches and builds the page; a failed read
// keeps the last page, with a warning on it.
func (s *statusServer) refresh(ctx context.Context) error {
	now := time.Now()
	snap, err := s.reader.Read(ctx)
	if err != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.page == nil {
			return err
		}
		// The last page again, saying that this read failed.
		s.data.Warning = fmt.Sprintf("The read at %s failed (%s); this is the read of %s.",
			now.UTC().Format("15:04:05 UTC"), errtext.Error(err), s.readAt.UTC().Format("15:04:05 UTC"))
		var page bytes.Buffer
		if werr := writeStatusHTML(&page, s.data); werr == nil {
			s.page = page.Bytes()
		}
		return err
	}
	opts := s.sv.viewOptions(ctx, io.Discard, s.auth, now)
	opts.Invariants = s.sv.invariantsNow(ctx, io.Discard, snap.Statuses, opts.Tip, now)
	statuses := snap.Statuses
	report.SortForView(statuses, now, s.sv.stale)
	view := report.NewFleetView(statuses, opts)
	data := statusPageOf(statuses, view, opts)
	data.Data.Reload = int(s.sv.interval.Seconds())
	data.Data.History = "clusters/"
	var page bytes.Buffer
	if err := writeStatusHTML(&page, data); err != nil {
		return err
	}
	doc, err := json.Marshal(fleetStatus{Tip: opts.Tip, Summary: view, Clusters: statuses, Rollout: view.Rollout})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.page, s.doc, s.readAt, s.data = page.Bytes(), doc, now, data
	s.mu.Unlock()
	return nil
}

// loop reads the status branches every interval until ctx ends.
func (s *statusServer) loop(ctx context.Context, log logr.Logger) {
	tick := time.NewTicker(s.sv.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := s.refresh(ctx); err != nil && ctx.Err() == nil {
				log.Error(err, "reading the status branches")
			}
		}
	}
}

// tokenCookie keeps the token for a browser that presented it once.
const tokenCookie = "flotilla_status_token"

// handler serves the page, the JSON and the clusters' histories; only GET
// (and HEAD), only with the token when there is one.
func (s *statusServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.RLock()
		page := s.page
		s.mu.RUnlock()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.RLock()
		doc := s.doc
		s.mu.RUnlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	})
	mux.HandleFunc("GET /clusters/{name}", s.history)
	return s.guard(mux)
}

// guard answers only readers with the token (when there is one), and
// sets headers that keep the page to itself.
func (s *statusServer) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "the status server only reads", http.StatusMethodNotAllowed)
			return
		}
		if len(s.token) > 0 && r.URL.Path != "/healthz" {
			if q := r.URL.Query().Get("token"); q != "" && s.valid(q) {
				http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: q, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
				clean := *r.URL
				query := clean.Query()
				query.Del("token")
				clean.RawQuery = query.Encode()
				http.Redirect(w, r, (&url.URL{Path: clean.Path, RawQuery: clean.RawQuery}).String(), http.StatusSeeOther)
				return
			}
			bearer, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			cookie, _ := r.Cookie(tokenCookie)
			if !s.valid(bearer) && (cookie == nil || !s.valid(cookie.Value)) {
				h.Set("WWW-Authenticate", `Bearer realm="flotilla status"`)
				http.Error(w, "unauthorized: present the token (Authorization: Bearer, or ?token= once)", http.StatusUnauthorized)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// valid compares a presented token with the server's in constant time.
func (s *statusServer) valid(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), s.token) == 1
}

// history serves a cluster's last reports from its status branch.
func (s *statusServer) history(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := report.ValidateClusterName(name); err != nil {
		http.Error(w, "no such cluster", http.StatusNotFound)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	reports, err := report.ReadHistory(ctx, s.sv.repo, s.sv.prefix, name, s.sv.history, s.auth)
	if err != nil {
		http.Error(w, errtext.Error(err), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = historyPage.Execute(w, historyOf(name, reports, time.Now()))
}

// historyRow is one report, or several alike in a row (heartbeats).
type historyRow struct {
	From, To              time.Time
	Count                 int
	Phase                 report.ClusterPhase
	Applied, Seen, Wave   string
	Ready, Total          int
	Message, NotReadyText string
}

// historyOf is the history page's data.
func historyOf(name string, reports []report.Status, now time.Time) any {
	return struct {
		Name string
		Now  time.Time
		Rows []historyRow
		Read int
	}{name, now, historyRows(reports), len(reports)}
}

// historyRows folds a cluster's reports (newest first) into rows: reports
// that say the same in a row are one, with their count and times.
func historyRows(reports []report.Status) []historyRow {
	var rows []historyRow
	for _, st := range reports {
		st = cleanStatus(st)
		row := historyRow{From: st.ReportedAt, To: st.ReportedAt, Count: 1, Phase: st.Phase, Applied: gitrev.Short(st.AppliedRevision),
			Seen: gitrev.Short(st.SeenRevision), Wave: st.Wave, Total: len(st.Bundles), Message: st.Message}
		var notReady []string
		for _, b := range st.Bundles {
			if b.Phase == apply.PhaseReady || b.Phase == apply.PhasePruned {
				row.Ready++
			} else {
				notReady = append(notReady, errtext.Clean(b.Name)+" "+string(b.Phase)+": "+oneLine(errtext.Clean(b.Message)))
			}
		}
		row.NotReadyText = strings.Join(notReady, "\n")
		if n := len(rows); n > 0 {
			last := &rows[n-1]
			if last.Phase == row.Phase && last.Applied == row.Applied && last.Seen == row.Seen && last.Message == row.Message &&
				last.Ready == row.Ready && last.NotReadyText == row.NotReadyText {
				last.From, last.Count = row.From, last.Count+1
				continue
			}
		}
		rows = append(rows, row)
	}
	return rows
}

var historyPage = template.Must(template.New("history").Funcs(template.FuncMap{
	"time": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Name}}: last reports</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.25rem 2rem;color:#1b1f24}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;font-size:.85rem;vertical-align:top}
th{background:#f6f8fa}.Ready{background:#dafbe1}.Progressing,.Waiting{background:#fff8c5}.Failed{background:#ffebe9}
pre{white-space:pre-wrap;margin:0;font-size:.8rem}
</style></head><body>
<p><a href="../">← the fleet</a></p>
<h1>{{.Name}}: its last {{.Read}} reports</h1>
<table id="history"><thead><tr><th>Reported</th><th>Reports</th><th>Phase</th><th>Applied</th><th>Seen</th><th>Wave</th><th>Bundles Ready</th><th>Not Ready</th><th>Message</th></tr></thead><tbody>
{{- range .Rows}}
<tr><td>{{time .To}}{{if gt .Count 1}}<br>since {{time .From}}{{end}}</td><td>{{.Count}}</td><td class="{{.Phase}}">{{.Phase}}</td><td><code>{{.Applied}}</code></td><td><code>{{.Seen}}</code></td><td>{{.Wave}}</td>
<td>{{.Ready}}/{{.Total}}</td><td><pre>{{.NotReadyText}}</pre></td><td><pre>{{.Message}}</pre></td></tr>
{{- end}}
</tbody></table>
</body></html>
`))
