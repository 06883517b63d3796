package gittest

import (
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fluxcd/gitkit"
	"github.com/fluxcd/pkg/gittestserver"
)

// quiet silences the git servers' per-request log. gitkit, under
// gittestserver, writes a line for every request to the standard library's
// global logger (thousands of lines per test run); Flotilla logs through
// logr and never through that logger, so it is turned off here, the one
// place that starts these servers, before any starts.
func quiet() { log.SetOutput(io.Discard) }

// newServer makes a gittestserver holding fleet.git (one commit with
// fleet.cue on main), removed when the test ends.
func newServer(t testing.TB) *gittestserver.GitServer {
	t.Helper()
	quiet()
	srv, err := gittestserver.NewTempGitServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(srv.Root()) })
	fixture := t.TempDir()
	if err := os.WriteFile(filepath.Join(fixture, "fleet.cue"), []byte("package fleet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := srv.InitRepo(fixture, "main", "fleet.git"); err != nil {
		t.Fatal(err)
	}
	return srv
}

// HTTPServer serves a repository fleet.git (one commit with fleet.cue on
// main) over HTTP with basic auth, on fluxcd's gittestserver, until the
// test ends; it returns the repository's URL.
func HTTPServer(t testing.TB, username, password string) string {
	t.Helper()
	srv := newServer(t)
	srv.Auth(username, password)
	if err := srv.StartHTTP(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.StopHTTP)
	return srv.HTTPAddress() + "/fleet.git"
}

// ServeHTTP serves the bare repository of r over HTTP with basic auth until
// the test ends, and returns its URL: tests write to r (commits, or git
// fast-import into r.Bare) and readers use the URL.
func (r *Repo) ServeHTTP(username, password string) string {
	r.t.Helper()
	quiet()
	srv := gittestserver.NewGitServer(filepath.Dir(r.Bare))
	srv.Auth(username, password)
	if err := srv.StartHTTP(); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(srv.StopHTTP)
	return srv.HTTPAddress() + "/" + filepath.Base(r.Bare)
}

// SSHServer serves fleet.git over SSH until the test ends, accepting only
// the client key authorised (in authorized_keys format, without a
// comment). It returns the repository's URL and a known_hosts line for the
// server's host key.
func SSHServer(t testing.TB, authorised string) (repoURL, knownHosts string) {
	t.Helper()
	srv := newServer(t)
	keyDir := t.TempDir()
	srv.KeyDir(keyDir)
	srv.Auth("git", "unused")
	srv.PublicKeyLookupFunc(func(content string) (*gitkit.PublicKey, error) {
		if content == authorised {
			return &gitkit.PublicKey{Id: "fleet-reader"}, nil
		}
		return nil, errors.New("unknown key")
	})
	if err := srv.ListenSSH(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.StartSSH() }()
	t.Cleanup(func() { _ = srv.StopSSH() })

	repoURL = srv.SSHAddress() + "/fleet.git"
	u, err := url.Parse(repoURL)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := os.ReadFile(filepath.Join(keyDir, "gitkit.rsa.pub"))
	if err != nil {
		t.Fatal(err)
	}
	return repoURL, "[" + u.Hostname() + "]:" + u.Port() + " " + string(hostKey)
}

// SilentServer listens on a local port, accepts every connection and
// never answers (a Git host that hangs), until the test ends. It returns
// an http:// repository URL on it.
func SilentServer(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var held []net.Conn // open, never answered
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return "http://" + l.Addr().String() + "/fleet.git"
}

// ServeHTTPOpen serves the bare repository of r over HTTP without
// authentication until the test ends, and returns its URL (for clients,
// such as Flux's source-controller, that refuse credentials over plain
// HTTP).
func (r *Repo) ServeHTTPOpen() string {
	r.t.Helper()
	quiet()
	srv := gittestserver.NewGitServer(filepath.Dir(r.Bare))
	if err := srv.StartHTTP(); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(srv.StopHTTP)
	return srv.HTTPAddress() + "/" + filepath.Base(r.Bare)
}

// Requests counts what a Git HTTP server was asked, by kind: "advertise
// git-upload-pack" (a ref advertisement for a fetch or ls-remote),
// "git-upload-pack" (a fetch's pack), "advertise git-receive-pack" and
// "git-receive-pack" (a push).
type Requests struct {
	mu     sync.Mutex
	counts map[string]int
}

// Take returns the counts since the last Take, and starts again.
func (r *Requests) Take() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.counts
	r.counts = map[string]int{}
	return out
}

// ServeBackend serves the bare repository of r with git http-backend —
// the smart HTTP server Git itself ships, pushes allowed — until the test
// ends, counting the requests by kind. It returns the repository's URL.
func (r *Repo) ServeBackend() (string, *Requests) {
	r.t.Helper()
	git, err := exec.LookPath("git")
	if err != nil {
		r.t.Fatal("git http-backend needs git: ", err)
	}
	Git(r.t, r.Bare, "config", "http.receivepack", "true")
	root := filepath.Dir(r.Bare)
	backend := &cgi.Handler{Path: git, Args: []string{"http-backend"}, Dir: root,
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}
	reqs := &Requests{counts: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		kind := "other"
		switch {
		case strings.HasSuffix(req.URL.Path, "/info/refs"):
			kind = "advertise " + req.URL.Query().Get("service")
		case strings.HasSuffix(req.URL.Path, "/git-upload-pack"):
			kind = "git-upload-pack"
		case strings.HasSuffix(req.URL.Path, "/git-receive-pack"):
			kind = "git-receive-pack"
		}
		reqs.mu.Lock()
		reqs.counts[kind]++
		reqs.mu.Unlock()
		backend.ServeHTTP(w, req)
	}))
	r.t.Cleanup(srv.Close)
	return srv.URL + "/" + filepath.Base(r.Bare), reqs
}
