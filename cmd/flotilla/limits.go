package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/flotilla-gitops/flotilla/render"
	"github.com/flotilla-gitops/flotilla/render/sops"
	"github.com/flotilla-gitops/flotilla/sync/planrender"
	"github.com/flotilla-gitops/flotilla/sync/sandbox"
)

// limitFlags bound the work a fleet controls, for every command that
// renders and for the agent.
type limitFlags struct {
	sandbox         bool
	renderTimeout   time.Duration
	evalTimeout     time.Duration
	memory          string
	maxObjects      int
	maxManifestSize string
	maxBundleSize   string
	maxClusterSize  string
	// sources say what rendering may fetch (remote bases, chart
	// dependencies, registries) and with which credentials.
	sources planrender.Sources
}

func addLimitFlags(cmd *cobra.Command, agent bool) *limitFlags {
	lf := &limitFlags{}
	fs := cmd.Flags()
	fs.BoolVar(&lf.sandbox, "sandbox", true, "render each bundle in a worker process that is killed at --render-timeout or --render-memory, with no network unless the bundle needs it (false: in this process, unbounded in memory)")
	fs.DurationVar(&lf.renderTimeout, "render-timeout", render.DefaultTimeout, "bound of one bundle's render, unless the bundle sets renderTimeout; a slower bundle fails alone")
	fs.StringVar(&lf.memory, "render-memory", "1Gi", "bound of a render worker's memory (Kubernetes quantity); a bundle that needs more fails alone")
	fs.IntVar(&lf.maxObjects, "max-objects", render.DefaultMaxObjects, "most objects one bundle may render")
	fs.StringVar(&lf.maxManifestSize, "max-manifest-size", "16Mi", "largest manifest file a bundle may read (Kubernetes quantity)")
	fs.StringVar(&lf.maxBundleSize, "max-bundle-size", "128Mi", "largest size of one bundle's objects as JSON (Kubernetes quantity); a larger bundle fails alone")
	fs.StringVar(&lf.maxClusterSize, "max-cluster-size", "384Mi", "largest size of one cluster's bundles' objects together as JSON, which are held at once to apply (Kubernetes quantity); past it, bundles fail in plan order")
	if agent {
		fs.DurationVar(&lf.evalTimeout, "eval-timeout", sandbox.DefaultPlanTimeout, "bound of evaluating the fleet for this cluster (in a worker, with --render-memory); longer applies and prunes nothing")
	}
	addSourceFlags(cmd, &lf.sources, agent)
	return lf
}

// addSourceFlags adds the flags saying what rendering may fetch from
// outside the fleet repository. The agent fetches chart dependencies by
// default (it needs them to apply anything); the commands, which also run
// on pull requests in CI, only when asked.
func addSourceFlags(cmd *cobra.Command, s *planrender.Sources, agent bool) {
	cmd.Flags().BoolVar(&s.AllowRemoteBases, "allow-remote-bases", false, "let kustomizations use remote (git, HTTP) bases")
	addChartFlags(cmd, s, agent)
	cmd.Flags().StringSliceVar(&s.AgeKeyFiles, "age-key-file", nil, "age identity `FILE` (age-keygen output) to decrypt SOPS-encrypted files of the fleet with, in memory (repeatable; used by the agent, apply, diff and render --decrypt; never SOPS_AGE_KEY_FILE or ~/.config/sops)")
}

// addChartFlags adds the flags saying where charts come from.
func addChartFlags(cmd *cobra.Command, s *planrender.Sources, agent bool) {
	fs := cmd.Flags()
	fs.BoolVar(&s.AllowChartDownloads, "allow-chart-downloads", agent, "fetch the dependencies a chart's Chart.lock lists when they are not vendored in its charts/ folder (HTTP and OCI repositories; never written into the fleet repository)")
	fs.StringVar(&s.ChartCacheDir, "chart-cache-dir", "", "`DIR` for charts fetched from chart repositories and registries (default: the user cache, ~/.cache/flotilla/charts)")
	fs.StringVar(&s.RegistryConfig, "registry-config", "", "`FILE` of OCI registry credentials in Docker's config.json format (auths); only this file is read, never ~/.docker/config.json (default: registries are asked anonymously)")
	fs.StringSliceVar(&s.PlainHTTPRegistries, "plain-http-registry", nil, "OCI registry (host[:port]) to reach over plain HTTP instead of HTTPS (repeatable)")
}

// resolve checks the flags: the render limits, the manifest size bound,
// and the sandbox's options (nil without --sandbox).
func (lf *limitFlags) resolve() (render.Limits, int64, *sandbox.Options, error) {
	memory, err := quantity("--render-memory", lf.memory)
	if err != nil {
		return render.Limits{}, 0, nil, err
	}
	maxSize, err := quantity("--max-manifest-size", lf.maxManifestSize)
	if err != nil {
		return render.Limits{}, 0, nil, err
	}
	if lf.renderTimeout <= 0 || lf.maxObjects <= 0 {
		return render.Limits{}, 0, nil, fmt.Errorf("--render-timeout and --max-objects must be positive")
	}
	bundleSize, err := quantity("--max-bundle-size", lf.maxBundleSize)
	if err != nil {
		return render.Limits{}, 0, nil, err
	}
	clusterSize, err := quantity("--max-cluster-size", lf.maxClusterSize)
	if err != nil {
		return render.Limits{}, 0, nil, err
	}
	limits := render.Limits{Timeout: lf.renderTimeout, MaxObjects: lf.maxObjects, MaxBytes: bundleSize, MaxClusterBytes: clusterSize}
	if !lf.sandbox {
		return limits, maxSize, nil, nil
	}
	return limits, maxSize, &sandbox.Options{Memory: memory, PlanTimeout: lf.evalTimeout, MaxManifestSize: maxSize, MaxOutput: bundleSize}, nil
}

// options fill planrender options with the limits and, with --sandbox,
// renderers in a pool of workers, which close ends.
func (lf *limitFlags) options(opts planrender.Options) (planrender.Options, func(), error) {
	limits, maxSize, sb, err := lf.resolve()
	if err != nil {
		return opts, nil, err
	}
	if err := checkKeys(&lf.sources); err != nil {
		return opts, nil, err
	}
	opts.MaxManifestSize, opts.Limits, opts.Sources = maxSize, limits, lf.sources
	if sb == nil {
		return opts, func() {}, nil
	}
	sb.Sources = opts.Sources
	pool, err := sandbox.New(*sb)
	if err != nil {
		return opts, nil, err
	}
	opts.Renderers = pool.Renderers()
	return opts, func() { pool.Close() }, nil
}

// quantity parses a size such as 1Gi or 512Mi.
func quantity(flag, s string) (int64, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil || q.Sign() <= 0 {
		return 0, fmt.Errorf("%s %q: want a positive size such as 1Gi or 512Mi", flag, s)
	}
	return q.Value(), nil
}

// checkKeys reads the age identity files now, when the command decrypts,
// so that a wrong path or file fails the command at once, not each bundle.
func checkKeys(s *planrender.Sources) error {
	if s.Secrets != sops.ModeDecrypt || len(s.AgeKeyFiles) == 0 {
		return nil
	}
	_, err := sops.LoadKeyFiles(s.AgeKeyFiles...)
	return err
}
