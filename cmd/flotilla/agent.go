package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ctrlzap "sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/flotilla-gitops/flotilla/companion"
	"github.com/flotilla-gitops/flotilla/deploy"
	"github.com/flotilla-gitops/flotilla/render/sops"
	"github.com/flotilla-gitops/flotilla/sync/agent"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/notify"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// agentFlags are the flags of `flotilla agent`.
type agentFlags struct {
	limits       *limitFlags
	statusRepo   string
	ociSource    string
	statusPrefix string
	// legacyStatusBranch is the flag --status-prefix replaced; set, it
	// explains.
	legacyStatusBranch string
	statusAuth         source.Auth
	noStatus           bool
	heartbeat          time.Duration
	fullSync           time.Duration
	workerIdle         time.Duration
	opts               agent.Options
	labels             []string
	once               bool
	listen             string
	webhookSecret      string
	notifyConfig       string
	logFormat          string
	verbose            bool
	kube               *kubeFlags
	observe            string
	self               string
}

// agentLong is the command's --help.
const agentLong = `Run Flotilla's agent for one cluster. Every --interval (jittered), and
within --trigger-spread when a Git host's webhook POSTs to /trigger, it asks the repository for
the branch tip; when the revision, the cluster's identity or its discovered
facts changed (or the last pass failed), it fetches that revision, evaluates
the fleet for this cluster, renders its bundles and applies them. An idle
pass costs one ls-remote and a few reads: no fetch, no render, no write.

A pass applies in proportion to the change: only the objects whose rendered
form changed since the inventory recorded them, the new ones, the Secrets
of a bundle whose render changed, and those the drift watch saw changed by
someone else, lose a field Flotilla set, or go (dry-run first, then
corrected or reported); the others cost no API request. Every
--full-sync-interval (jittered), after a restart, when a watch broke, when
the cluster's API changed or a CRD is applied, a pass checks every object
with the cluster, as a pass with --full-sync-interval 0 always does.

Identity: --name, --region and --label, overridden by the ConfigMap
flotilla-system/flotilla-identity when it exists (keys name, region,
label.<key>), so relabelling a cluster needs no restart. Facts (Kubernetes
version, API groups and versions, node regions and zones) are discovered
every pass.

Credentials come from files (mounted Secrets): --password-file for HTTPS,
--ssh-key with --known-hosts for SSH. A remote that is down or refuses the
credentials leaves the cluster as it is; the next pass retries.

After each pass the cluster's status is committed to its own status branch,
flotilla/status/<name> of the fleet repository (--status-prefix,
--status-repo): one push, only when it changed, plus a --heartbeat that
replaces the previous heartbeat commit.

When the fleet has a rollout (waves), the agent reads every cluster's status
branch and applies a new revision only when its wave's turn has come: the
earlier waves Ready at it for the bake time, no failure there, an approval
when its wave asks for one (--approvals-branch). Until then it keeps what it
applied, with drift correction, and reports phase Waiting.

With --observe flux the agent applies nothing: Flux applies what flotilla
hydrate wrote to the hydrated branch (--repo, --branch: the branch Flux
follows), and the agent publishes the state of the cluster's Flux
Kustomizations (the ones hydrate generated, labelled
flotilla.dev/cluster=<name>) to the cluster's status branch in Flotilla's
format, each bundle at the source commit it was hydrated from, so that
flotilla status, rollouts and previews work the same for a Flux fleet.

SIGTERM or Ctrl-C ends the pass under way cleanly (what was applied is
recorded) and exits 0: that is how Kubernetes stops a pod. A second signal
exits at once. --once runs a single pass and exits 1 if it failed.`

func newAgentCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent --repo URL --name NAME [--region R] [--label k=v]...",
		Short: "Run the pull loop in a cluster: Git → plan → render → apply → status",
		Long:  agentLong,
		Example: `  flotilla agent --repo https://git.example.com/platform/fleet.git --name prod-eu-1 \
    --region eu-west-1 --label env=prod --label class=regulated \
    --username flotilla --password-file /etc/flotilla/git/token --interval 1m

  flotilla agent --repo ssh://git@git.example.com/platform/fleet.git --ssh-key /etc/flotilla/git/id \
    --known-hosts /etc/flotilla/git/known_hosts --name lab-1 --path examples/independent --once`,
		Args: cobra.NoArgs,
		// SIGTERM is how the agent is meant to stop: its exit status is its
		// own, not 128 + the signal.
		Annotations: map[string]string{cleanExitAnnotation: "true"},
	}
	af := &agentFlags{opts: agent.Options{Apply: apply.DefaultOptions()}, kube: addKubeFlags(cmd)}
	fs := cmd.Flags()
	src := &af.opts.Source
	fs.StringVar(&src.URL, "repo", "", "`URL` of the fleet repository (https://, ssh://, file://), or of the fleet's OCI artifact (oci://REGISTRY/REPO[:TAG|@DIGEST], as flotilla publish pushes it)")
	fs.StringVar(&af.ociSource, "source", "", "the fleet's OCI artifact, oci://REGISTRY/REPO[:TAG|@DIGEST] (flotilla publish), followed instead of --repo with one HEAD request per poll; the status still goes to a Git repository (--status-repo)")
	fs.StringVar(&src.Branch, "branch", "main", "`BRANCH` to follow")
	fs.StringVar(&src.Tag, "tag", "", "`TAG` to follow instead of a branch")
	fs.StringVar(&src.Commit, "commit", "", "pin this commit (full hash, `SHA`) instead of following a branch or tag")
	fs.StringVar(&src.CacheDir, "cache-dir", "", "`DIR` for checkouts (default: a temporary folder)")
	fs.StringVar(&src.Auth.Username, "username", "", "HTTPS user `NAME`")
	fs.StringVar(&src.Auth.PasswordFile, "password-file", "", "`FILE` holding the HTTPS password or token")
	fs.StringVar(&src.Auth.SSHKeyFile, "ssh-key", "", "`FILE` holding the SSH private key")
	fs.StringVar(&src.Auth.SSHKeyPassphraseFile, "ssh-key-passphrase-file", "", "file holding the SSH key's passphrase")
	fs.StringVar(&src.Auth.KnownHostsFile, "known-hosts", "", "known_hosts `FILE` the SSH server's key must be in")
	fs.BoolVar(&src.Auth.InsecureIgnoreHostKey, "insecure-ignore-host-key", false, "accept any SSH host key (tests only)")
	fs.StringVar(&af.opts.Path, "path", ".", "`DIR` of fleet.cue inside the repository")
	fs.StringArrayVar(&af.opts.TrustedKeys, "verify-key", nil, "trusted key file: armored OpenPGP public keys or SSH public keys; when given, only commits signed by one of them are applied — from an OCI source (--source), the commit the artifact carries, or its publisher's SSH signature (publish --sign-key) (repeatable)")
	id := &af.opts.Identity
	fs.StringVar(&id.Name, "name", os.Getenv("FLOTILLA_CLUSTER_NAME"), "this cluster's `NAME` (env FLOTILLA_CLUSTER_NAME)")
	fs.StringVar(&id.Region, "region", os.Getenv("FLOTILLA_CLUSTER_REGION"), "this cluster's `REGION` (env FLOTILLA_CLUSTER_REGION)")
	fs.StringArrayVar(&af.labels, "label", nil, "a label of this cluster as `KEY=VALUE`, repeatable")
	fs.StringVar(&id.ConfigMapNamespace, "identity-namespace", "flotilla-system", "namespace of the identity ConfigMap")
	fs.StringVar(&id.ConfigMapName, "identity-configmap", "flotilla-identity", "name of the identity ConfigMap (empty: none)")
	fs.DurationVar(&af.opts.Interval, "interval", time.Minute, "time between polls of the repository")
	fs.DurationVar(&af.opts.TriggerSpread, "trigger-spread", 10*time.Second, "a webhook's pass starts at a random time within this `WINDOW`, so that a push fanned out to every cluster spreads the fetches over it (0: at once; a fleet of N clusters wants about N divided by the fetches per second its Git host serves, docs/scale.md)")
	fs.DurationVar(&af.fullSync, "full-sync-interval", agent.DefaultFullSyncInterval, "how often a pass checks every applied object with the cluster (a dry run of each: drift corrected or reported) even when nothing changed, jittered; in between, a pass applies only the objects whose rendered form changed and those the drift watch saw move (0: every pass is full)")
	fs.BoolVar(&af.once, "once", false, "run one pass and exit (1 if it failed)")
	fs.StringVar(&af.opts.Apply.InventoryNamespace, "inventory-namespace", af.opts.Apply.InventoryNamespace, "namespace of the bundles' inventories")
	fs.BoolVar(&af.opts.Apply.AllowMassDeletion, "allow-mass-deletion", false, "let a pass delete more than half of the managed objects")
	fs.StringVar(&af.statusRepo, "status-repo", "", "repository of the status branches, a `URL` (default: --repo, with its credentials)")
	fs.StringVar(&af.statusPrefix, "status-prefix", report.DefaultPrefix, "prefix of the status branches: this cluster reports on PREFIX/<name>")
	fs.StringVar(&af.legacyStatusBranch, "status-branch", "", "replaced by --status-prefix")
	_ = fs.MarkHidden("status-branch")
	addGitAuthFlags(cmd, &af.statusAuth, "status-", " for --status-repo")
	fs.StringVar(&af.opts.ApprovalsBranch, "approvals-branch", report.DefaultApprovalsBranch, "branch of the status repository holding rollout approvals (flotilla rollout approve)")
	fs.BoolVar(&af.noStatus, "no-status", false, "do not publish the cluster's status to Git (a fleet with rollout waves needs it)")
	fs.DurationVar(&af.workerIdle, "worker-idle-timeout", 30*time.Second, "end a render worker that has had nothing to do for this long (its memory goes back between the passes that render); 0 keeps it")
	fs.DurationVar(&af.heartbeat, "heartbeat", 10*time.Minute, "commit an unchanged status this often, so a silent cluster stands out")
	fs.StringVar(&af.listen, "listen", ":8080", "`ADDRESS` of /healthz, /readyz, /trigger and /metrics (empty: none)")
	fs.StringVar(&af.notifyConfig, "notify-config", "", "`FILE` naming the webhook receivers of the agent's events (json, slack or cloudevents; see docs/agent-operations.md)")
	fs.StringVar(&af.webhookSecret, "webhook-secret-file", "", "file holding the shared secret of /trigger (none, or a file that does not exist, as when the optional flotilla-webhook Secret is absent: /trigger refuses all)")
	fs.StringVar(&af.self, "self-deployment", "", "the agent's own Deployment as `NAMESPACE/NAME` (default: flotilla-system/flotilla-agent when running in a pod; none outside one); when a bundle changes its pod template, the agent publishes its status, then applies it last and is replaced")
	fs.DurationVar(&af.opts.SelfUpdateDeadline, "self-update-deadline", 5*time.Minute, "after the agent applied its own new Deployment, how long the new agent has to report before readers take the cluster as Failed")
	fs.StringVar(&af.logFormat, "log-format", "json", "log format: json|console")
	fs.BoolVarP(&af.verbose, "verbose", "v", false, "also log idle passes")
	fs.StringVar(&af.observe, "observe", "", "observe another controller instead of applying: flux (reads the Flux Kustomizations flotilla hydrate generated; --repo and --branch name the hydrated branch)")
	af.limits = addLimitFlags(cmd, true)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return af.run(cmd.Context(), cmd.ErrOrStderr()) }
	return cmd
}

func (af *agentFlags) run(ctx context.Context, stderr io.Writer) error {
	if err := af.validate(); err != nil {
		return err
	}
	tuneGCForAgent()
	level := 0
	if af.verbose {
		level = 1
	}
	// Errors the agent logs are the fleet's or the environment's (a bad
	// commit, Git down), never the program's: no Go stack traces in them.
	log := ctrlzap.New(ctrlzap.WriteTo(stderr), ctrlzap.UseDevMode(af.logFormat == "console"), ctrlzap.Level(zapLevel(level)),
		ctrlzap.StacktraceLevel(zapcore.DPanicLevel)).WithName("agent")

	if !af.noStatus {
		status, err := af.statusOptions()
		if err != nil {
			return err
		}
		af.opts.Status = status
	}
	if af.observe != "" {
		return af.runObserver(ctx, log)
	}
	if err := af.loadNotify(); err != nil {
		return err
	}
	if err := af.renderOptions(); err != nil {
		return err
	}
	cfg, err := af.kube.restConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	if af.opts.Apply.Self, err = selfDeployment(af.self); err != nil {
		return err
	}
	a, err := agent.New(cfg, af.opts, log)
	if err != nil {
		return err
	}
	defer a.Close()
	if af.once {
		p := a.RunOnce(ctx)
		a.Log(p)
		if p.Failed() {
			return &reportedError{errors.New("pass failed")}
		}
		return nil
	}
	if af.listen != "" {
		secret, err := webhookSecret(af.webhookSecret, log)
		if err != nil {
			return err
		}
		srv := &http.Server{Addr: af.listen, Handler: a.Handler(secret), ReadHeaderTimeout: 10 * time.Second}
		ln, err := net.Listen("tcp", af.listen)
		if err != nil {
			return err
		}
		go func() { _ = srv.Serve(ln) }()
		defer func() {
			shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(shutdown)
		}()
		log.Info("serving", "address", ln.Addr().String())
	}
	log.Info("starting", "repo", source.RedactURL(af.opts.Source.URL), "cluster", af.opts.Identity.Name, "interval", af.opts.Interval.String())
	return a.Run(ctx)
}

// loadNotify reads --notify-config, when given.
func (af *agentFlags) loadNotify() error {
	if af.notifyConfig == "" {
		return nil
	}
	cfg, err := notify.Load(af.notifyConfig)
	af.opts.Notify = cfg
	return err
}

// runObserver runs the agent in --observe mode.
func (af *agentFlags) runObserver(ctx context.Context, log logr.Logger) error {
	if af.observe != "flux" {
		return fmt.Errorf("--observe %q: the agent observes flux", af.observe)
	}
	if af.opts.Status == nil {
		return errors.New("--observe publishes the status: it cannot run with --no-status")
	}
	hydratedAuth, err := af.opts.Source.Auth.Method(af.opts.Source.URL)
	if err != nil {
		return err
	}
	cfg, err := af.kube.restConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	o, err := companion.NewObserver(cfg, companion.ObserveOptions{Identity: af.opts.Identity, Interval: af.opts.Interval, Status: *af.opts.Status,
		HydratedURL: af.opts.Source.URL, HydratedBranch: af.opts.Source.Branch, HydratedAuth: hydratedAuth}, log.WithName("observe"))
	if err != nil {
		return err
	}
	if af.once {
		st, err := o.Observe(ctx)
		if err != nil {
			return err
		}
		log.Info("observed Flux", "cluster", st.Cluster.Name, "phase", st.Phase, "bundles", len(st.Bundles))
		if st.Phase == report.ClusterFailed {
			return &reportedError{errors.New(st.Message)}
		}
		return nil
	}
	log.Info("observing Flux", "repo", source.RedactURL(af.opts.Source.URL), "branch", af.opts.Source.Branch, "cluster", af.opts.Identity.Name)
	return o.Run(ctx)
}

// validate checks the flags that need no cluster and no remote: where the
// fleet comes from, the name, the log format and the labels.
func (af *agentFlags) validate() error {
	if af.ociSource != "" {
		if af.opts.Source.URL != "" || !source.IsOCI(af.ociSource) {
			return errors.New("--source takes an oci:// reference instead of --repo (give one of them)")
		}
		af.opts.Source.URL = af.ociSource
	}
	if af.opts.Source.URL == "" || af.opts.Identity.Name == "" {
		return errors.New("--repo (or --source) and --name are required")
	}
	switch {
	case af.fullSync < 0:
		return errors.New("--full-sync-interval must not be negative (0: every pass is full)")
	case af.fullSync == 0:
		af.opts.FullSyncInterval = -1 // every pass is full
	default:
		af.opts.FullSyncInterval = af.fullSync
	}
	if af.logFormat != "json" && af.logFormat != "console" {
		return fmt.Errorf("unknown --log-format %q: use json or console", af.logFormat)
	}
	af.opts.Identity.Labels = map[string]string{}
	for _, l := range af.labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return fmt.Errorf("--label %q: want key=value", l)
		}
		af.opts.Identity.Labels[k] = v
	}
	return nil
}

// zapLevel maps -v to zap's levels (debug is -1).
func zapLevel(verbosity int) zapcore.Level { return zapcore.Level(-verbosity) }

// statusOptions are where the status goes: the fleet repository with its
// credentials, unless another is given with its own.
func (af *agentFlags) statusOptions() (*report.Options, error) {
	url, auth := af.statusRepo, af.statusAuth
	if url == "" {
		url, auth = af.opts.Source.URL, af.opts.Source.Auth
	}
	if source.IsOCI(url) {
		return nil, errors.New("the fleet comes from an OCI registry: the status goes to a Git repository, --status-repo (or --no-status)")
	}
	method, err := auth.Method(url)
	if err != nil {
		return nil, fmt.Errorf("status repository: %w", err)
	}
	if af.legacyStatusBranch != "" {
		return nil, errors.New("--status-branch was replaced by --status-prefix: each cluster reports on its own branch, PREFIX/<name>")
	}
	return &report.Options{URL: url, Prefix: af.statusPrefix, Auth: method, Heartbeat: af.heartbeat}, nil
}

// selfDeployment is the Deployment running this agent: the flag's, or in
// a pod (the kubelet sets KUBERNETES_SERVICE_HOST) the one deploy/, the
// chart and bootstrap install. An agent run outside the cluster has none:
// a Deployment of the same name there is not the one running it.
func selfDeployment(flag string) (object.ObjMetadata, error) {
	if flag == "" {
		if os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
			return object.ObjMetadata{}, nil
		}
		flag = deploy.Namespace + "/" + deploy.AgentName
	}
	ns, name, ok := strings.Cut(flag, "/")
	if !ok || ns == "" || name == "" {
		return object.ObjMetadata{}, fmt.Errorf("--self-deployment %q: want NAMESPACE/NAME", flag)
	}
	return object.ObjMetadata{Namespace: ns, Name: name, GroupKind: schema.GroupKind{Group: "apps", Kind: "Deployment"}}, nil
}

// renderOptions sets the agent's render limits, workers and sources.
func (af *agentFlags) renderOptions() error {
	limits, maxSize, sb, err := af.limits.resolve()
	if err != nil {
		return err
	}
	if sb != nil {
		sb.IdleTimeout = af.workerIdle
	}
	af.opts.Limits, af.opts.MaxManifestSize, af.opts.Sandbox, af.opts.Sources = limits, maxSize, sb, af.limits.sources
	// The agent applies: encrypted files are decrypted, or fail their
	// bundle. A key file that cannot be read stops it now.
	af.opts.Sources.Secrets = sops.ModeDecrypt
	return checkKeys(&af.opts.Sources)
}

// webhookSecret reads --webhook-secret-file. deploy/ mounts the
// flotilla-webhook Secret as optional: without it, the file is not there
// and /trigger is off (refuses every request), which is said in the log.
func webhookSecret(path string, log logr.Logger) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	secret, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		log.Info("no webhook secret: /trigger refuses every request", "file", path)
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("--webhook-secret-file: %w", err)
	}
	return []byte(strings.TrimSpace(string(secret))), nil
}
