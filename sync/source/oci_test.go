package source_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/ssh"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/flotilla-gitops/flotilla/internal/gittest"
	"github.com/flotilla-gitops/flotilla/internal/registrytest"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// ociFleet is a fleet repository of two commits, and a registry with
// authentication (the CNCF Distribution registry the Helm tests start).
func ociFleet(t *testing.T) (repo *gittest.Repo, reg *registrytest.Registry, a source.Auth, commits []string) {
	t.Helper()
	repo = gittest.New(t)
	c1 := repo.CommitMessage(map[string]string{"fleet.cue": "package fleet\n// one\n", "charts/web/Chart.yaml": "name: web\nversion: 1.0.0\n"}, "the first")
	c2 := repo.CommitMessage(map[string]string{"fleet.cue": "package fleet\n// two\n"}, "the second\n\nFlotilla-Revert: "+c1)
	reg = registrytest.Start(t, true)
	pw := filepath.Join(t.TempDir(), "registry-password")
	if err := os.WriteFile(pw, []byte(reg.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return repo, reg, source.Auth{Username: reg.Username, PasswordFile: pw}, []string{c1, c2}
}

func publish(t *testing.T, repo *gittest.Repo, reg *registrytest.Registry, a source.Auth, revision, tag string) *source.Published {
	t.Helper()
	g, err := git.PlainOpen(repo.Work)
	if err != nil {
		t.Fatal(err)
	}
	p, err := source.Publish(context.Background(), source.PublishOptions{Repo: g, Revision: revision, To: "oci://" + reg.Host + "/fleets/prod:" + tag, Auth: a})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOCIFleet: a fleet published at a commit is followed through its
// tag: a poll is one HEAD request, the revision is the commit, the files
// are the commit's (and its time and message come along); a newer
// publish moves the tag and an older commit is still reachable by its
// own tag; the same commit publishes to the same digest; a digest pin
// stays; a wrong password and a registry that is down say so without the
// password.
func TestOCIFleet(t *testing.T) {
	repo, reg, a, commits := ociFleet(t)
	first := publish(t, repo, reg, a, commits[0], "stable")
	if first.Revision != commits[0] || first.Files != 2 || len(first.Tags) != 2 {
		t.Fatalf("published %+v", first)
	}
	src, err := source.New(source.Options{URL: "oci://" + reg.Host + "/fleets/prod:stable", Auth: a, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if head, err := src.Head(ctx); err != nil || head != commits[0] {
		t.Fatalf("head %s, %v; want %s", head, err, commits[0])
	}
	before := reg.Requests.Load()
	if head, err := src.Head(ctx); err != nil || head != commits[0] {
		t.Fatalf("second head %s, %v", head, err)
	}
	if n := reg.Requests.Load() - before; n != 1 {
		t.Errorf("an idle poll made %d requests, want 1 (HEAD of the tag)", n)
	}
	co, err := src.Fetch(ctx, commits[0])
	if err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(co.Dir, "fleet.cue")); err != nil || string(data) != "package fleet\n// one\n" {
		t.Errorf("fleet.cue: %q %v", data, err)
	}
	if _, err := os.Stat(filepath.Join(co.Dir, ".git")); !os.IsNotExist(err) {
		t.Errorf("the artifact holds .git: %v", err)
	}
	if co.Committed.IsZero() || !strings.Contains(co.Message, "the first") {
		t.Errorf("commit time %v, message %q", co.Committed, co.Message)
	}

	second := publish(t, repo, reg, a, commits[1], "stable")
	if head, err := src.Head(ctx); err != nil || head != commits[1] {
		t.Fatalf("head after a publish: %s, %v", head, err)
	}
	if co, err := src.Fetch(ctx, commits[1]); err != nil || !strings.Contains(co.Message, "Flotilla-Revert: "+commits[0]) {
		t.Fatalf("second fetch: %v %+v", err, co)
	}
	if co, err := src.FetchRevision(ctx, commits[0]); err != nil || co.Revision != commits[0] {
		t.Fatalf("the older commit by its tag: %v", err)
	}
	if again := publish(t, repo, reg, a, commits[0], "again"); again.Digest != first.Digest {
		t.Errorf("the same commit published to %s, then %s", first.Digest, again.Digest)
	}
	pinned, err := source.New(source.Options{URL: "oci://" + reg.Host + "/fleets/prod@" + first.Digest, Auth: a, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if head, err := pinned.Head(ctx); err != nil || head != commits[0] || second.Digest == first.Digest {
		t.Errorf("a digest pin: %s, %v", head, err)
	}

	bad := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(bad, []byte("not-the-password"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrong, _ := source.New(source.Options{URL: "oci://" + reg.Host + "/fleets/prod:stable", Auth: source.Auth{Username: reg.Username, PasswordFile: bad}, CacheDir: t.TempDir()})
	if _, err := wrong.Head(ctx); err == nil || strings.Contains(err.Error(), "not-the-password") || !strings.Contains(err.Error(), "fleets/prod") {
		t.Errorf("a wrong password: %v", err)
	}
	down, stop := registrytest.Serve()
	stop()
	gone, _ := source.New(source.Options{URL: "oci://" + down.Host + "/fleets/prod:stable", CacheDir: t.TempDir()})
	if _, err := gone.Head(ctx); err == nil || !strings.Contains(err.Error(), "fleets/prod") {
		t.Errorf("a registry that is down: %v", err)
	}
}

// TestOCIFleetRefusesHostileArtifacts: an artifact of the fleet's type
// whose layer names a path outside the fleet, holds a symbolic link, or
// does not match its digest is refused, and nothing is written outside
// the cache (a canary file next to it stays as it was).
func TestOCIFleetRefusesHostileArtifacts(t *testing.T) {
	reg := registrytest.Start(t, false)
	ctx := context.Background()
	repo, err := remote.NewRepository(reg.Host + "/fleets/evil")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP, repo.Client = true, &auth.Client{}
	root := t.TempDir()
	canary := filepath.Join(root, "canary")
	if err := os.WriteFile(canary, []byte("untouched"), 0o600); err != nil {
		t.Fatal(err)
	}
	revision := strings.Repeat("ab", 20)
	for name, entry := range map[string]tar.Header{
		"dot-dot":  {Typeflag: tar.TypeReg, Name: "../../canary", Size: 5, Mode: 0o644},
		"absolute": {Typeflag: tar.TypeReg, Name: canary, Size: 5, Mode: 0o644},
		"symlink":  {Typeflag: tar.TypeSymlink, Name: "fleet.cue", Linkname: canary, Mode: 0o777},
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			gz := gzip.NewWriter(&buf)
			tw := tar.NewWriter(gz)
			if err := tw.WriteHeader(&entry); err != nil {
				t.Fatal(err)
			}
			if entry.Size > 0 {
				_, _ = tw.Write([]byte("owned"))
			}
			_ = tw.Close()
			_ = gz.Close()
			layer := ocispec.Descriptor{MediaType: source.LayerMediaType, Digest: digest.FromBytes(buf.Bytes()), Size: int64(buf.Len())}
			if err := repo.Push(ctx, layer, bytes.NewReader(buf.Bytes())); err != nil {
				t.Fatal(err)
			}
			m, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, source.ArtifactType, oras.PackManifestOptions{
				Layers: []ocispec.Descriptor{layer}, ManifestAnnotations: map[string]string{ocispec.AnnotationRevision: revision}})
			if err != nil {
				t.Fatal(err)
			}
			if err := repo.Tag(ctx, m, name); err != nil {
				t.Fatal(err)
			}
			src, err := source.New(source.Options{URL: "oci://" + reg.Host + "/fleets/evil:" + name, CacheDir: filepath.Join(root, "cache", "a", "b")})
			if err != nil {
				t.Fatal(err)
			}
			if head, err := src.Head(ctx); err != nil || head != revision {
				t.Fatalf("head: %s %v", head, err)
			}
			if _, err := src.Fetch(ctx, revision); err == nil || !strings.Contains(err.Error(), "refused") {
				t.Errorf("fetch: %v, want a refusal", err)
			}
			if data, _ := os.ReadFile(canary); string(data) != "untouched" {
				t.Fatalf("the canary outside the cache: %q", data)
			}
		})
	}
}

// TestOCIFleetIsVerified: an artifact carries its commit object, whose
// tree its files must hash to, so a --verify-key agent checks a published
// fleet as it checks a Git commit: a commit signed by a trusted key is
// accepted (the signature the author made, carried), an unsigned one is
// refused, an unsigned one that a trusted publisher signed (publish
// --sign-key) is accepted, a stranger's publisher signature is refused;
// and an artifact whose files are not its commit's tree is refused when
// pulled, verification or not.
func TestOCIFleetIsVerified(t *testing.T) {
	repo, reg, a, _ := ociFleet(t)
	author, authorKey := gittest.NewSSHKey(t)
	publisher, publisherKey := gittest.NewSSHKey(t)
	stranger, _ := gittest.NewSSHKey(t)
	v, err := source.NewVerifier(authorKey, publisherKey)
	if err != nil {
		t.Fatal(err)
	}
	g, err := git.PlainOpen(repo.Work)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	fetch := func(tag string, revision string, signer ssh.Signer) (*source.Checkout, error) {
		t.Helper()
		to := "oci://" + reg.Host + "/fleets/signed:" + tag
		if _, err := source.Publish(ctx, source.PublishOptions{Repo: g, Revision: revision, To: to, Auth: a, Signer: signer}); err != nil {
			t.Fatal(err)
		}
		src, err := source.New(source.Options{URL: to, Auth: a, CacheDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := src.Head(ctx); err != nil {
			t.Fatal(err)
		}
		return src.Fetch(ctx, revision)
	}
	signed := repo.SignedCommit(author, map[string]string{"fleet.cue": "package fleet\n// signed\n"})
	co, err := fetch("signed", signed, nil)
	if err != nil {
		t.Fatal(err)
	}
	if who, err := v.Verify(co); err != nil || who != ssh.FingerprintSHA256(author.PublicKey()) {
		t.Errorf("a signed commit: %q %v", who, err)
	}
	unsigned := repo.Commit(map[string]string{"fleet.cue": "package fleet\n// unsigned\n"})
	if co, err = fetch("unsigned", unsigned, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(co); !errors.Is(err, source.ErrUnsigned) {
		t.Errorf("an unsigned commit: %v", err)
	}
	if co, err = fetch("published", unsigned, publisher); err != nil {
		t.Fatal(err)
	}
	if who, err := v.Verify(co); err != nil || who != ssh.FingerprintSHA256(publisher.PublicKey()) {
		t.Errorf("a publisher's signature: %q %v", who, err)
	}
	if co, err = fetch("stranger", unsigned, stranger); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(co); !errors.Is(err, source.ErrUntrusted) {
		t.Errorf("a stranger's publisher signature: %v", err)
	}

	// Another layer under the signed commit's annotations: refused at pull.
	remoteRepo, err := remote.NewRepository(reg.Host + "/fleets/signed")
	if err != nil {
		t.Fatal(err)
	}
	remoteRepo.PlainHTTP = true
	remoteRepo.Client = &auth.Client{Credential: auth.StaticCredential(reg.Host, auth.Credential{Username: reg.Username, Password: reg.Password})}
	good, err := remoteRepo.Resolve(ctx, "signed")
	if err != nil {
		t.Fatal(err)
	}
	data, err := content.FetchAll(ctx, remoteRepo.Manifests(), good)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	body := "package fleet\n// not what was signed\n"
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "fleet.cue", Size: int64(len(body)), Mode: 0o644})
	_, _ = tw.Write([]byte(body))
	_ = tw.Close()
	_ = gz.Close()
	layer := ocispec.Descriptor{MediaType: source.LayerMediaType, Digest: digest.FromBytes(buf.Bytes()), Size: int64(buf.Len())}
	if err := remoteRepo.Push(ctx, layer, bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	forged, err := oras.PackManifest(ctx, remoteRepo, oras.PackManifestVersion1_1, source.ArtifactType,
		oras.PackManifestOptions{Layers: []ocispec.Descriptor{layer}, ManifestAnnotations: m.Annotations})
	if err != nil {
		t.Fatal(err)
	}
	if err := remoteRepo.Tag(ctx, forged, "forged"); err != nil {
		t.Fatal(err)
	}
	src, err := source.New(source.Options{URL: "oci://" + reg.Host + "/fleets/signed:forged", Auth: a, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if head, err := src.Head(ctx); err != nil || head != signed {
		t.Fatalf("forged head: %s %v", head, err)
	}
	if _, err := src.Fetch(ctx, signed); err == nil || !strings.Contains(err.Error(), "not the tree of commit") {
		t.Errorf("files that are not the commit's tree: %v", err)
	}
}
