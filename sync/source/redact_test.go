package source_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/flotilla-gitops/flotilla/sync/source"
)

// TestRedactURL checks that no part of a URL's user information survives
// — a user name can be a token — and that SSH addresses keep their user.
func TestRedactURL(t *testing.T) {
	for raw, want := range map[string]string{
		"https://git.example.com/fleet.git":                    "https://git.example.com/fleet.git",
		"https://ghp_t0ken@git.example.com/fleet.git":          "https://***@git.example.com/fleet.git",
		"https://x-access-token:s3cret@git.example.com/f.git":  "https://***@git.example.com/f.git",
		"https://user:p@ss@word@git.example.com/fleet.git":     "https://***@git.example.com/fleet.git",
		"ssh://git@git.example.com/fleet.git":                  "ssh://***@git.example.com/fleet.git",
		"git@git.example.com:platform/fleet.git":               "git@git.example.com:platform/fleet.git",
		"file:///srv/fleet.git":                                "file:///srv/fleet.git",
		"https://user:bad%zzpercent@git.example.com/fleet.git": "https://***@git.example.com/fleet.git",
	} {
		if got := source.RedactURL(raw); got != want {
			t.Errorf("%s: %s, want %s", raw, got, want)
		}
	}
}

// TestErrorsNeverShowCredentials points sources at a local port where
// nothing listens, with credentials in the URL in each way users write
// them: the errors name the repository, never the secret, and still say
// what went wrong to errors.Is.
func TestErrorsNeverShowCredentials(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	for _, tc := range []struct{ url, secret string }{
		{"https://tok3n-as-user@" + addr + "/fleet.git", "tok3n-as-user"},
		{"https://user:pa55@word@" + addr + "/fleet.git", "pa55@word"},
		{"http://x-access-token:s3cr3t-t0ken@" + addr + "/fleet.git", "s3cr3t-t0ken"},
	} {
		src, err := source.New(source.Options{URL: tc.url, CacheDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		_, err = src.Head(context.Background())
		if err == nil {
			t.Fatalf("%s: no error", tc.url)
		}
		if strings.Contains(err.Error(), tc.secret) || strings.Contains(err.Error(), strings.Split(tc.secret, "@")[0]) {
			t.Errorf("the error shows the secret: %v", err)
		}
		if !strings.Contains(err.Error(), addr) {
			t.Errorf("the error does not name the repository: %v", err)
		}
		var netErr net.Error
		if !errors.As(err, &netErr) && !strings.Contains(err.Error(), "refused") {
			t.Errorf("the cause is lost: %v", err)
		}
	}
}
