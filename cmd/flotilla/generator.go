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
	"go.uber.org/zap/zapcore"
	ctrlzap "sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/flotilla-gitops/flotilla/companion"
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
	var listen, tokenFile string
	var refresh time.Duration
	cmd := &cobra.Command{
		Use:   "serve [DIR] --token-file F [--listen ADDR]",
		Short: "Serve every cluster's bundles as Argo CD plugin generator parameters",
		Long: `Serve Argo CD's ApplicationSet plugin generator protocol from the fleet in
DIR (keep the folder up to date beside the server, with a git-sync sidecar
for example): POST /api/v1/getparams.execute with the bearer token read from
--token-file answers {"output": {"parameters": [...]}}, one set per cluster
and bundle — the same parameters as the files flotilla hydrate writes to
clusters/<cluster>/argocd/<bundle>.json: cluster, bundle, namespace, path,
wave, waveIndex, region, labels, facts, dependsOn, prune,
serviceAccountName, and source (kind, path or chart, repoURL, version,
releaseName, Helm values as YAML) for an Application that renders the
bundle itself.

The generator's input parameters narrow the answer: cluster, bundle and
wave, each a string or a list. The clusters are the inventory's and those
on status branches (--status-repo, or the folder's repository's own). The
fleet is planned again when the last plans are older than --refresh; a
cluster or bundle that stops evaluating keeps its last good parameters (left
out, Argo CD would delete its Application).

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
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if tokenFile == "" {
			return errors.New("--token-file is required: the bearer token Argo CD's plugin configuration presents")
		}
		data, err := os.ReadFile(tokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		opts := companion.GeneratorOptions{Dir: repoDir(args), Path: ff.path, Token: strings.TrimSpace(string(data)), Refresh: refresh}
		if opts.Status, err = known.resolve(); err != nil {
			return err
		}
		log := ctrlzap.New(ctrlzap.WriteTo(cmd.ErrOrStderr()), ctrlzap.StacktraceLevel(zapcore.DPanicLevel)).WithName("generator")
		opts.Log = log
		g, err := companion.NewGenerator(opts)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 5 * time.Minute}
		ctx := cmd.Context()
		go func() {
			<-ctx.Done()
			shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = srv.Shutdown(shutdown)
		}()
		log.Info("serving the Argo CD plugin generator", "address", ln.Addr().String(), "path", companion.GeneratorPath, "fleet", opts.Dir)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	return cmd
}
