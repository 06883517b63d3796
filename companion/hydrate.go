// Package companion makes Flotilla a companion to Argo CD and Flux:
// Flotilla decides (selection, overlays, tenancy, rollout waves) and
// another controller applies.
//
//   - Hydrate renders every cluster the fleet knows into one tree with one
//     path per cluster and bundle (clusters/<cluster>/<bundle>/), in the
//     layout of Argo CD's source hydrator (manifest.yaml and
//     hydrator.metadata in each path), with a kustomization.yaml per
//     bundle and per cluster, Flux Kustomizations per bundle
//     (clusters/<cluster>/flux/) and Argo CD Git files generator
//     parameters (clusters/<cluster>/argocd/). WriteFolder and
//     CommitBranch write it, keeping what did not change.
//   - Params are the same parameters for Argo CD's ApplicationSet plugin
//     generator (Generator serves them), for teams that do not hydrate.
//   - Observe reads the Flux Kustomizations of a cluster and turns them
//     into Flotilla's bundle status.
package companion

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/snapshot"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// The hydrated layout.
const (
	// ClustersDir holds a folder per cluster.
	ClustersDir = "clusters"
	// MetadataFile is in the root and in every cluster and bundle folder:
	// the source ("dry") commit that last changed the folder, in Argo CD's
	// source hydrator format.
	MetadataFile = "hydrator.metadata"
	// ManifestFile holds a bundle's rendered objects.
	ManifestFile = "manifest.yaml"
	// KustomizationFile makes each bundle folder, and each cluster folder
	// (all its bundles), a kustomization.
	KustomizationFile = "kustomization.yaml"
	// FluxDir, in a cluster's folder, holds a Flux Kustomization per bundle.
	FluxDir = "flux"
	// ArgoCDDir, in a cluster's folder, holds an Argo CD Git files
	// generator parameters file per bundle.
	ArgoCDDir = "argocd"
	// NotesRef is where each hydrated commit gets a note naming the source
	// commit it was hydrated from (also when the source commit changed
	// nothing and no commit was made): Argo CD's hydrator and GitOps
	// Promoter read it.
	NotesRef = "refs/notes/hydrator.metadata"
)

// Metadata is a hydrator.metadata file: which source ("dry") commit the
// folder was hydrated from. The field names are Argo CD's.
type Metadata struct {
	RepoURL string `json:"repoURL,omitempty"`
	DrySHA  string `json:"drySha"`
	Author  string `json:"author,omitempty"`
	Date    string `json:"date,omitempty"`
	Subject string `json:"subject,omitempty"`
	Body    string `json:"body,omitempty"`
	// References are the commits the source commit refers to, from its
	// Argocd-reference-commit-* trailers (removed from Body).
	References []Reference `json:"references,omitempty"`
}

// Options say what to hydrate.
type Options struct {
	// Dir is the fleet's folder, inside a Git repository; Path the folder
	// of fleet.cue under it.
	Dir, Path string
	// Revision is the source commit hydrated (default HEAD), read from the
	// local repository without touching its work tree: what is hydrated
	// is exactly that commit.
	Revision string
	// RepoURL is the source repository's URL as recorded in the metadata;
	// by default the repository's origin (credentials removed).
	RepoURL string
	// Status is where clusters known from their status branches are read
	// (no URL: the local repository's status branches).
	Status report.Branches
	// Render configures the renderers (limits, sandbox workers).
	Render planrender.Options
	// Flux configures the generated Flux objects.
	Flux FluxOptions
	// ApprovalsBranch holds the rollout approvals (default
	// report.DefaultApprovalsBranch), in the status repository.
	ApprovalsBranch string
	// Now is the time the rollout gate decides at (default time.Now).
	Now func() time.Time
	// Progress, when set, hears what is being done.
	Progress func(string)
	// PlanOnly stops after planning and the rollout gate: the Output has
	// Rollouts, Gates and Problems but no files.
	PlanOnly bool
}

// Output is a fleet hydrated, before it is written: the files of every
// path but the hydrator.metadata files, which the writers add by
// comparing with what was there.
type Output struct {
	// Metadata describes the source commit.
	Metadata Metadata
	// Files are the hydrated files by slash-separated path.
	Files map[string][]byte
	// Dirs are the cluster and bundle folders, which carry a
	// hydrator.metadata file.
	Dirs []string
	// Keep are the paths whose previous content stays as it was (a folder
	// ends with "/"): the bundles that failed to plan or render, and the
	// clusters whose fleet did not evaluate. A failure never removes what
	// was hydrated before, so nothing is pruned because something failed.
	Keep []string
	// Problems are those failures (positioned), one per bundle or cluster.
	Problems []error
	// Clusters and Bundles count what was hydrated; Renders the distinct
	// renders made.
	Clusters, Bundles, Renders int
	// listings are each cluster's bundles, for its kustomization.yaml and
	// flux/kustomization.yaml, which list a failed bundle only when its
	// previous folder is kept.
	listings []listing
	// Known says where each cluster comes from (inventory, status, both).
	Known map[string]report.Origin
	// Warnings are status branches left out.
	Warnings []string
	// Gates are the clusters and bundles the rollout holds at what was
	// hydrated for them before.
	Gates []Gate
	// Rollouts are the fleet's rollout groups and their waves with
	// clusters, over every cluster planned (for ApplicationSets).
	Rollouts []RolloutGroup
	// waveOf: cluster → its wave in the fleet's rollout.
	waveOf map[string]string
	// held: cluster → bundles with a rollout of their own held by it.
	held map[string]map[string]bool
}

// listing is a cluster's bundles in apply order, and which failed; and
// the namespaces of its bundles' Kustomizations other than Flux's own.
type listing struct {
	cluster    string
	bundles    []string
	failed     map[string]bool
	namespaces []string
	// sources: each namespace has its GitRepository too (Flux's
	// --no-cross-namespace-refs).
	sources bool
}

// files are the cluster's two listing files; has says whether the
// destination held a path before.
func (l listing) files(has func(string) bool) map[string][]byte {
	var bundles, flux []string
	for _, ns := range l.namespaces {
		flux = append(flux, fluxNamespaceFile(ns))
		if l.sources {
			flux = append(flux, fluxSourceFile(ns))
		}
	}
	for _, b := range l.bundles {
		if l.failed[b] && !has(clusterDir(l.cluster)+"/"+b+"/"+KustomizationFile) {
			continue
		}
		bundles = append(bundles, b+"/")
		if !l.failed[b] || has(fluxPath(l.cluster, b)) {
			flux = append(flux, b+".yaml")
		}
	}
	dir := clusterDir(l.cluster)
	return map[string][]byte{
		dir + "/" + KustomizationFile:                 kustomization(bundles),
		dir + "/" + FluxDir + "/" + KustomizationFile: kustomization(flux),
	}
}

// ErrReservedName is wrapped when a bundle's name is a folder the layout
// gives another meaning.
var ErrReservedName = errors.New("reserved in the hydrated layout")

// Hydrate renders every cluster the fleet knows at the source commit.
func Hydrate(ctx context.Context, opts Options) (*Output, error) {
	say := opts.Progress
	if say == nil {
		say = func(string) {}
	}
	repo, err := snapshot.Open(opts.Dir)
	if err != nil {
		return nil, err
	}
	defer repo.Close()
	rev := opts.Revision
	if rev == "" {
		rev = "HEAD"
	}
	snap, err := repo.At(rev)
	if err != nil {
		return nil, err
	}
	commit := snap.Commit
	repoURL := opts.RepoURL
	if repoURL == "" {
		repoURL = originURL(repo.Git)
	}
	out := &Output{Files: map[string][]byte{}, Metadata: commitMetadata(repoURL, commit.Hash.String(), commit.Author.String(), commit.Author.When, commit.Message)}
	say(fmt.Sprintf("loading the fleet at %s", short(commit.Hash.String())))
	if err := snap.Load(fleet.LoadOptions{Path: opts.Path}); err != nil {
		return nil, err
	}
	f := snap.Fleet
	known, err := repo.Known(ctx, opts.Status, snap)
	if err != nil {
		return nil, err
	}
	out.Known, out.Warnings = known.Where, known.Warnings
	if len(known.Clusters) == 0 {
		return nil, errors.New("the fleet knows no cluster: no inventory (`clusters`) and no status branch")
	}

	say("planning " + english.Count(len(known.Clusters), "cluster"))
	plans, errs, err := f.PlanClusters(ctx, known.Clusters, nil)
	if err != nil {
		return nil, err
	}
	var ok []*fleet.Plan
	for i, c := range known.Clusters {
		if errs[i] != nil {
			out.Problems = append(out.Problems, fmt.Errorf("cluster %s: %w (not hydrated: what was hydrated for it before stays)", c.Name, errs[i]))
			out.Keep = append(out.Keep, clusterDir(c.Name)+"/")
			continue
		}
		ok = append(ok, plans[i])
	}
	out.placeInWaves(ok)
	if ok, err = out.gate(ctx, opts, repo, known, ok, commit.Hash.String()); err != nil {
		return nil, fmt.Errorf("the rollout gate: %w", err)
	}
	if opts.PlanOnly {
		return out, nil
	}

	total := 0
	for _, p := range ok {
		total += len(p.Bundles)
	}
	say(fmt.Sprintf("rendering %s for %s", english.Count(total, "bundle"), english.Count(len(ok), "cluster")))
	r := planrender.New(snap.Dir, opts.Render)
	var done atomic.Int64
	rendered, err := r.RenderPlans(ctx, ok, nil, func() { done.Add(1) })
	if err != nil {
		return nil, fmt.Errorf("rendering %s for %s (%d done): %w", english.Count(total, "bundle"), english.Count(len(ok), "cluster"), done.Load(), err)
	}
	out.Renders = r.Distinct()
	for i, p := range ok {
		if err := out.addCluster(p, rendered[i], opts.Flux); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// placeInWaves records the rollout groups and each cluster's wave.
func (o *Output) placeInWaves(plans []*fleet.Plan) {
	o.Rollouts = rolloutGroups(plans)
	o.waveOf = map[string]string{}
	for _, p := range plans {
		if p.Rollout != nil {
			o.waveOf[p.Cluster.Name] = p.Rollout.Wave
		}
	}
}

// addCluster adds one cluster's folder.
func (o *Output) addCluster(p *fleet.Plan, rendered []planrender.Bundle, flux FluxOptions) error {
	c := p.Cluster.Name
	dir := clusterDir(c)
	o.Clusters++
	o.Dirs = append(o.Dirs, dir)
	l := listing{cluster: c, failed: map[string]bool{}}
	for i, b := range p.Bundles {
		if b.Name == FluxDir || b.Name == ArgoCDDir {
			o.Problems = append(o.Problems, fmt.Errorf("cluster %s: bundle %s: the name is %w (a cluster's folder holds %s/ and %s/): rename the bundle to hydrate it",
				c, b.Name, ErrReservedName, FluxDir, ArgoCDDir))
			continue
		}
		bdir := dir + "/" + b.Name
		l.bundles = append(l.bundles, b.Name)
		if o.held[c][b.Name] {
			// Its own rollout holds it: what was hydrated stays, and the
			// listings name it only if it was there before.
			o.Keep = append(o.Keep, bdir+"/", fluxPath(c, b.Name), argoPath(c, b.Name))
			l.failed[b.Name] = true
			continue
		}
		if err := rendered[i].Err; err != nil {
			o.Problems = append(o.Problems, fmt.Errorf("%w (not hydrated: what was hydrated for it before stays)", err))
			o.Keep = append(o.Keep, bdir+"/", fluxPath(c, b.Name), argoPath(c, b.Name))
			l.failed[b.Name] = true
			continue
		}
		o.Bundles++
		o.Dirs = append(o.Dirs, bdir)
		objects := rendered[i].Result.Objects
		resources := []string{}
		if len(objects) > 0 {
			data, err := yamlStream(objects)
			if err != nil {
				return fmt.Errorf("cluster %s: bundle %s: %w", c, b.Name, err)
			}
			o.Files[bdir+"/"+ManifestFile] = data
			resources = []string{ManifestFile}
		}
		o.Files[bdir+"/"+KustomizationFile] = kustomization(resources)
		fk, err := FluxKustomization(p, b, flux)
		if err != nil {
			return err
		}
		o.Files[fluxPath(c, b.Name)] = fk
		params, err := jsonIndent(Params(p, b, bdir))
		if err != nil {
			return err
		}
		o.Files[argoPath(c, b.Name)] = params
	}
	if err := o.addFluxNamespaces(p, &l, flux); err != nil {
		return err
	}
	o.listings = append(o.listings, l)
	return nil
}

// addFluxNamespaces writes, beside the Kustomizations, the namespaces that
// bundles applied as a ServiceAccount put theirs in (Flux looks for the
// account in the Kustomization's namespace), created if absent and never
// pruned: otherwise the root Kustomization's apply stops at the first
// Kustomization whose namespace another bundle has yet to create, and
// nothing is ever created (a first install deadlock).
func (o *Output) addFluxNamespaces(p *fleet.Plan, l *listing, flux FluxOptions) error {
	seen := map[string]bool{}
	l.sources = flux.TenantSource != nil
	for _, b := range p.Bundles {
		ns := flux.withDefaults().fluxNamespace(b)
		if ns == flux.withDefaults().Namespace || seen[ns] || !slices.Contains(l.bundles, b.Name) {
			continue
		}
		seen[ns] = true
		l.namespaces = append(l.namespaces, ns)
		o.Files[clusterDir(l.cluster)+"/"+FluxDir+"/"+fluxNamespaceFile(ns)] = FluxNamespace(ns)
		if l.sources {
			src, err := FluxTenantSource(ns, flux)
			if err != nil {
				return err
			}
			o.Files[clusterDir(l.cluster)+"/"+FluxDir+"/"+fluxSourceFile(ns)] = src
		}
	}
	slices.Sort(l.namespaces)
	return nil
}

func fluxNamespaceFile(ns string) string { return "namespace-" + ns + ".yaml" }

func fluxSourceFile(ns string) string { return "source-" + ns + ".yaml" }

func clusterDir(cluster string) string { return ClustersDir + "/" + cluster }

func fluxPath(cluster, bundle string) string {
	return clusterDir(cluster) + "/" + FluxDir + "/" + bundle + ".yaml"
}

func argoPath(cluster, bundle string) string {
	return clusterDir(cluster) + "/" + ArgoCDDir + "/" + bundle + ".json"
}

// kustomization is a kustomization.yaml listing resources in order. The
// fifo sort order keeps Flotilla's apply order (dependencies first,
// cluster definitions first within a bundle): `kustomize build` of a
// cluster's folder gives the objects `flotilla render` gives, in order.
func kustomization(resources []string) []byte {
	var b strings.Builder
	b.WriteString("# Generated by flotilla hydrate; do not edit.\n")
	b.WriteString("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nsortOptions:\n  order: fifo\n")
	if len(resources) == 0 {
		b.WriteString("resources: []\n")
		return []byte(b.String())
	}
	b.WriteString("resources:\n")
	for _, r := range resources {
		fmt.Fprintf(&b, "- %s\n", r)
	}
	return []byte(b.String())
}

// yamlStream is objects as a YAML stream, as `flotilla render` prints it.
func yamlStream(objects []*unstructured.Unstructured) ([]byte, error) {
	var b strings.Builder
	for _, o := range objects {
		data, err := yaml.Marshal(o.Object)
		if err != nil {
			return nil, err
		}
		b.WriteString("---\n")
		b.Write(data)
	}
	return []byte(b.String()), nil
}

// commitMetadata is the metadata of a source commit as Argo CD's source
// hydrator writes it: the subject is the first paragraph of the message,
// the body the rest without its reference trailers (which become
// References), each of its lines ending with a newline.
func commitMetadata(repoURL, hash, author string, when time.Time, message string) Metadata {
	message = strings.TrimSpace(message)
	subject, body, _ := strings.Cut(message, "\n\n")
	return Metadata{
		RepoURL:    repoURL,
		DrySHA:     hash,
		Author:     author,
		Date:       when.UTC().Format(time.RFC3339),
		Subject:    subject,
		Body:       withoutReferences(body),
		References: references(message),
	}
}

// RemoteURL is the URL of a remote of the repository without its user
// information, or "" when there is no such remote.
func RemoteURL(repo *git.Repository, remote string) string {
	if r, err := repo.Remote(remote); err == nil && len(r.Config().URLs) > 0 {
		return withoutUser(r.Config().URLs[0])
	}
	return ""
}

// originURL is the URL of the repository's origin remote without
// credentials, or a file URL of the repository itself when it has none.
func originURL(repo *git.Repository) string {
	if u := RemoteURL(repo, "origin"); u != "" {
		return u
	}
	if wt, err := repo.Worktree(); err == nil {
		if abs, err := filepath.Abs(wt.Filesystem.Root()); err == nil {
			return "file://" + filepath.ToSlash(abs)
		}
	}
	return ""
}

// withoutUser is a URL without its user information (a user name may be
// a token as much as a password is): nothing secret is written to Git.
func withoutUser(raw string) string {
	if !strings.Contains(raw, "://") {
		// A local path is recorded as a file URL; an SCP-like SSH address
		// (git@host:repo) as it is.
		if filepath.IsAbs(raw) {
			return "file://" + filepath.ToSlash(raw)
		}
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return source.RedactURL(raw)
	}
	if u.User == nil {
		return raw
	}
	u.User = nil
	return u.String()
}

// short is a commit in a hydrated commit's message, as long as Argo CD's
// hydrator writes it.
func short(hash string) string { return gitrev.Abbrev(hash, gitrev.HydratorLen) }

// under reports whether p is the path k or inside the folder k ("x/").
func under(p, k string) bool {
	if strings.HasSuffix(k, "/") {
		return strings.HasPrefix(p, k)
	}
	return p == k
}

// parentDirs are the folders holding p, innermost first ("a/b/c" → "a/b", "a").
func parentDirs(p string) []string {
	var out []string
	for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
		out = append(out, d)
	}
	return out
}
