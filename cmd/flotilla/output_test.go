package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/internal/version"
)

// TestListPrintsWhatWritePrints: a list printed element by element (batch
// commands that keep nothing) is, byte for byte, the whole list printed at
// once, in JSON and YAML, for no element, one and several, with values
// JSON escapes.
func TestListPrintsWhatWritePrints(t *testing.T) {
	type item struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels,omitempty"`
		Values []int             `json:"values"`
		Note   string            `json:"note,omitempty"`
	}
	all := []item{
		{Name: "a", Labels: map[string]string{"env": "prod", "x": "<&>"}, Values: []int{1, 2}},
		{Name: "b", Values: nil, Note: "multi\nline: value"},
		{Name: "c", Values: []int{}, Note: "- not a list"},
	}
	for _, format := range []string{"json", "yaml"} {
		for _, n := range []int{0, 1, 3} {
			o := &outputFlag{format: format}
			var whole, streamed bytes.Buffer
			if err := o.write(&whole, all[:n], nil); err != nil {
				t.Fatal(err)
			}
			l := o.list(&streamed)
			for _, it := range all[:n] {
				if err := l.add(it); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.close(); err != nil {
				t.Fatal(err)
			}
			if whole.String() != streamed.String() {
				t.Errorf("%s, %d elements: element by element\n%s\nwhole\n%s", format, n, streamed.String(), whole.String())
			}
		}
	}
}

// TestRequestsNameFlotilla: the client configuration of every command that
// talks to a cluster names Flotilla and its version as the user agent,
// whatever the binary is called (audit logs and request metrics show it).
func TestRequestsNameFlotilla(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err := (&kubeFlags{kubeconfig: kubeconfig}).restConfig()
	if err != nil {
		t.Fatal(err)
	}
	if want := "flotilla/" + version.Get().Version + " ("; !strings.HasPrefix(rc.UserAgent, want) {
		t.Errorf("user agent %q, want it to start with %q", rc.UserAgent, want)
	}
}
