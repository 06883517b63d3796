package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/english"
	"github.com/flotilla-gitops/flotilla/internal/outdir"
	"github.com/flotilla-gitops/flotilla/render/sops"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
)

// renderFlags are the flags of `flotilla render`.
type renderFlags struct {
	bundle  string
	out     string
	all     bool
	decrypt bool
	limits  *limitFlags
}

func newRenderCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "render [DIR] (--cluster NAME | --name NAME [--region R] [--label k=v]... | --all --out DIR)",
		Short: "Print the Kubernetes objects a cluster gets from the fleet",
		Long: `Evaluate the fleet in DIR (default: the current folder) for a cluster and
render every bundle it selects — Helm charts, Kustomize overlays, plain
manifests, CUE objects — into the objects that would be applied: namespaced,
labelled app.kubernetes.io/managed-by=flotilla and flotilla.dev/bundle=NAME,
sorted. Nothing is applied; no cluster is needed.

The objects go to stdout as a YAML stream (-o json: a JSON list), or with
--out DIR one file per bundle, DIR/<bundle>.yaml. Helm hooks that the
bundle does not apply, and warnings, go to stderr.

--all renders every cluster of the fleet's inventory into
DIR/<cluster>/<bundle>.yaml, on all CPUs, rendering each distinct bundle
input once however many clusters share it: commit the folder, or diff it
in CI, to review a change for the whole fleet.

SOPS-encrypted files (manifests, kustomization trees, values files) are
shown masked: their structure, and "sops-encrypted:<hash>" for each
encrypted value. --decrypt with --age-key-file shows them decrypted (in
memory: nothing decrypted is written anywhere but the output asked for).

A bundle that fails is reported (file:line for fleet problems) and the
others are still rendered; the exit code is then 1.`,
		Example: `  flotilla render --cluster prod-eu-1
  flotilla render --cluster prod-eu-1 --bundle web -o json
  flotilla render --name edge-7 --region eu-west-1 --label env=prod --out /tmp/edge-7
  flotilla render --all --out rendered/
  flotilla render --cluster prod-eu-1 --decrypt --age-key-file ~/.config/flotilla/prod.agekey`,
		Args: cobra.MaximumNArgs(1),
	}
	out := addOutputFlag(cmd, "yaml", "json").alias("text", "yaml") // manifests: their text is YAML
	ff := addFleetFlags(cmd)
	addQuietFlag(cmd)
	id := addIdentityFlags(cmd)
	rf := &renderFlags{}
	cmd.Flags().StringVar(&rf.bundle, "bundle", "", "render only the bundle `NAME`")
	completeFromFleet(cmd, "bundle", completeBundles)
	cmd.Flags().StringVar(&rf.out, "out", "", "write `DIR`/<bundle>.yaml (with --all: DIR/<cluster>/<bundle>.yaml) instead of printing")
	cmd.Flags().BoolVar(&rf.all, "all", false, "render every cluster of the inventory (needs --out)")
	cmd.Flags().BoolVar(&rf.decrypt, "decrypt", false, "show SOPS-encrypted files decrypted (needs --age-key-file); without it they are masked")
	rf.limits = addLimitFlags(cmd, false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := out.validate(); err != nil {
			return err
		}
		if rf.all && (id.given() || rf.out == "") {
			return errors.New("--all renders the whole inventory into --out DIR; it takes no --cluster or identity flags")
		}
		rf.limits.sources.Secrets = sops.ModeMask
		if rf.decrypt {
			if len(rf.limits.sources.AgeKeyFiles) == 0 {
				return errors.New("--decrypt needs the age identities to decrypt with: --age-key-file FILE")
			}
			rf.limits.sources.Secrets = sops.ModeDecrypt
		}
		f, err := ff.load(cmd.Context(), args)
		if err != nil {
			return err
		}
		opts, closeWorkers, err := rf.limits.options(planrender.Options{})
		if err != nil {
			return err
		}
		defer closeWorkers()
		r := planrender.New(repoDir(args), opts)
		if rf.all {
			return renderAll(cmd.Context(), cmd.ErrOrStderr(), progressTo(cmd), f, r, rf)
		}
		c, err := id.resolve(f)
		if err != nil {
			return err
		}
		plan, err := planCluster(cmd.Context(), f, c)
		if err != nil {
			return err
		}
		return renderOne(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), plan, r, rf, out)
	}
	return cmd
}

// repoDir is the repository folder the command's argument names.
func repoDir(args []string) string {
	if len(args) > 0 {
		return args[0]
	}
	return findRepoDir()
}

// findRepoDir is the fleet repository the current folder is in, as git
// finds its repository: the current folder when it holds CUE files or is
// the root of a Git work tree, else the nearest folder above that does
// (so a command run in charts/web of the fleet works on the fleet), as a
// path from here ("..", "../.."); "." when there is none.
func findRepoDir() string {
	here, err := os.Getwd()
	if err != nil {
		return "."
	}
	for dir := here; ; {
		cue, _ := filepath.Glob(filepath.Join(dir, "*.cue"))
		_, gitErr := os.Lstat(filepath.Join(dir, ".git"))
		if len(cue) > 0 || gitErr == nil {
			rel, err := filepath.Rel(here, dir)
			if err != nil {
				return "."
			}
			return rel
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "."
		}
		dir = parent
	}
}

// renderOne renders one cluster's plan to stdout or --out.
func renderOne(ctx context.Context, stdout, stderr io.Writer, plan *fleet.Plan, r *planrender.Renderer, rf *renderFlags, out *outputFlag) error {
	if rf.bundle != "" {
		b := plan.Bundle(rf.bundle)
		if b == nil {
			return unselectedBundle(plan, rf.bundle)
		}
		plan.Bundles = []*fleet.Bundle{b}
	}
	rendered, err := r.RenderPlan(ctx, plan)
	if err != nil {
		return err
	}
	var dir *outputDir
	if rf.out != "" {
		if dir, err = openOutput(rf.out); err != nil {
			return err
		}
		defer dir.Close()
	}
	var objects []*unstructured.Unstructured
	failed := 0
	for _, b := range rendered {
		if b.Err != nil {
			failed++
			fmt.Fprintln(stderr, b.Err)
			continue
		}
		reportBundle(stderr, b)
		if dir != nil {
			if err := dir.writeBundle(b.Name+".yaml", b.Result.Objects); err != nil {
				return err
			}
			continue
		}
		objects = append(objects, b.Result.Objects...)
	}
	if rf.out == "" {
		if out.format == "json" {
			if err := out.write(stdout, objects, nil); err != nil {
				return err
			}
		} else if err := writeYAMLStream(stdout, objects); err != nil {
			return err
		}
	}
	if failed > 0 {
		return &reportedError{fmt.Errorf("%s failed", english.Count(failed, "bundle"))}
	}
	return nil
}

// unselectedBundle explains why --bundle names nothing to render.
func unselectedBundle(plan *fleet.Plan, name string) error {
	for _, n := range plan.NotSelected {
		if n.Name == name {
			return fmt.Errorf("bundle %s does not select cluster %s: %s", name, plan.Cluster.Name, strings.Join(n.Because, "; "))
		}
	}
	return fmt.Errorf("the fleet has no bundle %q", name)
}

// renderAll renders every inventory cluster into --out, on all CPUs. One
// goroutine plans the clusters in order while the others render what it
// planned, and each cluster's files are written as soon as its bundles
// (and the clusters' before it) are rendered: neither the plans nor the
// renders of the inventory are held (5,000 clusters' plans alone are some
// 150 MB), and one evaluator's memory is, not one per CPU.
func renderAll(ctx context.Context, stderr, progress io.Writer, f *fleet.Fleet, r *planrender.Renderer, rf *renderFlags) error {
	tuneGCForBatch()
	dir, err := openOutput(rf.out)
	if err != nil {
		return err
	}
	defer dir.Close()
	keep := func(b *fleet.Bundle) bool { return rf.bundle == "" || b.Name == rf.bundle }
	fmt.Fprintf(progress, "rendering %s into %s\n", english.Count(len(f.Inventory()), "cluster"), rf.out)
	var rendered atomic.Int64
	stopProgress := everyFewSeconds(progress, func() string {
		return "rendered " + english.Count(int(rendered.Load()), "bundle")
	})
	failed, total, planned := 0, 0, 0
	s := r.Stream(ctx, keep, func() { rendered.Add(1) }, func(_ int, p *fleet.Plan, bundles []planrender.Bundle) error {
		for _, res := range bundles {
			if res.Err != nil {
				failed++
				fmt.Fprintln(stderr, res.Err)
				continue
			}
			if err := dir.writeBundle(filepath.Join(p.Cluster.Name, res.Name+".yaml"), res.Result.Objects); err != nil {
				return err
			}
		}
		return nil
	})
	problems, err := eachInventoryPlan(ctx, progress, f, 1, func(p *fleet.Plan) error {
		for _, b := range p.Bundles {
			if keep(b) {
				total++
			}
		}
		planned++
		return s.Add(planned-1, p)
	})
	// The stream's error is why planning stopped, if it stopped it.
	if serr := s.Wait(); serr != nil {
		err = fmt.Errorf("rendering the bundles of %s into %s (%s rendered): %w",
			english.Count(planned, "cluster"), rf.out, english.Count(int(rendered.Load()), "bundle"), serr)
	}
	stopProgress()
	if err != nil {
		return err
	}
	for _, d := range problems {
		fmt.Fprintln(stderr, d.Error())
	}
	fmt.Fprintf(progress, "rendered %s for %s (%s) into %s\n",
		english.Count(total-failed, "bundle"), english.Count(planned, "cluster"), english.Count(r.Distinct(), "distinct render"), rf.out)
	if failed > 0 || len(problems) > 0 {
		return &reportedError{fmt.Errorf("%s failed", english.Count(failed+len(problems), "bundle"))}
	}
	return nil
}

// reportBundle tells stderr about hooks left out and warnings.
func reportBundle(stderr io.Writer, b planrender.Bundle) {
	if n := len(b.Result.Hooks); n > 0 {
		fmt.Fprintf(stderr, "bundle %s: %d Helm hooks rendered but not applied (set helm: includeHooks: true to apply them)\n", b.Name, n)
	}
	for _, w := range b.Result.Warnings {
		fmt.Fprintf(stderr, "bundle %s: warning: %s\n", b.Name, w)
	}
}

// outputDir is the --out folder, written only through its root: a symlink
// already in it (a committed rendered/ folder is the fleet's to shape) can
// never lead a write outside, and a file that is a symlink is replaced,
// not written through.
type outputDir struct {
	root *os.Root
	dir  string
}

// openOutput creates the --out folder if needed and opens it.
func openOutput(dir string) (*outputDir, error) {
	root, err := outdir.Open(dir)
	if err != nil {
		return nil, err
	}
	return &outputDir{root: root, dir: dir}, nil
}

func (o *outputDir) Close() error { return o.root.Close() }

// writeBundle writes objects as a YAML stream to rel, a file of the output
// folder, creating folders.
func (o *outputDir) writeBundle(rel string, objects []*unstructured.Unstructured) error {
	if err := o.root.MkdirAll(filepath.Dir(rel), 0o755); err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Join(o.dir, rel), err)
	}
	// A link (or anything) in the way is removed, never followed.
	if err := o.root.Remove(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("writing %s: %w", filepath.Join(o.dir, rel), err)
	}
	f, err := o.root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Join(o.dir, rel), err)
	}
	if err := writeYAMLStream(f, objects); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// writeYAMLStream writes objects as YAML documents.
func writeYAMLStream(w io.Writer, objects []*unstructured.Unstructured) error {
	for _, o := range objects {
		data, err := yaml.Marshal(o.Object)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "---\n%s", data); err != nil {
			return err
		}
	}
	return nil
}
