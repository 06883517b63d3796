package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"

	"github.com/spf13/cobra"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/internal/errtext"
	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/kustomize"
	"github.com/flotilla-gitops/flotilla/render/sops"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// vetResult is what `flotilla vet -o json` prints.
type vetResult struct {
	Clusters    []string          `json:"clusters"`
	Bundles     []string          `json:"bundles"`
	Diagnostics fleet.Diagnostics `json:"diagnostics"`
	// Warnings are what is likely a mistake but would not fail a cluster
	// (a selector that selects no cluster); with --strict they are
	// diagnostics.
	Warnings fleet.Diagnostics `json:"warnings"`
}

// vetLong is the command's --help.
const vetLong = `Check the fleet repository in DIR (default: the current folder): its CUE
against Flotilla's schemas, then every bundle for every cluster of its
` + "`clusters`" + ` inventory — selection, overlays, concrete values, dependsOn, and
the tenancy policy (a team's bundle in its namespaces, as its accounts).

A Helm bundle's values are checked against its chart's values.schema.json
(lifted into CUE), so a violation is reported at the fleet.cue line that
set the value. Charts of the repository are read from it; charts of chart
repositories and registries come from the chart cache, or are fetched with
--allow-chart-downloads (a chart not cached is noted and left to Helm's
own check at render time).

With a secrets policy (secrets: {by: "class", recipients: {...}}), every
SOPS-encrypted file a cluster would receive must be encrypted to all the
age recipients of the cluster's class and to none of another class's; vet
reads the files' SOPS metadata and decrypts nothing.

The fleet's invariants (invariants: rules over every cluster at once:
regions, cluster counts, how many a selector selects, planned inputs that
must be the same, per bundle and per group) are checked over the plans of
every inventory cluster and every cluster known from its status branch; a
break names the invariant's line, the bundle, the group and its clusters.
Their rules over rendered objects (same: [{match, field}], "a CRD serves
the same versions across a class") need every cluster rendered:
--invariants renders every inventory cluster and every cluster known from
its status branch, each distinct bundle input once, and checks them.

--policies also renders every inventory cluster, and every cluster known
only from its status branch (--status-repo, or the local repository's
status branches), each distinct bundle input once, in render workers, and
checks the fleet's policies (require,
forbid, constrain) over each cluster's objects; a violation names the
policy's entry and its line, the cluster, the bundle, the object and the
field.

Every problem is printed once, as file:line:column, with the clusters and
bundle it concerns; a problem that occurs for several clusters is printed
once with all of them. The exit code is 1 if there is any problem, so vet
can gate a pull request.`

// vetOptions are vet's flags.
type vetOptions struct {
	out            *outputFlag
	ff             *fleetFlags
	policies       *bool
	invariants     *bool
	limits         *limitFlags
	known          *knownClusterFlags
	allowUnchecked *bool
	strict         *bool
}

func newVetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vet [DIR]",
		Short: "Check a fleet against the schemas and evaluate it for every inventory cluster",
		Long:  vetLong,
		Example: `  flotilla vet
  flotilla vet --strict
  flotilla vet . --path examples/independent -o json
  flotilla vet --policies
  flotilla vet --invariants --path examples/invariants`,
		Args: cobra.MaximumNArgs(1),
	}
	o := &vetOptions{out: addOutputFlag(cmd, "text", "json"), ff: addFleetFlags(cmd)}
	o.policies = cmd.Flags().Bool("policies", false, "render every inventory cluster (each distinct bundle input once, in render workers) and check the fleet's policies over its objects")
	o.invariants = cmd.Flags().Bool("invariants", false, "also check the invariants' rules over rendered objects (same: [{match, field}]): render every inventory cluster, as --policies does (the other rules are always checked)")
	o.limits = addLimitFlags(cmd, false)
	o.known = addKnownClusterFlags(cmd)
	o.allowUnchecked = cmd.Flags().Bool("allow-unchecked-schemas", false, "let a chart's values.schema.json that vet cannot read as CUE pass with a note (Helm still checks the values when it renders); without it such a schema is a problem")
	addQuietFlag(cmd)
	o.strict = cmd.Flags().Bool("strict", false, "make warnings (a target, overlay, wave or policy selector that selects no cluster) problems: exit 1 on them too")
	cmd.Flags().Lookup("allow-chart-downloads").Usage = "fetch charts of chart repositories and registries that are not in the chart cache, to check values against their values.schema.json (without it they are noted and not checked)"
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := o.out.validate(); err != nil {
			return err
		}
		return o.run(cmd, args)
	}
	return cmd
}

// run vets the fleet and prints the result.
func (o *vetOptions) run(cmd *cobra.Command, args []string) error {
	tuneGCForBatch()
	res := vetResult{Diagnostics: fleet.Diagnostics{}, Warnings: fleet.Diagnostics{}}
	f, err := o.ff.load(cmd.Context(), args)
	if err != nil {
		ds := fleet.AsDiagnostics(err)
		if ds == nil {
			return err
		}
		res.Diagnostics = ds
	} else if err := o.check(cmd, repoDir(args), f, &res); err != nil {
		return err
	}
	if *o.strict {
		res.Diagnostics = append(res.Diagnostics, res.Warnings...)
		res.Warnings = fleet.Diagnostics{}
	}
	if err := o.out.write(cmd.OutOrStdout(), res, func(w io.Writer) error {
		return writeVetText(w, cmd.ErrOrStderr(), res, f != nil)
	}); err != nil {
		return err
	}
	if len(res.Diagnostics) > 0 {
		return &reportedError{errors.New(english.Count(len(res.Diagnostics), "problem"))}
	}
	return nil
}

// check runs every check on a fleet that loaded. The inventory's plans
// are checked as they are made and none is held (5,000 clusters' plans
// are some 150 MB): vetTally keeps what the checks need of them.
func (o *vetOptions) check(cmd *cobra.Command, dir string, f *fleet.Fleet, res *vetResult) error {
	ctx, stderr := cmd.Context(), progressTo(cmd)
	for _, c := range f.Inventory() {
		res.Clusters = append(res.Clusters, c.Name)
	}
	res.Bundles = f.Bundles()
	// CUE files that look like the fleet's but are not loaded.
	res.Diagnostics = append(res.Diagnostics, f.StrayFiles(dir, o.ff.path)...)
	sources := &o.limits.sources
	schemas := newChartSchemas(ctx, dir, *sources, *o.allowUnchecked)
	f.CheckValues(schemas.source)
	t := newVetTally(f, dir, sources.AllowRemoteBases)
	// With --policies every cluster is rendered as it is planned: one
	// goroutine plans, the others render.
	// --invariants renders for the invariants' rules over rendered
	// objects, when there are any; both check them once rendered.
	var rendered *vetRender
	workers := 0
	invariants := f.NewInvariantState()
	if *o.policies || (*o.invariants && f.RenderedInvariants() > 0) {
		var err error
		if rendered, err = newVetRender(ctx, stderr, f, dir, o.limits, *o.policies); err != nil {
			return err
		}
		rendered.invariants = invariants
		workers = 1
	}
	problems, err := eachInventoryPlan(ctx, stderr, f, workers, func(p *fleet.Plan) error {
		t.add(p)
		invariants.Add(p)
		if rendered != nil {
			return rendered.add(p)
		}
		return nil
	})
	if err != nil {
		if rendered != nil {
			_, _ = rendered.wait() // stops the workers; planning's error says what happened
		}
		return err
	}
	res.Diagnostics = append(res.Diagnostics, t.problems(problems)...)
	// Clusters known only from their status branches count for selectors
	// (and are checked against the policies with --policies).
	more, ds, err := statusOnlyPlans(ctx, stderr, f, dir, o.known)
	if err != nil {
		if rendered != nil {
			_, _ = rendered.wait()
		}
		return err
	}
	for _, p := range more {
		t.selection.Add(p)
		invariants.Add(p)
	}
	res.Warnings = append(res.Warnings, f.Unselected(t.selection)...)
	if rendered != nil {
		res.Diagnostics = append(res.Diagnostics, ds...)
		for _, p := range more {
			if rendered.add(p) != nil {
				break // wait says why
			}
		}
		ds, err = rendered.wait()
	} else {
		if n := f.RenderedInvariants(); n > 0 {
			fmt.Fprintf(stderr, "note: %s over rendered objects %s not checked: vet --invariants renders every cluster to check them\n",
				english.Count(n, "invariant rule"), map[bool]string{true: "is", false: "are"}[n == 1])
		}
		// What fails to render fails on a cluster: render each distinct
		// source at least once (the clusters that together get them all).
		ds, err = renderProblems(ctx, stderr, f, dir, t.sample(sources.AllowChartDownloads), o.limits)
		switch n := len(f.Policies()); {
		case n == 1:
			fmt.Fprintln(stderr, "note: the fleet's policy is not checked: vet --policies renders every cluster to check them")
		case n > 1:
			fmt.Fprintf(stderr, "note: the fleet's %d policies are not checked: vet --policies renders every cluster to check them\n", n)
		}
	}
	if err != nil {
		return err
	}
	res.Diagnostics = append(res.Diagnostics, ds...)
	// The invariants hold over every known cluster's plan (and, rendered,
	// its objects).
	res.Diagnostics = append(res.Diagnostics, invariants.Check()...)
	for _, n := range schemas.Notes() {
		fmt.Fprintf(stderr, "note: %s\n", n)
	}
	return nil
}

// vetTally is what vet keeps of each plan as it is made, for the checks
// over the whole inventory: the problems of bundles that failed, every
// source checked (once per distinct source), what the secrets policy
// says, the selection (for selectors that select nothing), and the first
// cluster to get each distinct source (to render).
type vetTally struct {
	failed    fleet.Diagnostics
	checker   *sourceChecker
	sources   *fleet.SourceCheck
	secrets   *fleet.SecretsPolicy
	files     func(*fleet.Bundle) ([]fleet.EncryptedFile, error)
	secretDs  fleet.Diagnostics
	selection *fleet.Selection
	seen      map[string]bool // distinct sources (bundle and readKey)
	samples   []*fleet.Plan
	firsts    [][]string // the sources samples[i] was the first to get
}

func newVetTally(f *fleet.Fleet, dir string, allowRemote bool) *vetTally {
	checker := newSourceChecker(dir, allowRemote)
	return &vetTally{checker: checker, sources: f.CheckSources(checker.check), secrets: f.Secrets(),
		files: encryptedFiles(dir), selection: fleet.NewSelection(), seen: map[string]bool{}}
}

// add tallies one inventory plan.
func (t *vetTally) add(p *fleet.Plan) {
	for _, b := range p.Failed() {
		t.failed = append(t.failed, b.Errors...)
	}
	// Every source the plans name is in the repository (checked once
	// per distinct source, without rendering).
	t.sources.Add(p)
	if t.secrets != nil {
		t.secretDs = append(t.secretDs, t.secrets.CheckSecrets([]*fleet.Plan{p}, t.files)...)
	}
	t.selection.Add(p)
	var first []string
	for _, b := range p.Bundles {
		if key := b.Name + "\x00" + readKey(b.Source); !b.Failed() && !t.seen[key] {
			t.seen[key] = true
			first = append(first, key)
		}
	}
	if len(first) > 0 {
		t.samples, t.firsts = append(t.samples, p), append(t.firsts, first)
	}
}

// problems are the inventory's problems: the clusters that did not plan
// (unplanned), the bundles that failed, the sources not there, what breaks
// the secrets policy; each once.
func (t *vetTally) problems(unplanned fleet.Diagnostics) fleet.Diagnostics {
	ds := fleet.Problems(nil, append(unplanned, t.failed...))
	ds = append(ds, t.sources.Problems()...)
	if t.secrets != nil {
		ds = append(ds, fleet.Problems(nil, t.secretDs)...)
	}
	return ds
}

// sample is the fewest plans, in order, that together hold every distinct
// source of every bundle (what it reads: readKey), the first cluster to
// get each, without what vet does not render: charts of repositories and
// registries without --allow-chart-downloads (vet fetches nothing; not
// cached, they are noted), kustomizations with remote bases, and the
// bundles whose sources are not there (reported already).
func (t *vetTally) sample(allowChartDownloads bool) []*fleet.Plan {
	reported := map[string]bool{}
	for _, d := range t.sources.Problems() {
		reported[d.Bundle] = true
	}
	skip := func(b *fleet.Bundle) bool {
		remoteChart := b.Source.Helm != nil && !b.Source.Helm.InRepository()
		return remoteChart && !allowChartDownloads || t.checker.fetches(b.Source) || reported[b.Name]
	}
	// Whether a bundle is skipped depends on its name and its readKey
	// alone: a plan is sampled when a source it was first to get is not.
	var out []*fleet.Plan
	for i, p := range t.samples {
		var bundles []*fleet.Bundle
		for _, b := range p.Bundles {
			if !skip(b) {
				bundles = append(bundles, b)
			}
		}
		for _, key := range t.firsts[i] {
			name, _, _ := strings.Cut(key, "\x00")
			if b := p.Bundle(name); b != nil && !skip(b) {
				sample := *p
				sample.Bundles = bundles
				out = append(out, &sample)
				break
			}
		}
	}
	return out
}

// readKey is what a source reads from the repository or a registry — the
// chart and its values files, the kustomization, the manifests folder —
// without what the fleet fills in per cluster (values, images, labels).
func readKey(s spec.Source) string {
	switch {
	case s.Helm != nil:
		return strings.Join(append([]string{"helm", s.Helm.Repo, s.Helm.Chart, s.Helm.Version}, s.Helm.ValuesFiles...), "\x00")
	case s.Kustomize != nil:
		return "kustomize\x00" + treeKey(s.Kustomize)
	case s.Manifests != nil:
		return "manifests\x00" + s.Manifests.Path
	}
	return s.Kind.String()
}

// sourceChecker checks, without rendering and without network, that a
// bundle's source is in the repository and of its kind
// (render.CheckSource), and that every kustomization it reaches locally
// resolves (kustomize.Check). A kustomization tree is checked once per
// path and components (the bundle's images, patches and labels do not
// change what it reaches). It remembers the trees that reach remote
// content: with --allow-remote-bases they are allowed, and not rendered
// by vet (which fetches nothing).
type sourceChecker struct {
	repoDir     string
	allowRemote bool
	trees       map[string]error
	remote      map[string]bool
}

func newSourceChecker(repoDir string, allowRemote bool) *sourceChecker {
	return &sourceChecker{repoDir: repoDir, allowRemote: allowRemote, trees: map[string]error{}, remote: map[string]bool{}}
}

func treeKey(k *spec.Kustomize) string {
	return strings.Join(append([]string{k.Path}, k.Components...), "\x00")
}

// check is the fleet.CheckSources check.
func (c *sourceChecker) check(s spec.Source) error {
	if err := render.CheckSource(c.repoDir, s); err != nil || s.Kustomize == nil {
		return err
	}
	key := treeKey(s.Kustomize)
	err, done := c.trees[key]
	if !done {
		tree := &spec.Kustomize{Path: s.Kustomize.Path, Components: s.Kustomize.Components}
		err = kustomize.Check(c.repoDir, tree, false)
		if c.allowRemote && errors.Is(err, kustomize.ErrRemoteBase) {
			c.remote[key] = true
			err = kustomize.Check(c.repoDir, tree, true)
		}
		c.trees[key] = err
	}
	return err
}

// fetches reports whether rendering the source would fetch a remote base.
func (c *sourceChecker) fetches(s spec.Source) bool {
	return s.Kustomize != nil && c.remote[treeKey(s.Kustomize)]
}

// writeVetText prints problems and warnings to stderr (like a compiler)
// and the summary of a clean fleet to stdout.
func writeVetText(stdout, stderr io.Writer, res vetResult, loaded bool) error {
	for _, d := range res.Diagnostics {
		fmt.Fprintln(stderr, d.Error())
	}
	for _, d := range res.Warnings {
		fmt.Fprintln(stderr, d.Warning())
	}
	warnings := ""
	if len(res.Warnings) > 0 {
		warnings = " (" + english.Count(len(res.Warnings), "warning") + "; --strict makes them problems)"
	}
	switch {
	case len(res.Diagnostics) > 0:
		fmt.Fprintf(stderr, "%s%s\n", english.Count(len(res.Diagnostics), "problem"), warnings)
	case !loaded:
	case len(res.Clusters) == 0:
		fmt.Fprintf(stderr, "note: the fleet has no `clusters` inventory, so only the schema was checked; add clusters to evaluate every bundle for them\n")
		fmt.Fprintf(stdout, "ok: %s%s\n", english.Count(len(res.Bundles), "bundle"), warnings)
	default:
		fmt.Fprintf(stdout, "ok: %s evaluated for %s%s\n", english.Count(len(res.Bundles), "bundle"), english.Count(len(res.Clusters), "cluster"), warnings)
	}
	return nil
}

// vetRender renders plans in render workers as they are added (each
// distinct input once), as an agent would but with Secret values masked,
// and reports every bundle that does not render — a template that does
// not parse, a manifest that is not Kubernetes YAML, a kustomize patch that
// matches nothing, two bundles with one object — or renders an object of a
// built-in kind the API server would refuse (render.CheckTypes), at the
// bundle's source line, merged across clusters; with policies, also what
// breaks the fleet's policies over each cluster's objects. Neither the
// plans nor the renders are kept.
type vetRender struct {
	f            *fleet.Fleet
	policies     bool
	stream       *planrender.Stream
	closeWorkers func()
	stopProgress func()
	added        int
	rendered     atomic.Int64
	problems     fleet.Diagnostics // what does not render
	violations   fleet.Diagnostics // what breaks the policies
	// invariants, when set, keeps what the invariants' rendered rules
	// need of each cluster's objects.
	invariants *fleet.InvariantState
}

func newVetRender(ctx context.Context, stderr io.Writer, f *fleet.Fleet, dir string, limits *limitFlags, policies bool) (*vetRender, error) {
	limits.sources.Secrets = sops.ModeMask
	opts, closeWorkers, err := limits.options(planrender.Options{})
	if err != nil {
		return nil, err
	}
	v := &vetRender{f: f, policies: policies, closeWorkers: closeWorkers}
	v.stopProgress = everyFewSeconds(stderr, func() string { return "rendered " + english.Count(int(v.rendered.Load()), "bundle") })
	v.stream = planrender.New(dir, opts).Stream(ctx, nil, func() { v.rendered.Add(1) }, v.check)
	return v, nil
}

// add renders the next plan; its error means rendering stopped (wait says
// why).
func (v *vetRender) add(p *fleet.Plan) error {
	v.added++
	return v.stream.Add(v.added-1, p)
}

// check looks at one cluster's rendered bundles.
func (v *vetRender) check(_ int, p *fleet.Plan, rendered []planrender.Bundle) error {
	failed := map[string]string{}
	var bundles []fleet.RenderedBundle
	for _, b := range rendered {
		switch {
		case b.Err != nil:
			failed[b.Name] = "does not render: " + renderMessage(b.Err)
			continue
		case b.Result != nil:
			if err := render.CheckTypes(b.Result.Objects); err != nil {
				failed[b.Name] = "renders " + err.Error()
			}
		}
		bundles = append(bundles, fleet.RenderedBundle{Name: b.Name, Objects: b.Result.Objects})
	}
	v.problems = append(v.problems, v.f.RenderProblems([]*fleet.Plan{p}, func(int) map[string]string { return failed })...)
	if v.policies {
		v.violations = append(v.violations, v.f.CheckPolicies(p.Cluster, bundles)...)
	}
	v.invariants.AddRendered(p.Cluster, bundles)
	return nil
}

// wait waits for what was added, stops the render workers, and returns the
// problems, each once.
func (v *vetRender) wait() (fleet.Diagnostics, error) {
	err := v.stream.Wait()
	v.stopProgress()
	v.closeWorkers()
	if err != nil {
		return nil, fmt.Errorf("rendering the bundles of %s (%s rendered): %w",
			english.Count(v.added, "cluster"), english.Count(int(v.rendered.Load()), "bundle"), err)
	}
	ds := fleet.Problems(nil, v.problems)
	if v.policies {
		ds = append(ds, fleet.Problems(nil, v.violations)...)
	}
	return ds, nil
}

// renderProblems renders the plans (vetRender without the policies).
func renderProblems(ctx context.Context, stderr io.Writer, f *fleet.Fleet, dir string, plans []*fleet.Plan, limits *limitFlags) (fleet.Diagnostics, error) {
	v, err := newVetRender(ctx, stderr, f, dir, limits, false)
	if err != nil {
		return nil, err
	}
	for _, p := range plans {
		if v.add(p) != nil {
			break // wait says why
		}
	}
	return v.wait()
}

// renderMessage is a render error without the cluster and bundle it names
// (the problem says them), so that clusters failing alike merge.
func renderMessage(err error) string {
	var re *render.Error
	if errors.As(err, &re) {
		err = re.Err
	}
	return errtext.Error(err) // bounded and clean, as render.Error says it
}

// statusOnlyPlans plans the clusters that reported on a status branch and
// are not in the inventory, with their real labels and facts: vet
// --policies checks them too. Without a status repository and outside a
// Git repository there are none.
func statusOnlyPlans(ctx context.Context, stderr io.Writer, f *fleet.Fleet, dir string, known *knownClusterFlags) ([]*fleet.Plan, fleet.Diagnostics, error) {
	branches, err := known.resolve()
	if err != nil {
		return nil, nil, err
	}
	repo, _, err := source.OpenLocal(dir)
	if err != nil && branches.URL == "" {
		return nil, nil, nil // not a Git repository: no status branches
	}
	k, err := report.KnownClusters(ctx, repo, branches, f.Inventory())
	if err != nil {
		return nil, nil, fmt.Errorf("reading the status branches: %w", err)
	}
	for _, w := range k.Warnings {
		fmt.Fprintf(stderr, "note: %s\n", w)
	}
	var only []fleet.Cluster
	for _, c := range k.Clusters {
		if k.Where[c.Name] == "status" {
			only = append(only, c)
		}
	}
	if len(only) == 0 {
		return nil, nil, nil
	}
	plans, errs, err := f.PlanClusters(ctx, only, nil)
	if err != nil {
		return nil, nil, err
	}
	var out []*fleet.Plan
	var problems fleet.Diagnostics
	for i, p := range plans {
		if errs[i] != nil {
			problems = append(problems, fleet.PlanProblems(only[i], errs[i])...)
			continue
		}
		out = append(out, p)
	}
	return out, fleet.Problems(out, problems), nil
}
