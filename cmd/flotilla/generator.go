package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap/zapcore"
	ctrlzap "sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/flotilla-gitops/flotilla/companion"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/sandbox"
)

func newGeneratorCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "generator",
		Short: "Argo CD ApplicationSet plugin generator (for teams that do not hydrate)",
	}
	cmd.AddCommand(newGeneratorServeCmd())
	return cmd
}

func newGeneratorServeCmd() *cobra.Command {
	var listen, tokenFile, prefix, approvals string
	var refresh time.Duration
	cmd := &cobra.Command{
		Use:   "serve [DIR] --token-file F [--listen ADDR]",
		Short: "Serve every cluster's bundles as Argo CD plugin generator parameters",
		Long: `Serve Argo CD's ApplicationSet plugin generator protocol from the fleet in
DIR (keep the folder up to date beside the server, with a git-sync sidecar
for example): POST /api/v1/getparams.execute with the bearer token read from
--token-file answers {"output": {"parameters": [...]}}, one set per cluster
and bundle — the same parameters as the files flotilla hydrate writes to
clusters/<cluster>/argocd/<bundle>.json: cluster, bundle, namespace,
hydratedPath, wave, waveIndex, region, labels, facts, dependsOn, prune,
serviceAccountName, and source (kind, path or chart, repoURL, version,
releaseName, Helm values as YAML) for an Application that renders the
bundle itself — and revision, the fleet commit they were planned at, for
the Application's targetRevision.

The rollout gates them as it gates agents and hydration: DIR's commit
(its checkout) is the revision, and a cluster its wave holds (earlier
waves not Ready or not baked, no approval on --approvals-branch, paused,
halted) gets the parameters of the revision its status branch says it
applied, planned at that commit, or those served before; a cluster that
has neither gets none until its wave opens.

The generator's input parameters narrow the answer: cluster, bundle and
wave, each a string or a list. The clusters are the inventory's and those
on status branches (--status-repo, or the folder's repository's own). The
fleet is planned again when the last plans are older than --refresh; a
cluster or bundle that stops evaluating keeps its last good parameters (left
out, Argo CD would delete its Application).

The fleet is planned in a sandbox worker, bounded by --eval-timeout and
--eval-memory, in the background: requests are answered at once with the
last good parameters while it runs, and a fleet whose evaluation runs away
fails that refresh alone (logged) instead of holding up every request. The
server plans once before it listens.

GET /healthz answers ok. Serve it inside the cluster behind a Service; Argo
CD's plugin ConfigMap names the URL and the Secret key of the token.`,
		Example: `  flotilla generator serve /fleet --token-file /var/run/secrets/flotilla/token --listen :4355`,
		Args:    cobra.MaximumNArgs(1),
	}
	ff := addFleetFlags(cmd)
	known := addKnownClusterFlags(cmd)
	fs := cmd.Flags()
	fs.StringVar(&listen, "listen", ":4355", "`ADDRESS` to serve on")
	fs.StringVar(&tokenFile, "token-file", "", "`FILE` holding the bearer token Argo CD presents (required)")
	fs.DurationVar(&refresh, "refresh", 30*time.Second, "how old the plans may be before a request plans the fleet again")
	fs.StringVar(&approvals, "approvals-branch", report.DefaultApprovalsBranch, "branch of the status repository holding rollout approvals (flotilla rollout approve)")
	fs.StringVar(&prefix, "path-prefix", "", "the `PATH` the server is reached under behind a proxy (Argo CD's baseUrl ends with it): it answers PATH/api/v1/getparams.execute and PATH/healthz")
	// Here the bounds are each refresh's, in its worker, not the command's.
	setFlag(fs, "eval-timeout", "2m", "bound each planning of the fleet (in a sandbox worker): a slower one fails, and the last good parameters stay")
	setFlag(fs, "eval-memory", "2Gi", "bound the memory of each planning of the fleet (Kubernetes quantity): a larger one fails, and the last good parameters stay")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if tokenFile == "" {
			return errors.New("--token-file is required: the bearer token Argo CD's plugin configuration presents")
		}
		data, err := os.ReadFile(tokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		opts := companion.GeneratorOptions{Dir: repoDir(args), Path: ff.path, Token: strings.TrimSpace(string(data)), Refresh: refresh, PathPrefix: prefix, ApprovalsBranch: approvals}
		if opts.Status, err = known.resolve(); err != nil {
			return err
		}
		log := ctrlzap.New(ctrlzap.WriteTo(cmd.ErrOrStderr()), ctrlzap.StacktraceLevel(zapcore.DPanicLevel)).WithName("generator")
		opts.Log = log
		return serveGenerator(cmd.Context(), opts, ff, listen)
	}
	return cmd
}

// setFlag gives a flag another default and usage for one command.
func setFlag(fs *pflag.FlagSet, name, value, usage string) {
	f := fs.Lookup(name)
	if err := f.Value.Set(value); err != nil {
		panic(fmt.Sprintf("--%s default %q: %v", name, value, err))
	}
	f.DefValue, f.Usage = value, usage
}

// serveGenerator plans the fleet once, in a pool of sandbox workers bounded
// by the fleet flags, and serves the generator on listen until ctx ends.
func serveGenerator(ctx context.Context, opts companion.GeneratorOptions, ff *fleetFlags, listen string) error {
	memory, err := quantity("--eval-memory", ff.evalMemory)
	if err != nil {
		return err
	}
	if ff.evalTimeout <= 0 {
		return errors.New("--eval-timeout must be positive")
	}
	pool, err := sandbox.New(sandbox.Options{Memory: memory, PlanTimeout: ff.evalTimeout})
	if err != nil {
		return err
	}
	defer pool.Close()
	opts.Pool = pool
	g, err := companion.NewGenerator(opts)
	if err != nil {
		return err
	}
	if err := g.Refresh(ctx); err != nil {
		// Served anyway: requests say why, and the next refresh may
		// succeed (a sidecar updates the folder).
		opts.Log.Error(err, "the fleet does not plan yet")
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 5 * time.Minute}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	opts.Log.Info("serving the Argo CD plugin generator", "address", ln.Addr().String(), "path", opts.PathPrefix+companion.GeneratorPath, "fleet", opts.Dir)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
