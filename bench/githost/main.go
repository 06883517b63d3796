// Command githost measures what one Git host carries for a fleet (issue
// 38): a real Git server — git http-backend, the smart HTTP server Git
// ships, behind net/http/cgi — and simulated agents, the real sync/source
// and sync/report code, no Kubernetes. For each fleet size it writes the
// fleet repository (the synthetic fleet's files), one status branch per
// cluster and the approvals branch, then times every kind of request an
// agent makes, one at a time, so that each git process's CPU (the
// server's children, from getrusage) and bytes belong to the request that
// ran it:
//
//   - poll: an idle poll, the fleet branch's tip (ls-remote);
//   - fetch: a new fleet commit, checked out one commit deep (every agent
//     does it once per commit);
//   - controls: a read of the approvals branch (approvals, pause, holds),
//     in the fleet repository: with status shared, every agent reads it at
//     every new tip (agents before issue 38 read it from the status
//     repository, paying its advertisement, at every new tip); with
//     status apart, agents see its tip in their poll and read it only
//     when it moved;
//   - report-1st: an agent's first status report (fetch its branch, push);
//   - report: a later report (push only: the reporter keeps what it pushed);
//   - read-all: every status branch, read afresh (flotilla status; an
//     agent's first read);
//   - read-next: every status branch again, after 1% of the clusters (at
//     most 40) reported a change (an agent of a fleet with waves reads them at every new
//     tip, and at every poll while it waits: it fetches what moved).
//
// With -layout shared the status and approvals branches are in the fleet
// repository (what an install did before issue 38); with separate, in a
// repository of their own. It prints, per size and layout, the server's
// CPU, requests and bytes per operation, and what a host needs for the
// fleet at -interval.
//
//	go run ./bench/githost -clusters 1000,3000,10000 -layout shared,separate
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/synthfleet"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

func main() {
	if os.Getenv(registryChildEnv) != "" {
		serveRegistry()
		return
	}
	sizes := flag.String("clusters", "1000,3000,10000", "fleet sizes, comma-separated")
	layouts := flag.String("layout", "shared,separate", "where the status branches are: shared (the fleet repository), separate (their own)")
	samples := flag.Int("samples", 40, "operations of each kind measured (read-all: a tenth, at least 3)")
	bundles := flag.Int("bundles", 50, "bundles of the synthetic fleet")
	interval := flag.Duration("interval", time.Minute, "the agents' poll interval, for the host's needs")
	agents := flag.Int("oci-agents", 1000, "agents polling once each, Git against an OCI registry (0: not compared)")
	flag.Parse()
	git, err := exec.LookPath("git")
	if err != nil {
		log.Fatal("git is needed: its http-backend is the server")
	}
	for _, s := range strings.FieldsFunc(*sizes, func(r rune) bool { return r == ',' }) {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			log.Fatalf("-clusters: %q is not a number of clusters", s)
		}
		for _, layout := range strings.Split(*layouts, ",") {
			if layout != "shared" && layout != "separate" {
				log.Fatalf("-layout: %q is neither shared nor separate", layout)
			}
			res, err := run(git, n, *bundles, layout, *samples)
			if err != nil {
				log.Fatalf("%d clusters, %s: %v", n, layout, err)
			}
			res.print(os.Stdout, *interval)
		}
	}
	if *agents > 0 {
		if err := comparePolls(git, *agents, *bundles); err != nil {
			log.Fatalf("Git against OCI: %v", err)
		}
	}
}

// result is what one size and layout measured.
type result struct {
	clusters int
	layout   string
	ops      []opResult
}

// opResult is one kind of operation, per operation.
type opResult struct {
	name     string
	n        int
	wall     time.Duration // client side
	requests float64
	cpu      time.Duration // the server's git processes
	in, out  float64       // bytes received and sent by the server
	byKind   map[string]time.Duration
}

// run measures one fleet size and layout.
func run(git string, clusters, bundles int, layout string, samples int) (*result, error) {
	root, err := os.MkdirTemp("", "flotilla-githost-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(root)
	statusRepo := "fleet.git"
	if layout == "separate" {
		statusRepo = "status.git"
	}
	fmt.Fprintf(os.Stderr, "%d clusters, %s: writing the repositories\n", clusters, layout)
	if err := writeRepos(git, root, clusters, bundles, statusRepo); err != nil {
		return nil, err
	}
	h, err := startHost(git, root)
	if err != nil {
		return nil, err
	}
	defer h.close()
	fleetURL, statusURL := h.url+"/fleet.git", h.url+"/"+statusRepo
	ctx := context.Background()
	src, err := source.New(source.Options{URL: fleetURL, CacheDir: filepath.Join(root, "cache")})
	if err != nil {
		return nil, err
	}
	tip, err := src.Head(ctx)
	if err != nil {
		return nil, err
	}
	res := &result{clusters: clusters, layout: layout}
	for _, op := range operations(ctx, root, fleetURL, statusURL, tip, clusters, samples) {
		fmt.Fprintf(os.Stderr, "%d clusters, %s: %d × %s\n", clusters, layout, op.n, op.name)
		before, wall := h.snapshot(), time.Duration(0)
		for i := range op.n {
			if op.between != nil {
				h.ignore.Store(true)
				err := op.between(i)
				h.ignore.Store(false)
				if err != nil {
					return nil, fmt.Errorf("%s %d: %w", op.name, i, err)
				}
			}
			start := time.Now()
			if err := op.do(i); err != nil {
				return nil, fmt.Errorf("%s %d: %w", op.name, i, err)
			}
			wall += time.Since(start)
		}
		res.ops = append(res.ops, h.since(before, op.name, op.n, wall))
	}
	return res, nil
}

// operation is one kind of request an agent makes, n times.
type operation struct {
	name string
	n    int
	do   func(i int) error
	// between runs before each do, not counted.
	between func(i int) error
}

// operations are what an agent asks of the host, as the agent asks it.
func operations(ctx context.Context, root, fleetURL, statusURL, tip string, clusters, samples int) []operation {
	src, err := source.New(source.Options{URL: fleetURL, CacheDir: filepath.Join(root, "cache")})
	if err != nil {
		log.Fatal(err)
	}
	now := time.Now()
	publish := func(r *report.Reporter, i int, phase report.ClusterPhase) error {
		name := synthfleet.ClusterName(i * max(clusters/samples, 1))
		st := &report.Status{Cluster: fleet.Cluster{Name: name, Region: "eu-west-1"}, Phase: phase, AppliedRevision: tip, SeenRevision: tip}
		_, err := r.Publish(ctx, st, now)
		return err
	}
	reporters := make([]*report.Reporter, samples)
	var reader *report.Reader
	readAll := func(r *report.Reader) error {
		snap, err := r.Read(ctx)
		if err == nil && len(snap.Statuses) != clusters {
			err = fmt.Errorf("read %d statuses of %d", len(snap.Statuses), clusters)
		}
		return err
	}
	return []operation{
		{name: "poll", n: samples, do: func(int) error { _, err := src.Head(ctx); return err }},
		{name: "fetch", n: samples, do: func(i int) error {
			dir := filepath.Join(root, "agents", strconv.Itoa(i))
			defer os.RemoveAll(dir)
			s, err := source.New(source.Options{URL: fleetURL, CacheDir: dir})
			if err != nil {
				return err
			}
			_, err = s.Fetch(ctx, tip)
			return err
		}},
		{name: "controls", n: samples, do: func(int) error {
			_, err := report.ReadControlBranch(ctx, fleetURL, "", nil)
			return err
		}},
		// A reporter's first report (an agent that started) fetches its
		// branch; the next ones build on what it pushed.
		{name: "report-1st", n: samples, do: func(i int) error {
			r, err := report.New(report.Options{URL: statusURL})
			if err == nil {
				err = publish(r, i, report.ClusterProgressing)
			}
			reporters[i] = r
			return err
		}},
		{name: "report", n: samples, do: func(i int) error { return publish(reporters[i], i, report.ClusterReady) }},
		{name: "read-all", n: max(samples/10, 3), do: func(int) error {
			reader = report.NewReader(statusURL, "", nil)
			return readAll(reader)
		}},
		// An agent that read them before (waiting in a wave, at each
		// poll), after 1% of the clusters (at most the samples' 40)
		// reported a change.
		{name: "read-next", n: max(samples/10, 3), do: func(int) error { return readAll(reader) },
			between: func(round int) error {
				phase := report.ClusterPhase([]string{"Progressing", "Ready"}[round%2])
				for i := range min(samples, max(clusters/100, 1)) {
					if err := publish(reporters[i], i, phase); err != nil {
						return err
					}
				}
				return nil
			}},
	}
}

// writeRepos writes fleet.git (the synthetic fleet, one commit), and in
// the status repository (fleet.git or status.git) one status branch per
// cluster and the approvals branch, with git fast-import.
func writeRepos(git, root string, clusters, bundles int, statusRepo string) error {
	work := filepath.Join(root, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	if err := synthfleet.Write(work, clusters, bundles); err != nil {
		return err
	}
	if err := synthfleet.WriteSources(work, bundles); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"init", "-q", "--bare", "-b", "main", filepath.Join(root, "fleet.git")},
		{"init", "-q", "--bare", "-b", "main", filepath.Join(root, "status.git")},
		{"-C", work, "init", "-q", "-b", "main"},
		{"-C", work, "add", "-A"},
		{"-C", work, "-c", "user.name=Fleet", "-c", "user.email=fleet@example.com", "commit", "-q", "-m", "the fleet"},
		{"-C", work, "push", "-q", filepath.Join(root, "fleet.git"), "main"},
	} {
		if out, err := exec.Command(git, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, repo := range []string{"fleet.git", "status.git"} {
		if out, err := exec.Command(git, "-C", filepath.Join(root, repo), "config", "http.receivepack", "true").CombinedOutput(); err != nil {
			return fmt.Errorf("git config: %w: %s", err, out)
		}
	}
	// The approvals branch is in the fleet repository when the status
	// has a repository of its own (where agents see it move in their
	// poll), else in the one repository.
	now := time.Now().UTC()
	err := fastImport(git, filepath.Join(root, "fleet.git"), now, func(write writeFunc) error {
		write("refs/heads/"+report.DefaultApprovalsBranch, "approvals", "README.md", "approvals and controls\n")
		return nil
	})
	if err != nil {
		return err
	}
	return fastImport(git, filepath.Join(root, statusRepo), now, func(write writeFunc) error {
		for i := range clusters {
			name := synthfleet.ClusterName(i)
			st := &report.Status{APIVersion: report.APIVersion, Kind: report.Kind, Cluster: fleet.Cluster{Name: name, Region: "eu-west-1"},
				Agent: "bench", Phase: report.ClusterReady, AppliedRevision: strings.Repeat("0", 40), SeenRevision: strings.Repeat("0", 40), ReportedAt: now}
			data, err := yaml.Marshal(st)
			if err != nil {
				return err
			}
			write("refs/heads/"+report.Branch("", name), "status("+name+"): Ready", report.Path(name), string(data))
		}
		return nil
	})
}

// writeFunc writes one commit of one file on a ref.
type writeFunc func(ref, msg, path, file string)

// fastImport writes commits into a bare repository with git fast-import.
func fastImport(git, repo string, now time.Time, commits func(writeFunc) error) error {
	cmd := exec.Command(git, "-C", repo, "fast-import", "--quiet")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	err = commits(func(ref, msg, path, file string) {
		fmt.Fprintf(stdin, "commit %s\ncommitter flotilla <flotilla@flotilla.dev> %d +0000\ndata %d\n%s\nM 100644 inline %s\ndata %d\n%s\n",
			ref, now.Unix(), len(msg), msg, path, len(file), file)
	})
	if cerr := stdin.Close(); err == nil {
		err = cerr
	}
	if werr := cmd.Wait(); err == nil {
		err = werr
	}
	return err
}

// host is the Git server: git http-backend for every repository under
// its root, one request at a time, each request's git processes' CPU
// and bytes counted by kind.
type host struct {
	url   string
	srv   *http.Server
	cgi   *cgi.Handler
	mu    sync.Mutex
	stats map[string]*kindStats
	// ignore: requests are served, not counted.
	ignore atomic.Bool
}

// kindStats are the totals of one kind of request.
type kindStats struct {
	requests int
	cpu      time.Duration
	in, out  int64
}

func startHost(git, root string) (*host, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &host{url: "http://" + l.Addr().String(), stats: map[string]*kindStats{},
		cgi: &cgi.Handler{Path: git, Args: []string{"http-backend"}, Dir: root,
			Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}}
	h.srv = &http.Server{Handler: h, ReadHeaderTimeout: time.Minute}
	go func() { _ = h.srv.Serve(l) }()
	return h, nil
}

func (h *host) close() { _ = h.srv.Close() }

// ServeHTTP serves one request, alone, and counts it.
func (h *host) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	kind := requestKind(r)
	body := &countingReader{r: r.Body}
	r.Body = io.NopCloser(body)
	cw := &countingWriter{ResponseWriter: w}
	before := childCPU()
	h.cgi.ServeHTTP(cw, r)
	if h.ignore.Load() {
		return
	}
	s := h.stats[kind]
	if s == nil {
		s = &kindStats{}
		h.stats[kind] = s
	}
	s.requests++
	s.cpu += childCPU() - before
	s.in += body.n
	s.out += cw.n
}

// requestKind names what a request asks of Git.
func requestKind(r *http.Request) string {
	switch {
	case strings.HasSuffix(r.URL.Path, "/info/refs"):
		return "advertise " + r.URL.Query().Get("service")
	case strings.HasSuffix(r.URL.Path, "/git-upload-pack"):
		return "git-upload-pack"
	case strings.HasSuffix(r.URL.Path, "/git-receive-pack"):
		return "git-receive-pack"
	}
	return "other"
}

// snapshot copies the totals.
func (h *host) snapshot() map[string]kindStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]kindStats{}
	for k, s := range h.stats {
		out[k] = *s
	}
	return out
}

// since is what n operations of one kind cost the server since before.
func (h *host) since(before map[string]kindStats, name string, n int, wall time.Duration) opResult {
	op := opResult{name: name, n: n, wall: wall / time.Duration(n), byKind: map[string]time.Duration{}}
	for k, s := range h.snapshot() {
		b := before[k]
		op.requests += float64(s.requests-b.requests) / float64(n)
		op.cpu += (s.cpu - b.cpu) / time.Duration(n)
		op.in += float64(s.in-b.in) / float64(n)
		op.out += float64(s.out-b.out) / float64(n)
		if d := (s.cpu - b.cpu) / time.Duration(n); d > 0 {
			op.byKind[k] = d
		}
	}
	return op
}

// childCPU is the user and system CPU of the process's waited-for
// children (and theirs): the git processes of the requests served.
func childCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// print prints the result and what a host needs for the fleet: every
// agent polls once per interval; a fleet commit makes every agent fetch
// and report (and, with waves, read every status); the approvals branch
// is read when it moves, not per commit.
func (res *result) print(w io.Writer, interval time.Duration) {
	fmt.Fprintf(w, "\n%d clusters, status branches in %s repository:\n", res.clusters, map[string]string{"shared": "the fleet", "separate": "their own"}[res.layout])
	fmt.Fprintf(w, "  %-9s %9s %9s %10s %12s %12s   %s\n", "operation", "wall", "requests", "server CPU", "bytes in", "bytes out", "server CPU by request")
	byName := map[string]opResult{}
	for _, op := range res.ops {
		byName[op.name] = op
		var kinds []string
		for _, k := range slices.Sorted(maps.Keys(op.byKind)) {
			kinds = append(kinds, fmt.Sprintf("%s %s", k, ms(op.byKind[k])))
		}
		fmt.Fprintf(w, "  %-9s %9s %9.1f %10s %12s %12s   %s\n", op.name, ms(op.wall), op.requests, ms(op.cpu), size(op.in), size(op.out), strings.Join(kinds, ", "))
	}
	n := float64(res.clusters)
	idle := n * byName["poll"].cpu.Seconds() / interval.Seconds()
	// Agents read the approvals branch only when it moved: a commit is a
	// fetch and a report per agent.
	commit := n * (byName["fetch"].cpu + byName["report"].cpu).Seconds()
	waves := n * byName["read-all"].cpu.Seconds()
	fmt.Fprintf(w, "  host needs: idle %.2f cores (every agent polls each %s, %s/s out); a fleet commit %.0f CPU s (%s out) — with waves %.0f CPU s more (%s out)\n",
		idle, interval, size(n*byName["poll"].out/interval.Seconds()), commit,
		size(n*(byName["fetch"].out+byName["report"].out)), waves, size(n*byName["read-all"].out))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func size(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}
