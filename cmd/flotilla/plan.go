package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/render/helm"
	"github.com/flotilla-gitops/flotilla/render/sops"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
)

// planLong is the command's --help.
const planLong = `Evaluate the fleet in DIR (default: the current folder) for one cluster and
explain the result: which bundles select it and why, which overlays matched,
the final concrete values of each bundle, the order bundles are applied in
(dependsOn), and which bundles do not select it and why.

The cluster is an entry of the fleet's ` + "`clusters`" + ` inventory (--cluster), or an
identity given with flags (--name, --region, --label, --facts). With
--cluster, --region, --label and --facts override the inventory entry, to
ask "what if". --all plans every inventory cluster and prints a matrix of
clusters by bundles.

Nothing is rendered or applied. The exit code is 1 when a bundle fails to
evaluate.`

func newPlanCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "plan [DIR] (--cluster NAME | --name NAME [--region R] [--label k=v]... | --all)",
		Short: "Explain what a cluster gets from the fleet: bundles, reasons, overlays, values",
		Long:  planLong,
		Example: `  flotilla plan --cluster prod-eu-1
  flotilla plan --cluster prod-eu-1 --label class=regulated
  flotilla plan --name edge-7 --region eu-west-1 --label env=prod -o json
  flotilla plan . --path examples/independent --all`,
		Args: cobra.MaximumNArgs(1),
	}
	out := addOutputFlag(cmd, "text", "json", "yaml")
	ff := addFleetFlags(cmd)
	addQuietFlag(cmd)
	id := addIdentityFlags(cmd)
	all := cmd.Flags().Bool("all", false, "plan every cluster of the inventory")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := out.validate(); err != nil {
			return err
		}
		if *all && id.given() {
			return errors.New("--all plans the whole inventory; it takes no --cluster or identity flags")
		}
		f, err := ff.load(cmd.Context(), args)
		if err != nil {
			return err
		}
		if *all {
			return planAll(cmd, f, out)
		}
		c, err := id.resolve(f)
		if err != nil {
			return err
		}
		p, err := planCluster(cmd.Context(), f, c)
		if err != nil {
			return err
		}
		err = out.write(cmd.OutOrStdout(), p, func(w io.Writer) error {
			return writePlanText(w, p, repoDir(args))
		})
		if err != nil {
			return err
		}
		var problems fleet.Diagnostics
		for _, b := range p.Failed() {
			problems = append(problems, b.Errors...)
		}
		return reportProblems(cmd.ErrOrStderr(), problems)
	}
	return cmd
}

// planAll plans every inventory cluster. JSON and YAML print each plan as
// soon as it and those before it are made, so that memory holds a few
// plans, not the fleet's (nor the whole encoding: 270 MB of JSON at 5,000
// clusters × 50 bundles); the text matrix keeps its cells.
func planAll(cmd *cobra.Command, f *fleet.Fleet, out *outputFlag) error {
	if len(f.Inventory()) == 0 {
		return missingIdentity(f)
	}
	tuneGCForBatch()
	w := bufio.NewWriterSize(cmd.OutOrStdout(), 64<<10)
	list := out.list(w)
	matrix := newPlanMatrix(f.Bundles())
	var failed fleet.Diagnostics
	problems, err := eachInventoryPlan(cmd.Context(), progressTo(cmd), f, 0, func(p *fleet.Plan) error {
		for _, b := range p.Failed() {
			failed = append(failed, b.Errors...)
		}
		if out.format == "text" {
			matrix.add(p)
			return nil
		}
		return list.add(p)
	})
	if err != nil {
		// What was printed stays printed (a partial list): the exit code
		// and the error say it is not the whole fleet.
		_ = w.Flush()
		return err
	}
	if out.format == "text" {
		err = matrix.write(w)
	} else {
		err = list.close()
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		return err
	}
	return reportProblems(cmd.ErrOrStderr(), append(problems, failed...))
}

// reportProblems prints each problem to stderr and, when there are any,
// returns the error that sets the exit code.
func reportProblems(stderr io.Writer, problems fleet.Diagnostics) error {
	if len(problems) == 0 {
		return nil
	}
	for _, d := range problems {
		fmt.Fprintln(stderr, d.Error())
	}
	return &reportedError{errors.New(english.Count(len(problems), "problem"))}
}

// writePlanText explains one cluster's plan; repoDir is the fleet
// repository, whose values files it reads to say what `values` overrides.
func writePlanText(w io.Writer, p *fleet.Plan, repoDir string) error {
	c := p.Cluster
	fmt.Fprintf(w, "cluster %s", c.Name)
	if c.Region != "" {
		fmt.Fprintf(w, "  region %s", c.Region)
	}
	if len(c.Labels) > 0 {
		fmt.Fprintf(w, "  labels %s", fleet.LabelString(c.Labels))
	}
	fmt.Fprintln(w)
	if r := p.Rollout; r != nil {
		fmt.Fprintf(w, "rollout: %s\n", rolloutText(r))
	}
	fmt.Fprintln(w)

	if len(p.Bundles) == 0 {
		fmt.Fprintln(w, "no bundle selects this cluster")
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "BUNDLE\tSOURCE\tNAMESPACE\tOVERLAYS\tDEPENDS ON\tINPUTS")
		for _, b := range p.Bundles {
			digest := shortDigest(b.InputsDigest)
			if b.Failed() {
				digest = "FAILED"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", b.Name, sourceText(b.Source), dash(b.Namespace),
				dash(overlayNames(b.Overlays)), dash(strings.Join(b.DependsOn, ",")), digest)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	for _, b := range p.Bundles {
		if err := writeBundleText(w, b, repoDir); err != nil {
			return err
		}
	}

	if len(p.NotSelected) > 0 {
		fmt.Fprintf(w, "\nnot selected:\n")
		for _, n := range p.NotSelected {
			fmt.Fprintf(w, "  %s: %s\n", n.Name, strings.Join(n.Because, "; "))
		}
	}
	return nil
}

// writeBundleText explains one bundle of the plan: why it was selected,
// its overlays, its errors or how it is applied, and its values.
func writeBundleText(w io.Writer, b *fleet.Bundle, repoDir string) error {
	fmt.Fprintf(w, "\n%s\n", b.Name)
	for _, why := range b.SelectedBecause {
		fmt.Fprintf(w, "  selected: %s\n", why)
	}
	for _, o := range b.Overlays {
		at := ""
		if o.Position != nil {
			at = " (" + o.Position.String() + ")"
		}
		fmt.Fprintf(w, "  overlay %s%s: %s\n", o.Name, at, strings.Join(o.Because, "; "))
	}
	if b.Failed() {
		for _, d := range b.Errors {
			fmt.Fprintf(w, "  error: %s\n", d.Error())
		}
		return nil
	}
	if b.Source.Kind == spec.KindHelm && !b.Source.Helm.IncludeHooks {
		fmt.Fprintf(w, "  hooks: rendered but not applied (set helm: includeHooks: true to apply them)\n")
	}
	fmt.Fprintf(w, "  apply: prune=%t wait=%t timeout=%s", b.Apply.Prune, b.Apply.Wait, b.Apply.Timeout.Duration)
	if b.Apply.ServiceAccountName != "" {
		fmt.Fprintf(w, " as serviceaccount %s/%s", b.Namespace, b.Apply.ServiceAccountName)
	}
	fmt.Fprintln(w)
	if b.Rollout != nil {
		fmt.Fprintf(w, "  rollout of its own: %s\n", rolloutText(b.Rollout))
	}
	if g := b.Tenant; g != nil {
		kinds := "none"
		if len(g.ClusterKinds) > 0 {
			kinds = strings.Join(g.ClusterKinds, ", ")
		}
		fmt.Fprintf(w, "  tenant %s: objects in namespaces [%s], cluster-scoped kinds: %s\n", g.Tenant, strings.Join(g.Namespaces, ", "), kinds)
	}
	if b.Source.Kind == spec.KindHelm && len(b.Source.Helm.ValuesFiles) > 0 {
		writeValuesFiles(w, repoDir, b)
	}
	if string(b.Values) != "{}" && len(b.Values) > 0 {
		values, err := yaml.JSONToYAML(b.Values)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  values:\n%s", indent(string(values), "    "))
	}
	return nil
}

// writeValuesFiles lists a bundle's values files and, for each, the keys a
// later file or the bundle's values replace (CUE wins).
func writeValuesFiles(w io.Writer, repoDir string, b *fleet.Bundle) {
	fmt.Fprintf(w, "  values files (merged in order, under values): %s\n", strings.Join(b.Source.Helm.ValuesFiles, ", "))
	// Encrypted values files are masked: plan shows no secret.
	files, err := helm.ReadValuesFiles(context.Background(), repoDir, b.Source.Helm.ValuesFiles, sops.Files{Mode: sops.ModeMask})
	if err != nil {
		fmt.Fprintf(w, "    cannot read them: %v (rendering fails)\n", err)
		return
	}
	overrides, err := helm.Overrides(files, b.Values)
	if err != nil {
		fmt.Fprintf(w, "    cannot compare them with values: %v\n", err)
		return
	}
	for _, f := range files {
		if keys := overrides[f.Path]; len(keys) > 0 {
			fmt.Fprintf(w, "    %s: overridden by a later file or values: %s\n", f.Path, strings.Join(keys, ", "))
		}
	}
}

// planMatrix is the text of `plan --all`: clusters × bundles, ✓ selected
// (+N overlays), - not selected, FAILED. It keeps each cluster's cells,
// not its plan.
type planMatrix struct {
	bundles []string
	rows    [][]string // cluster, region, wave, cells...
	waves   bool
}

func newPlanMatrix(bundles []string) *planMatrix { return &planMatrix{bundles: bundles} }

func (m *planMatrix) add(p *fleet.Plan) {
	row := []string{p.Cluster.Name, dash(p.Cluster.Region), "-"}
	if r := p.Rollout; r != nil {
		m.waves = true
		if r.Wave != "" {
			row[2] = fmt.Sprintf("%d %s", r.WaveIndex+1, r.Wave)
		}
	}
	for _, name := range m.bundles {
		b := p.Bundle(name)
		switch {
		case b == nil:
			row = append(row, "-")
		case b.Failed():
			row = append(row, "FAILED")
		case len(b.Overlays) > 0:
			row = append(row, fmt.Sprintf("✓ +%d", len(b.Overlays)))
		default:
			row = append(row, "✓")
		}
	}
	m.rows = append(m.rows, row)
}

func (m *planMatrix) write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := []string{"CLUSTER", "REGION", "WAVE"}
	line := func(cells []string) {
		if !m.waves {
			cells = append(cells[:2:2], cells[3:]...)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	line(append(header, m.bundles...))
	for _, row := range m.rows {
		line(row)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n✓ selected (+N overlays matched), - not selected; `flotilla plan --cluster NAME` explains one\n")
	return err
}

func sourceText(s spec.Source) string {
	switch s.Kind {
	case spec.KindHelm:
		if s.Helm.Repo != "" {
			return fmt.Sprintf("helm %s %s@%s", s.Helm.Repo, s.Helm.Chart, s.Helm.Version)
		}
		return "helm " + s.Helm.Chart
	case spec.KindKustomize:
		return "kustomize " + s.Kustomize.Path
	case spec.KindManifests:
		return "manifests " + s.Manifests.Path
	case spec.KindResources:
		return "resources (cue)"
	}
	return "-"
}

func overlayNames(os []fleet.MatchedOverlay) string {
	names := make([]string, len(os))
	for i, o := range os {
		names[i] = o.Name
	}
	return strings.Join(names, ",")
}

func shortDigest(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12]
	}
	return d
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "")
}

// rolloutText says where a cluster (or a bundle) stands in a rollout.
func rolloutText(r *fleet.Rollout) string {
	if len(r.Waves) == 0 {
		return "no waves: a new revision applies everywhere at once"
	}
	text := fmt.Sprintf("wave %s (%d of %d: %s), because %s; bake %s", r.Wave, r.WaveIndex+1, len(r.Waves),
		strings.Join(r.Waves, " → "), strings.Join(r.Because, "; "), r.Bake)
	if r.MaxUnavailable > 0 {
		text += fmt.Sprintf(", at most %d applying at once", r.MaxUnavailable)
	}
	if r.Approve {
		text += ", waits for approval"
	}
	if r.Paused {
		text += ", paused"
	}
	return text
}
