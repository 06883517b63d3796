package source

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	orasregistry "oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/internal/gitrev"
)

// A fleet in an OCI registry (issue 38): past what one Git host serves,
// registries — with their CDNs, replication and pull-through caches — are
// the distribution plane. `flotilla publish` packs the fleet's files at a
// commit as an OCI artifact (Publish); an agent given oci://REGISTRY/REPO
// follows its tag (or a pinned digest) with one HEAD request per poll,
// pulls only when the manifest's digest changed, and runs the same plan,
// render and apply. The revision stays the Git commit (an annotation), so
// status, rollouts and every reader speak of commits as before.

// OCIScheme prefixes a fleet kept in an OCI registry.
const OCIScheme = "oci://"

// The artifact's types and annotations.
const (
	ArtifactType     = "application/vnd.flotilla.fleet.v1"
	LayerMediaType   = "application/vnd.flotilla.fleet.content.v1.tar+gzip"
	AnnotationCommit = "dev.flotilla.commit.message"
	// AnnotationCommitObject is the commit object, base64: its hash is the
	// revision, its signature (if the commit is signed) the author's, its
	// tree hash what the layer's files must hash to.
	AnnotationCommitObject = "dev.flotilla.commit.object"
	// AnnotationSignature is the publisher's SSH signature of the commit
	// object (publish --sign-key), armored.
	AnnotationSignature = "dev.flotilla.signature"
	// PublishNamespace is the SSH signature namespace of a publisher's
	// signature.
	PublishNamespace = "flotilla-publish"
)

// MaxFleetArtifact bounds what a fleet artifact may unpack to (and its
// compressed layer): a registry is as untrusted as a Git remote.
const MaxFleetArtifact = 512 << 20

// maxFleetEntries bounds the files of a fleet artifact.
const maxFleetEntries = 200_000

// IsOCI reports whether a source URL names an OCI registry.
func IsOCI(url string) bool { return strings.HasPrefix(url, OCIScheme) }

// revisionRE is a Git commit hash, as the artifact's revision annotation
// must be.
var revisionRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// ociSource follows a fleet artifact's tag (or digest).
type ociSource struct {
	ref  orasregistry.Reference
	repo *remote.Repository
	mu   sync.Mutex
	// digest is the manifest last resolved, meta what it says.
	digest string
	meta   ociMeta
}

// ociMeta is what a fleet artifact's manifest says of its commit.
type ociMeta struct {
	revision  string
	committed time.Time
	message   string
	// commit is the commit object the artifact carries (nil for an
	// artifact without one), signature the publisher's.
	commit    *object.Commit
	raw       []byte
	signature string
}

// newOCI makes the registry client of a source: the credentials of
// opts.Auth (a user name and a password or token file), over HTTPS, or
// plain HTTP to a loopback host only.
func newOCI(opts Options) (*ociSource, error) {
	ref, err := orasregistry.ParseReference(strings.TrimPrefix(opts.URL, OCIScheme))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", RedactURL(opts.URL), err)
	}
	if ref.Reference == "" {
		ref.Reference = "latest"
	}
	repo, err := ociRepository(ref, opts.Auth)
	if err != nil {
		return nil, err
	}
	return &ociSource{ref: ref, repo: repo}, nil
}

// ociRepository is a registry client of ref's repository.
func ociRepository(ref orasregistry.Reference, a Auth) (*remote.Repository, error) {
	repo, err := remote.NewRepository(ref.Registry + "/" + ref.Repository)
	if err != nil {
		return nil, err
	}
	cred := auth.EmptyCredential
	if a.Username != "" || a.PasswordFile != "" {
		password, err := readSecretFile(a.PasswordFile)
		if err != nil {
			return nil, err
		}
		cred = auth.Credential{Username: a.Username, Password: password}
	}
	client := &auth.Client{Client: &http.Client{Timeout: DefaultTimeout}, Cache: auth.NewCache(),
		Credential: auth.StaticCredential(ref.Registry, cred)}
	client.SetUserAgent("flotilla")
	repo.Client = client
	host, _, err := net.SplitHostPort(ref.Registry)
	if err != nil {
		host = ref.Registry
	}
	ip := net.ParseIP(host)
	repo.PlainHTTP = host == "localhost" || (ip != nil && ip.IsLoopback())
	return repo, nil
}

// readSecretFile reads a password or token file, without its line end.
func readSecretFile(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	return strings.TrimRight(string(data), "\r\n"), nil
}

// head resolves the tag (or digest) with one HEAD request and returns the
// commit its artifact holds: the manifest is fetched only when its digest
// changed.
func (o *ociSource) head(ctx context.Context) (string, error) {
	desc, err := o.repo.Resolve(ctx, o.ref.Reference)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %s", o.ref, errtext.Error(err))
	}
	o.mu.Lock()
	if desc.Digest.String() == o.digest {
		defer o.mu.Unlock()
		return o.meta.revision, nil
	}
	o.mu.Unlock()
	meta, _, err := o.manifest(ctx, desc)
	if err != nil {
		return "", err
	}
	o.mu.Lock()
	o.digest, o.meta = desc.Digest.String(), meta
	o.mu.Unlock()
	return meta.revision, nil
}

// manifest fetches and checks a fleet artifact's manifest: its artifact
// type, one layer of the fleet's media type, and a commit.
func (o *ociSource) manifest(ctx context.Context, desc ocispec.Descriptor) (ociMeta, ocispec.Descriptor, error) {
	if desc.Size > 1<<20 {
		return ociMeta{}, ocispec.Descriptor{}, fmt.Errorf("%s: a manifest of %d bytes is not a fleet's", o.ref, desc.Size)
	}
	data, err := content.FetchAll(ctx, o.repo.Manifests(), desc) // checks the digest
	if err != nil {
		return ociMeta{}, ocispec.Descriptor{}, fmt.Errorf("fetching the manifest of %s: %s", o.ref, errtext.Error(err))
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return ociMeta{}, ocispec.Descriptor{}, fmt.Errorf("%s: the manifest does not read: %s", o.ref, errtext.Error(err))
	}
	if m.ArtifactType != ArtifactType || len(m.Layers) != 1 || m.Layers[0].MediaType != LayerMediaType {
		return ociMeta{}, ocispec.Descriptor{}, fmt.Errorf("%s is not a fleet published by flotilla publish (artifact type %q, %d layers)",
			o.ref, errtext.Clean(m.ArtifactType), len(m.Layers))
	}
	meta := ociMeta{revision: m.Annotations[ocispec.AnnotationRevision], message: m.Annotations[AnnotationCommit]}
	if !revisionRE.MatchString(meta.revision) {
		return ociMeta{}, ocispec.Descriptor{}, fmt.Errorf("%s: the artifact names no commit (annotation %s)", o.ref, ocispec.AnnotationRevision)
	}
	meta.committed, _ = time.Parse(time.RFC3339, m.Annotations[ocispec.AnnotationCreated])
	if enc := m.Annotations[AnnotationCommitObject]; enc != "" {
		if meta.raw, err = base64.StdEncoding.DecodeString(enc); err != nil {
			return ociMeta{}, ocispec.Descriptor{}, fmt.Errorf("%s: the artifact's commit object does not read", o.ref)
		}
		if meta.commit, err = decodeCommit(meta.raw, meta.revision); err != nil {
			return ociMeta{}, ocispec.Descriptor{}, fmt.Errorf("%s: %w", o.ref, err)
		}
	}
	meta.signature = m.Annotations[AnnotationSignature]
	return meta, m.Layers[0], nil
}

// pull writes the files of the artifact of revision into dir: the one head
// resolved when it is that revision, else the one tagged with the commit
// (publish tags both).
func (o *ociSource) pull(ctx context.Context, revision, dir string) (ociMeta, error) {
	o.mu.Lock()
	reference := revision
	if o.meta.revision == revision && o.digest != "" {
		reference = o.digest
	}
	o.mu.Unlock()
	desc, err := o.repo.Resolve(ctx, reference)
	if err != nil {
		return ociMeta{}, fmt.Errorf("resolving %s:%s: %s", o.ref.Repository, gitrev.Short(reference), errtext.Error(err))
	}
	meta, layer, err := o.manifest(ctx, desc)
	if err != nil {
		return ociMeta{}, err
	}
	if meta.revision != revision {
		return ociMeta{}, fmt.Errorf("%s: the artifact holds commit %s, not %s", o.ref, gitrev.Short(meta.revision), gitrev.Short(revision))
	}
	if layer.Size > MaxFleetArtifact {
		return ociMeta{}, fmt.Errorf("%s: a layer of %d bytes is over the %d a fleet may have", o.ref, layer.Size, MaxFleetArtifact)
	}
	rc, err := o.repo.Fetch(ctx, layer)
	if err != nil {
		return ociMeta{}, fmt.Errorf("fetching the fleet of %s: %s", o.ref, errtext.Error(err))
	}
	defer rc.Close()
	// The layer is read through its digest's verifier: a tampered blob
	// fails at its end, and the partial folder is removed by the caller.
	verified := content.NewVerifyReader(rc, layer)
	if err := untarFleet(verified, dir); err != nil {
		return ociMeta{}, fmt.Errorf("%s: %w", o.ref, err)
	}
	if err := verified.Verify(); err != nil {
		return ociMeta{}, fmt.Errorf("%s: the fleet's layer does not match its digest: %w", o.ref, err)
	}
	// The files are the commit's: they hash to its tree.
	if meta.commit != nil {
		tree, err := TreeHash(dir)
		if err != nil {
			return ociMeta{}, err
		}
		if tree != meta.commit.TreeHash {
			return ociMeta{}, fmt.Errorf("%s: the artifact's files are not the tree of commit %s (they hash to %s, the commit names %s): refused",
				o.ref, gitrev.Short(revision), gitrev.Short(tree.String()), gitrev.Short(meta.commit.TreeHash.String()))
		}
	}
	return meta, nil
}

// untarFleet unpacks a fleet layer into dir: regular files and folders
// only, every name a local path (no "..", no absolute path, no link of any
// kind), within MaxFleetArtifact bytes and maxFleetEntries files.
func untarFleet(r io.Reader, dir string) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("the fleet's layer is not gzip: %w", err)
	}
	tr := tar.NewReader(gz)
	var total int64
	for n := 0; ; n++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("the fleet's layer does not read: %w", err)
		}
		if n >= maxFleetEntries {
			return fmt.Errorf("the fleet's layer has more than %d entries", maxFleetEntries)
		}
		name := filepath.FromSlash(strings.TrimSuffix(h.Name, "/"))
		if !filepath.IsLocal(name) {
			return fmt.Errorf("the fleet's layer names %q, outside the fleet: refused", errtext.Clean(h.Name))
		}
		path := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			total += h.Size
			if total > MaxFleetArtifact {
				return fmt.Errorf("the fleet unpacks to more than %d bytes", MaxFleetArtifact)
			}
			if err := writeFleetFile(path, tr, h); err != nil {
				return err
			}
		default:
			return fmt.Errorf("the fleet's layer holds %q, which is not a regular file or folder (a link?): refused", errtext.Clean(h.Name))
		}
	}
	return nil
}

// writeFleetFile writes one file of the layer; its folders are made, and
// a file already there (a second entry of one name) is refused.
func writeFleetFile(path string, r io.Reader, h *tar.Header) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if h.Mode&0o111 != 0 {
		mode = 0o755
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("the fleet's layer: %w", err)
	}
	if _, err := io.CopyN(f, r, h.Size); err != nil {
		_ = f.Close()
		return fmt.Errorf("the fleet's layer: %w", err)
	}
	return f.Close()
}

// checkoutOCI is Fetch for a fleet artifact: the files of the revision's
// artifact in a folder of the cache named after it (kept: it is renamed
// into place only once complete), pulled when not there.
func (s *Source) checkoutOCI(ctx context.Context, revision string) (*Checkout, error) {
	if !revisionRE.MatchString(revision) {
		return nil, fmt.Errorf("revision %q is not a commit hash", errtext.Clean(revision))
	}
	dir := filepath.Join(s.opts.CacheDir, revision)
	metaFile := dir + ".oci.json"
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		if co, err := readOCIMeta(metaFile, dir, revision); err == nil {
			return co, nil
		}
	}
	_ = os.RemoveAll(dir)
	tmp := dir + ".partial"
	_ = os.RemoveAll(tmp)
	ctx, cancel := s.bounded(ctx, "pulling "+revision)
	defer cancel()
	meta, err := s.oci.pull(ctx, revision, tmp)
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, timedOut(ctx, err)
	}
	data, err := json.Marshal(ociMetaFile{Committed: meta.committed, Message: meta.message, Commit: meta.raw, Signature: meta.signature})
	if err == nil {
		err = os.WriteFile(metaFile, data, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, dir)
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	return &Checkout{Dir: dir, Revision: revision, Committed: meta.committed, Message: meta.message,
		Commit: meta.commit, RawCommit: meta.raw, Signature: meta.signature}, nil
}

// ociMetaFile keeps, beside a pulled fleet, what its manifest said of the
// commit.
type ociMetaFile struct {
	Committed time.Time `json:"committed"`
	Message   string    `json:"message"`
	Commit    []byte    `json:"commit,omitempty"`
	Signature string    `json:"signature,omitempty"`
}

func readOCIMeta(path, dir, revision string) (*Checkout, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m ociMetaFile
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	co := &Checkout{Dir: dir, Revision: revision, Committed: m.Committed, Message: m.Message, RawCommit: m.Commit, Signature: m.Signature}
	if len(m.Commit) > 0 {
		if co.Commit, err = decodeCommit(m.Commit, revision); err != nil {
			return nil, err
		}
	}
	return co, nil
}

// decodeCommit reads the commit object an artifact carries, and checks
// that it is the commit the artifact names.
func decodeCommit(raw []byte, revision string) (*object.Commit, error) {
	if len(raw) > maxCommitObject {
		return nil, errors.New("the artifact's commit object is too large")
	}
	if h := plumbing.ComputeHash(plumbing.CommitObject, raw); h.String() != revision {
		return nil, fmt.Errorf("the artifact's commit object is %s, not the commit %s it names: refused", gitrev.Short(h.String()), gitrev.Short(revision))
	}
	obj := &plumbing.MemoryObject{}
	obj.SetType(plumbing.CommitObject)
	if _, err := obj.Write(raw); err != nil {
		return nil, err
	}
	var c object.Commit
	if err := c.Decode(obj); err != nil {
		return nil, fmt.Errorf("the artifact's commit object does not read: %w", err)
	}
	return &c, nil
}

// TreeHash is the Git tree hash of a folder of regular files (as Git
// would store them: 100755 when executable, else 100644), so that files
// unpacked from an artifact are checked against the commit they claim.
func TreeHash(dir string) (plumbing.Hash, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	tree := &object.Tree{}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		switch {
		case e.Type().IsDir():
			h, err := TreeHash(path)
			if err != nil {
				return plumbing.ZeroHash, err
			}
			tree.Entries = append(tree.Entries, object.TreeEntry{Name: e.Name(), Mode: filemode.Dir, Hash: h})
		case e.Type().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return plumbing.ZeroHash, err
			}
			info, err := e.Info()
			if err != nil {
				return plumbing.ZeroHash, err
			}
			mode := filemode.Regular
			if info.Mode()&0o111 != 0 {
				mode = filemode.Executable
			}
			tree.Entries = append(tree.Entries, object.TreeEntry{Name: e.Name(), Mode: mode, Hash: plumbing.ComputeHash(plumbing.BlobObject, data)})
		default:
			return plumbing.ZeroHash, fmt.Errorf("%s is not a regular file or folder", path)
		}
	}
	// Git orders a tree's entries by name, a folder's as if it ended in "/".
	slices.SortFunc(tree.Entries, func(a, b object.TreeEntry) int {
		return strings.Compare(gitSortName(a), gitSortName(b))
	})
	obj := &plumbing.MemoryObject{}
	if err := tree.Encode(obj); err != nil {
		return plumbing.ZeroHash, err
	}
	return obj.Hash(), nil
}

func gitSortName(e object.TreeEntry) string {
	if e.Mode == filemode.Dir {
		return e.Name + "/"
	}
	return e.Name
}
