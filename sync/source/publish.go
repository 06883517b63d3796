package source

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/hiddeco/sshsig"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/ssh"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/errdef"
	orasregistry "oras.land/oras-go/v2/registry"

	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/internal/gitrev"
)

// PublishOptions say what to publish where.
type PublishOptions struct {
	// Repo is the fleet's Git repository; Revision the commit (default
	// HEAD).
	Repo     *git.Repository
	Revision string
	// To is oci://REGISTRY/REPO[:TAG] (default tag: latest).
	To   string
	Auth Auth
	// Source, when set, is the repository's address for the artifact's
	// source annotation (credentials removed).
	Source string
	// Signer, when set, signs the commit object as the publisher (an SSH
	// signature, namespace PublishNamespace), for agents whose
	// --verify-key trusts the publisher rather than the commit's author.
	Signer ssh.Signer
}

// Published is what Publish pushed.
type Published struct {
	Revision string
	Digest   string
	// Tags are the tags pointing at it: the one asked for and the commit.
	Tags  []string
	Files int
	Size  int64
}

// maxCommitMessage bounds the commit message the artifact carries (the
// agent reads a revert's trailer from it).
const maxCommitMessage = 4096

// Publish packs the files of the commit's tree — every file Git tracks at
// that commit, nothing untracked, no history — into one reproducible
// layer (sorted, owned by nobody, dated at the commit), and pushes it as a
// fleet artifact tagged with the tag and with the commit: the same commit
// publishes to the same digest. A symbolic link or a submodule in the tree
// is refused (an agent unpacks regular files only).
func Publish(ctx context.Context, opts PublishOptions) (*Published, error) {
	if !IsOCI(opts.To) {
		return nil, fmt.Errorf("--to %q: an OCI reference is oci://REGISTRY/REPOSITORY[:TAG]", opts.To)
	}
	ref, err := orasregistry.ParseReference(strings.TrimPrefix(opts.To, OCIScheme))
	if err != nil {
		return nil, fmt.Errorf("--to %s: %w", opts.To, err)
	}
	if ref.Reference == "" {
		ref.Reference = "latest"
	}
	if strings.HasPrefix(ref.Reference, "sha256:") {
		return nil, fmt.Errorf("--to %s: publish to a tag, not a digest", opts.To)
	}
	commit, err := commitOf(opts.Repo, opts.Revision)
	if err != nil {
		return nil, err
	}
	layer, files, err := packTree(opts.Repo, commit)
	if err != nil {
		return nil, err
	}
	repo, err := ociRepository(ref, opts.Auth)
	if err != nil {
		return nil, err
	}
	layerDesc := ocispec.Descriptor{MediaType: LayerMediaType, Digest: digest.FromBytes(layer), Size: int64(len(layer))}
	if err := repo.Push(ctx, layerDesc, bytes.NewReader(layer)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return nil, fmt.Errorf("pushing the fleet to %s: %s", ref, errtext.Error(err))
	}
	message := commit.Message
	if len(message) > maxCommitMessage {
		message = message[:maxCommitMessage]
	}
	raw, err := rawCommit(opts.Repo, commit.Hash)
	if err != nil {
		return nil, err
	}
	annotations := map[string]string{
		ocispec.AnnotationRevision: commit.Hash.String(),
		ocispec.AnnotationCreated:  commit.Committer.When.UTC().Format(time.RFC3339),
		AnnotationCommit:           message,
		AnnotationCommitObject:     base64.StdEncoding.EncodeToString(raw),
	}
	if opts.Signer != nil {
		sig, err := sshsig.Sign(bytes.NewReader(raw), opts.Signer, sshsig.HashSHA512, PublishNamespace)
		if err != nil {
			return nil, fmt.Errorf("signing: %w", err)
		}
		annotations[AnnotationSignature] = string(sshsig.Armor(sig))
	}
	if opts.Source != "" {
		annotations[ocispec.AnnotationSource] = RedactURL(opts.Source)
	}
	manifest, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, ArtifactType,
		oras.PackManifestOptions{Layers: []ocispec.Descriptor{layerDesc}, ManifestAnnotations: annotations})
	if err != nil {
		return nil, fmt.Errorf("pushing the manifest to %s: %s", ref, errtext.Error(err))
	}
	tags := []string{ref.Reference, commit.Hash.String()}
	for _, tag := range tags {
		if err := repo.Tag(ctx, manifest, tag); err != nil {
			return nil, fmt.Errorf("tagging %s:%s: %s", ref.Repository, tag, errtext.Error(err))
		}
	}
	return &Published{Revision: commit.Hash.String(), Digest: manifest.Digest.String(), Tags: tags, Files: files, Size: int64(len(layer))}, nil
}

// maxCommitObject bounds the commit object an artifact carries.
const maxCommitObject = 64 << 10

// rawCommit is a commit object as Git stores it (its hash is the
// commit's; its signature, if any, inside).
func rawCommit(repo *git.Repository, hash plumbing.Hash) ([]byte, error) {
	obj, err := repo.Storer.EncodedObject(plumbing.CommitObject, hash)
	if err != nil {
		return nil, err
	}
	if obj.Size() > maxCommitObject {
		return nil, fmt.Errorf("commit %s is %d bytes: more than the %d an artifact carries", gitrev.Short(hash.String()), obj.Size(), maxCommitObject)
	}
	r, err := obj.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// commitOf is the commit a revision names (HEAD when empty).
func commitOf(repo *git.Repository, revision string) (*object.Commit, error) {
	if revision == "" {
		revision = "HEAD"
	}
	hash, err := repo.ResolveRevision(plumbing.Revision(revision))
	if err != nil {
		return nil, fmt.Errorf("revision %s: %w", revision, err)
	}
	commit, err := repo.CommitObject(*hash)
	if err != nil {
		return nil, fmt.Errorf("revision %s: %w", gitrev.Short(hash.String()), err)
	}
	return commit, nil
}

// packTree is the reproducible tar.gz of a commit's files.
func packTree(repo *git.Repository, commit *object.Commit) ([]byte, int, error) {
	tree, err := commit.Tree()
	if err != nil {
		return nil, 0, err
	}
	type entry struct {
		name string
		mode filemode.FileMode
		hash plumbing.Hash
	}
	var entries []entry
	walker := object.NewTreeWalker(tree, true, nil)
	defer walker.Close()
	for {
		name, e, err := walker.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, err
		}
		switch e.Mode {
		case filemode.Dir:
		case filemode.Regular, filemode.Executable, filemode.Deprecated:
			entries = append(entries, entry{name, e.Mode, e.Hash})
		default:
			return nil, 0, fmt.Errorf("%s is a symbolic link or a submodule: a published fleet holds regular files only", errtext.Clean(name))
		}
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf) // no name, no time: reproducible
	tw := tar.NewWriter(gz)
	when := commit.Committer.When.UTC()
	for _, e := range entries {
		blob, err := repo.BlobObject(e.hash)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", e.name, err)
		}
		mode := int64(0o644)
		if e.mode == filemode.Executable {
			mode = 0o755
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: mode, Size: blob.Size, ModTime: when}
		if err := tw.WriteHeader(h); err != nil {
			return nil, 0, err
		}
		r, err := blob.Reader()
		if err != nil {
			return nil, 0, err
		}
		_, err = io.Copy(tw, r)
		_ = r.Close()
		if err != nil {
			return nil, 0, err
		}
		if buf.Len() > MaxFleetArtifact {
			return nil, 0, fmt.Errorf("the fleet packs to more than %d bytes", MaxFleetArtifact)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, 0, err
	}
	if err := gz.Close(); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), len(entries), nil
}
