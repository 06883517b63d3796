package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"filippo.io/age"
	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/flotilla-gitops/flotilla/deploy"
	"github.com/flotilla-gitops/flotilla/fleet"
	"github.com/flotilla-gitops/flotilla/internal/version"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// defaultImageRepository is the agent image's repository when --image is
// not given; the tag is this binary's version.
const defaultImageRepository = "ghcr.io/flotilla-gitops/flotilla"

type bootstrapFlags struct {
	kube                                     *kubeFlags
	opts                                     deploy.Options
	labels                                   []string
	passwordFile, sshKeyFile, knownHostsFile string
	ageKeyFile                               string
	dryRun, wait                             bool
	credentialsRead                          bool
	timeout                                  time.Duration
}

func newBootstrapCmd() *cobra.Command {
	bf := &bootstrapFlags{}
	cmd := &cobra.Command{
		Use:   "bootstrap --repo URL --cluster NAME",
		Short: "Install the agent into a cluster: namespace, account, RBAC, identity, credentials, Deployment",
		Long: `Install Flotilla's agent into the cluster your kubeconfig names, with
server-side apply: the flotilla-system namespace, the agent's
ServiceAccount and RBAC (least-privilege by default), the flotilla-identity
ConfigMap (--cluster, --region, --label), the Git credential Secret from a
file, and the Deployment. These are the objects of the Helm chart
deploy/chart/flotilla-agent (embedded in this binary), equal to deploy/.

Then it waits until the Deployment is available, or says why it is not
(an image that cannot be pulled, a missing Secret, no node, an agent that
exits), and prints how to follow the cluster's status.

Run it again: nothing changes. With other flags: only what they change.
Credentials come from files only, are never printed (--dry-run shows where
they come from instead), and a file that cannot be read or parsed fails
before anything is applied.

The image defaults to ` + defaultImageRepository + `:<this binary's version>,
so an agent runs the release of the CLI that installed it. Afterwards the
agent can manage its own manifests as a bundle of the fleet, and upgrade
wave by wave.

With --add-to-fleet it first commits the cluster into the fleet's
inventory (a clusters: entry appended to fleet.cue, checked by loading
the fleet before and after), on --branch or on a new --pr-branch, so that
previews and rollouts name the cluster before its first status arrives.
It pushes with the --fleet-* credential, or the agent's when none is
given (an agent's token is often read-only).`,
		Example: `  flotilla bootstrap --context prod-eu-3 --repo https://git.example.com/platform/fleet.git \
    --cluster prod-eu-4 --region eu-west-3 --git-password-file ~/.secrets/fleet-token \
    --add-to-fleet --pr-branch add-prod-eu-4
  flotilla bootstrap --context prod-eu-3 --repo https://git.example.com/platform/fleet.git \
    --cluster prod-eu-3 --region eu-west-3 --label env=prod --label class=regulated \
    --git-password-file ~/.secrets/fleet-token
  flotilla bootstrap --repo https://git.example.com/platform/fleet.git --cluster dev-1 --dry-run -o yaml`,
		Args: cobra.NoArgs,
	}
	bf.kube = addKubeFlags(cmd)
	bf.addFlags(cmd)
	fe := addFleetEntryFlags(cmd)
	out := addOutputFlag(cmd, "text", "json", "yaml")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return bf.run(cmd, fe, out) }
	return cmd
}

func (bf *bootstrapFlags) addFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&bf.opts.Repo, "repo", "", "`URL` of the fleet repository (https://, ssh://)")
	fs.StringVar(&bf.opts.StatusRepo, "status-repo", "", "`URL` of the repository the agent writes its status branch to and reads approvals from, with the same credential (default: --repo; past a few hundred clusters give it a repository of its own, docs/scale.md)")
	fs.StringVar(&bf.opts.Branch, "branch", "main", "`BRANCH` to follow")
	fs.StringVar(&bf.opts.Cluster, "cluster", "", "this cluster's `NAME` in the fleet (a DNS label)")
	fs.StringVar(&bf.opts.Region, "region", "", "this cluster's `REGION`")
	fs.StringArrayVar(&bf.labels, "label", nil, "a label of this cluster as `KEY=VALUE`, repeatable")
	fs.StringVar(&bf.opts.Username, "git-username", "flotilla", "HTTPS user `NAME` (with --git-password-file)")
	fs.StringVar(&bf.passwordFile, "git-password-file", "", "`FILE` holding the HTTPS password or token")
	fs.StringVar(&bf.sshKeyFile, "git-ssh-key-file", "", "`FILE` holding an SSH private key (unencrypted; with --git-known-hosts-file)")
	fs.StringVar(&bf.knownHostsFile, "git-known-hosts-file", "", "known_hosts `FILE` the Git server's host key must be in (with --git-ssh-key-file)")
	fs.StringVar(&bf.ageKeyFile, "age-key-file", "", "age identities `FILE` of this cluster's class, to decrypt the fleet's SOPS files (the flotilla-age Secret)")
	fs.StringVar(&bf.opts.RBAC, "rbac", "least-privilege", "the agent's RBAC: least-privilege|cluster-admin")
	fs.StringVar(&bf.opts.Image, "image", "", "the agent image `REF` (default: "+defaultImageRepository+":<version>)")
	fs.StringVar(&bf.opts.Interval, "interval", "", "time between polls of the repository (default: the chart's, 1m)")
	fs.StringArrayVar(&bf.opts.ExtraArgs, "agent-arg", nil, "one more flag for the agent, as `--FLAG=VALUE`, repeatable")
	fs.BoolVar(&bf.dryRun, "dry-run", false, "print the objects instead of applying them (credentials redacted)")
	fs.BoolVar(&bf.wait, "wait", true, "wait until the agent's Deployment is available")
	fs.DurationVar(&bf.timeout, "timeout", 5*time.Minute, "how long to wait for the Deployment")
}

// run installs (or with --dry-run prints) the agent.
func (bf *bootstrapFlags) run(cmd *cobra.Command, fe *fleetEntry, out *outputFlag) error {
	if err := out.validate(); err != nil {
		return err
	}
	if err := bf.parseLabels(); err != nil {
		return err
	}
	if bf.dryRun {
		objs, err := bf.objects()
		if err != nil {
			return err
		}
		return printObjects(cmd.OutOrStdout(), out, objs)
	}
	// Credentials are read and checked before the cluster is asked
	// anything; then a re-run without them keeps the installed ones.
	if err := bf.readCredentials(); err != nil {
		return err
	}
	if fe.enabled {
		o := &bf.opts
		c := fleet.Cluster{Name: o.Cluster, Region: o.Region, Labels: o.Labels}
		if err := o.Validate(); err != nil {
			return err
		}
		fallback := source.Auth{Username: o.Username, PasswordFile: bf.passwordFile, SSHKeyFile: bf.sshKeyFile, KnownHostsFile: bf.knownHostsFile}
		if err := fe.add(cmd.Context(), cmd.OutOrStdout(), o.Repo, o.Branch, c, fallback); err != nil {
			return err
		}
	}
	cfg, err := bf.kube.restConfig()
	if err != nil {
		return err
	}
	c, err := deploy.NewClient(cfg)
	if err != nil {
		return err
	}
	if bf.passwordFile == "" && bf.sshKeyFile == "" {
		if bf.opts.KeepAuth, err = c.InstalledAuth(cmd.Context()); err != nil {
			return err
		}
	}
	objs, err := bf.objects()
	if err != nil {
		return err
	}
	return bf.install(cmd, c, objs)
}

// objects reads the credential files and renders the install; nothing has
// touched the cluster yet.
func (bf *bootstrapFlags) objects() ([]*unstructured.Unstructured, error) {
	o := &bf.opts
	if o.Image == "" {
		o.Image = defaultImage()
	}
	if !bf.credentialsRead {
		if err := bf.readCredentials(); err != nil {
			return nil, err
		}
	}
	return deploy.Objects(o, bf.dryRun)
}

func (bf *bootstrapFlags) parseLabels() error {
	bf.opts.Labels = map[string]string{}
	for _, l := range bf.labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return fmt.Errorf("--label %q: want KEY=VALUE", l)
		}
		bf.opts.Labels[k] = v
	}
	return nil
}

// defaultImage is the image of this binary's release, or the chart's
// default for a build without a version.
func defaultImage() string {
	v := version.Get().Version
	if v == "" || v == "unknown" || v == "dev" || strings.ContainsAny(v, "()+") {
		return ""
	}
	return defaultImageRepository + ":" + v
}

// readCredentials reads and checks each credential file, naming the flag
// and the file (never its content) when it cannot.
func (bf *bootstrapFlags) readCredentials() error {
	bf.credentialsRead = true
	o := &bf.opts
	if bf.passwordFile != "" && bf.sshKeyFile != "" {
		return errors.New("--git-password-file and --git-ssh-key-file: give one")
	}
	if (bf.sshKeyFile == "") != (bf.knownHostsFile == "") {
		return errors.New("--git-ssh-key-file needs --git-known-hosts-file (and the reverse): the agent checks the Git server's host key")
	}
	read := func(flag, path string) ([]byte, error) {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", flag, err)
		}
		if len(strings.TrimSpace(string(data))) == 0 {
			return nil, fmt.Errorf("--%s %s: the file is empty", flag, path)
		}
		return data, nil
	}
	var err error
	if bf.passwordFile != "" {
		if o.Password, err = read("git-password-file", bf.passwordFile); err != nil {
			return err
		}
		o.Password = []byte(strings.TrimRight(string(o.Password), "\r\n"))
	}
	if bf.sshKeyFile != "" {
		if o.SSHKey, err = read("git-ssh-key-file", bf.sshKeyFile); err != nil {
			return err
		}
		if _, err := ssh.ParseRawPrivateKey(o.SSHKey); err != nil {
			var missing *ssh.PassphraseMissingError
			if errors.As(err, &missing) {
				return fmt.Errorf("--git-ssh-key-file %s: the key is encrypted with a passphrase; give the agent a key without one (it lives in a Secret)", bf.sshKeyFile)
			}
			return fmt.Errorf("--git-ssh-key-file %s: not an SSH private key", bf.sshKeyFile)
		}
		if o.KnownHosts, err = read("git-known-hosts-file", bf.knownHostsFile); err != nil {
			return err
		}
		if _, _, _, _, _, err := ssh.ParseKnownHosts(o.KnownHosts); err != nil {
			return fmt.Errorf("--git-known-hosts-file %s: %w", bf.knownHostsFile, err)
		}
	}
	if bf.ageKeyFile != "" {
		if o.AgeKeys, err = read("age-key-file", bf.ageKeyFile); err != nil {
			return err
		}
		if _, err := age.ParseIdentities(strings.NewReader(string(o.AgeKeys))); err != nil {
			return fmt.Errorf("--age-key-file %s: not age identities (age-keygen output)", bf.ageKeyFile)
		}
	}
	return nil
}

func (bf *bootstrapFlags) install(cmd *cobra.Command, c *deploy.Client, objs []*unstructured.Unstructured) error {
	w := cmd.OutOrStdout()
	changes, err := c.Apply(cmd.Context(), objs)
	if err != nil {
		return err
	}
	replaced, err := c.Replaced(cmd.Context(), objs)
	writeChanges(w, append(changes, replaced...))
	if err != nil {
		return err
	}
	if bf.wait {
		fmt.Fprintf(progressTo(cmd), "waiting for the agent's Deployment to be available (--timeout %s)\n", bf.timeout)
		if err := c.WaitAvailable(cmd.Context(), bf.timeout); err != nil {
			return err
		}
		fmt.Fprintln(w, "the agent is available")
	}
	statusRepo, of := bf.opts.StatusRepo, "the repository "+bf.opts.StatusRepo
	if statusRepo == "" {
		statusRepo, of = bf.opts.Repo, "that repository"
	}
	fmt.Fprintf(w, `
The agent of cluster %s follows %s (%s) and reports to the status
branch flotilla/status/%s of %s. To follow it:
  flotilla status --repo %s --cluster %s
  kubectl -n %s logs deployment/%s
`, bf.opts.Cluster, bf.opts.Repo, bf.opts.Branch, bf.opts.Cluster, of, statusRepo, bf.opts.Cluster, deploy.Namespace, deploy.AgentName)
	return nil
}

func writeChanges(w io.Writer, changes []deploy.Change) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range changes {
		fmt.Fprintf(tw, "%s\t%s\n", c.Object, c.Action)
	}
	_ = tw.Flush()
}

// printObjects prints objects as a YAML stream (or a JSON list).
func printObjects(w io.Writer, out *outputFlag, objs []*unstructured.Unstructured) error {
	if out.format == "json" {
		items := make([]map[string]any, len(objs))
		for i, o := range objs {
			items[i] = o.Object
		}
		return out.write(w, items, nil)
	}
	for i, o := range objs {
		if i > 0 {
			fmt.Fprintln(w, "---")
		}
		yml := &outputFlag{format: "yaml"}
		if err := yml.write(w, o.Object, nil); err != nil {
			return err
		}
	}
	return nil
}

func newUninstallCmd() *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove the agent and its RBAC from a cluster, never what it applied",
		Long: `Remove what 'flotilla bootstrap' (or the chart, or deploy/) installed: the
agent's Deployment and Service, its ServiceAccount, its RBAC in either mode,
the tenancy marks that let it act as a tenant's account, its identity
ConfigMap and its credential Secrets.

It never deletes the workloads the agent applied: they keep running,
unmanaged. The flotilla-system namespace stays too, with the bundles'
inventories in it, so an agent installed again later takes its bundles
over where this one left them (deleting the namespace deletes the
inventories: a new agent would then no longer prune what left the fleet).`,
		Example: `  flotilla uninstall --context prod-eu-3
  flotilla uninstall --context prod-eu-3 --dry-run`,
		Args: cobra.NoArgs,
	}
	kube := addKubeFlags(cmd)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be deleted")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := kube.restConfig()
		if err != nil {
			return err
		}
		c, err := deploy.NewClient(cfg)
		if err != nil {
			return err
		}
		changes, err := c.Uninstall(cmd.Context(), dryRun)
		writeChanges(cmd.OutOrStdout(), changes)
		if err != nil {
			return err
		}
		if len(changes) == 0 {
			fmt.Fprintln(cmd.OutOrStdout(), "no agent is installed")
		}
		fmt.Fprintf(cmd.OutOrStdout(), "the workloads the agent applied, and their inventories in %s, are kept\n", deploy.Namespace)
		return nil
	}
	return cmd
}
