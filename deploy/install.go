package deploy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// Names of what the install creates.
const (
	Namespace     = "flotilla-system"
	AgentName     = "flotilla-agent"
	GitSecret     = "flotilla-git"
	AgeSecret     = "flotilla-age"
	WebhookSecret = "flotilla-webhook"
	// FieldManager owns what `flotilla bootstrap` applies: the agent's own
	// field manager, so that when the fleet takes the agent's manifests
	// over as a bundle, its server-side apply owns the same fields with no
	// conflict (a field the bundle leaves out is then removed, as the fleet
	// says).
	FieldManager = "flotilla"
)

// Options are an agent's install: the chart's values from flags, and the
// credentials, read from files by the caller.
type Options struct {
	Repo, Branch string
	// StatusRepo is the status repository, reached with the same
	// credential; empty: the fleet repository (the chart's default, a
	// repository of its own, is an example address bootstrap cannot
	// create).
	StatusRepo      string
	Cluster, Region string
	Labels          map[string]string
	// RBAC is least-privilege or cluster-admin.
	RBAC string
	// Image is a reference (repository[:tag][@digest]); empty: the chart's.
	Image string
	// Username and Password, or SSHKey and KnownHosts: the Git credential
	// Secret. None: the repository is public.
	Username           string
	Password           []byte
	SSHKey, KnownHosts []byte
	AgeKeys            []byte
	ExtraArgs          []string
	Interval           string
	// KeepAuth is the auth of the credential Secret already installed
	// (password or ssh), used when no credential is given: a re-run that
	// changes a label needs no password file, and keeps the Secret as it is.
	KeepAuth string
}

// Validate checks what the cluster would refuse, before anything is
// applied.
func (o *Options) Validate() error {
	if o.Repo == "" {
		return errors.New("--repo is required: the fleet repository's URL")
	}
	if o.Cluster == "" {
		return errors.New("--cluster is required: this cluster's name in the fleet")
	}
	if errs := validation.IsDNS1123Label(o.Cluster); len(errs) > 0 {
		return fmt.Errorf("--cluster %q: %s", o.Cluster, strings.Join(errs, "; "))
	}
	for k, v := range o.Labels {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("--label %s: the key: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("--label %s=%s: the value: %s", k, v, strings.Join(errs, "; "))
		}
	}
	if o.RBAC != "least-privilege" && o.RBAC != "cluster-admin" {
		return fmt.Errorf("--rbac %q: use least-privilege or cluster-admin", o.RBAC)
	}
	if len(o.Password) > 0 && len(o.SSHKey) > 0 {
		return errors.New("give a password or an SSH key, not both")
	}
	return nil
}

func (o *Options) auth() string {
	switch {
	case len(o.SSHKey) > 0:
		return "ssh"
	case len(o.Password) > 0:
		return "password"
	case o.KeepAuth != "":
		return o.KeepAuth
	}
	return "none"
}

// values are the chart's values for o.
func (o *Options) values() map[string]any {
	labels := map[string]any{}
	for k, v := range o.Labels {
		labels[k] = v
	}
	v := map[string]any{
		"git": map[string]any{
			"repository": o.Repo, "branch": o.Branch, "auth": o.auth(),
			"username": o.Username, "existingSecret": GitSecret,
		},
		"status":   map[string]any{"repository": o.StatusRepo},
		"identity": map[string]any{"name": o.Cluster, "region": o.Region, "labels": labels},
		"rbac":     map[string]any{"mode": o.RBAC},
		"age":      map[string]any{"enabled": len(o.AgeKeys) > 0},
	}
	if o.Interval != "" {
		v["interval"] = o.Interval
	}
	if len(o.ExtraArgs) > 0 {
		args := make([]any, len(o.ExtraArgs))
		for i, a := range o.ExtraArgs {
			args[i] = a
		}
		v["extraArgs"] = args
	}
	if o.Image != "" {
		v["image"] = imageValues(o.Image)
	}
	return v
}

// imageValues splits repository[:tag][@digest].
func imageValues(ref string) map[string]any {
	img := map[string]any{}
	if r, d, ok := strings.Cut(ref, "@"); ok {
		ref, img["digest"] = r, d
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref, img["tag"] = ref[:i], ref[i+1:]
	}
	img["repository"] = ref
	return img
}

// Objects are what Install applies: the chart rendered for o, and the
// Secrets holding its credentials. With redact, the Secrets' values are
// replaced by where they come from (for --dry-run).
func Objects(o *Options, redact bool) ([]*unstructured.Unstructured, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	rendered, err := Render(o.values())
	if err != nil {
		return nil, err
	}
	var objs []*unstructured.Unstructured
	for _, r := range rendered {
		objs = append(objs, r.Object)
	}
	secret := func(name string, data map[string][]byte) {
		s := &corev1.Secret{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace},
			Type:       corev1.SecretTypeOpaque,
			Data:       data,
		}
		if redact {
			s.Data = nil
			s.StringData = map[string]string{}
			for k := range data {
				s.StringData[k] = "<redacted: read from a file at install>"
			}
		}
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(s)
		if err == nil {
			unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
			objs = append(objs, &unstructured.Unstructured{Object: u})
		}
	}
	switch {
	case len(o.Password) > 0:
		secret(GitSecret, map[string][]byte{"password": o.Password})
	case len(o.SSHKey) > 0:
		secret(GitSecret, map[string][]byte{"identity": o.SSHKey, "known_hosts": o.KnownHosts})
	}
	if len(o.AgeKeys) > 0 {
		secret(AgeSecret, map[string][]byte{"keys.txt": o.AgeKeys})
	}
	return objs, nil
}

// Client is what Install and Uninstall talk to a cluster with.
type Client struct {
	Kube client.Client
	rm   *ssa.ResourceManager
}

// NewClient connects to the cluster cfg names.
func NewClient(cfg *rest.Config) (*Client, error) {
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("reaching the cluster: %w", err)
	}
	kube, err := client.New(cfg, client.Options{HTTPClient: httpClient, Mapper: mapper})
	if err != nil {
		return nil, err
	}
	rm := ssa.NewResourceManager(kube, polling.NewStatusPoller(kube, mapper, polling.Options{}),
		ssa.Owner{Field: FieldManager, Group: "flotilla.dev"})
	return &Client{Kube: kube, rm: rm}, nil
}

// Change is one object's outcome: created, configured, unchanged, deleted.
type Change struct {
	Object string
	Action string
}

// Apply applies objs with server-side apply (namespaces first), taking
// over fields another manager set (a re-run with new flags wins), and says
// what each object's apply did.
func (c *Client) Apply(ctx context.Context, objs []*unstructured.Unstructured) ([]Change, error) {
	opts := ssa.DefaultApplyOptions()
	opts.Force = true
	cs, err := c.rm.ApplyAllStaged(ctx, objs, opts)
	if err != nil {
		return nil, err
	}
	var out []Change
	for _, e := range cs.Entries {
		out = append(out, Change{Object: e.Subject, Action: string(e.Action)})
	}
	return out, nil
}

// InstalledAuth tells how the installed agent authenticates, from the keys
// of its credential Secret: password, ssh, or "" when there is none.
func (c *Client) InstalledAuth(ctx context.Context) (string, error) {
	var s corev1.Secret
	err := c.Kube.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: GitSecret}, &s)
	switch {
	case apierrors.IsNotFound(err):
		return "", nil
	case err != nil:
		return "", err
	case s.Data["identity"] != nil:
		return "ssh", nil
	case s.Data["password"] != nil:
		return "password", nil
	}
	return "", nil
}

// Replaced deletes what an earlier install of another shape left that this
// one does not have: the other RBAC mode's bindings (switching from
// cluster-admin to least-privilege must take cluster-admin away).
func (c *Client) Replaced(ctx context.Context, objs []*unstructured.Unstructured) ([]Change, error) {
	keep := map[string]bool{}
	for _, o := range objs {
		keep[objectKey(o)] = true
	}
	all, err := everyMode()
	if err != nil {
		return nil, err
	}
	var gone []*unstructured.Unstructured
	for _, o := range all {
		if !keep[objectKey(o)] && strings.HasPrefix(o.GetAPIVersion(), "rbac.authorization.k8s.io/") {
			gone = append(gone, o)
		}
	}
	return c.deleteAll(ctx, gone, false)
}

// everyMode are the chart's objects in both RBAC modes, each once.
func everyMode() ([]*unstructured.Unstructured, error) {
	seen := map[string]bool{}
	var out []*unstructured.Unstructured
	for _, mode := range []string{"least-privilege", "cluster-admin"} {
		rendered, err := Render(map[string]any{"rbac": map[string]any{"mode": mode}})
		if err != nil {
			return nil, err
		}
		for _, r := range rendered {
			if key := objectKey(r.Object); !seen[key] {
				seen[key] = true
				out = append(out, r.Object)
			}
		}
	}
	return out, nil
}

// objectKey is Kind/namespace/name ("Kind/name" for cluster objects), as
// Change shows it.
func objectKey(o *unstructured.Unstructured) string {
	if o.GetNamespace() == "" {
		return o.GetKind() + "/" + o.GetName()
	}
	return o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
}

// deleteAll deletes the targets that exist (dryRun: says it would), each
// once, and says what it did in name order.
func (c *Client) deleteAll(ctx context.Context, targets []*unstructured.Unstructured, dryRun bool) ([]Change, error) {
	seen := map[string]bool{}
	var out []Change
	for _, t := range targets {
		key := objectKey(t)
		if seen[key] {
			continue
		}
		seen[key] = true
		action, err := c.delete(ctx, t, dryRun)
		if err != nil {
			return out, fmt.Errorf("deleting %s: %w", key, err)
		}
		if action != "" {
			out = append(out, Change{Object: key, Action: action})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Object < out[j].Object })
	return out, nil
}

// WaitAvailable waits until the agent's Deployment is available. When it
// is not by the deadline, the error says why, from what the cluster
// knows: the Deployment's conditions, its pods' waiting and terminated
// states, and the events about them (an image that cannot be pulled, a
// Secret that is missing, no node to run on, an agent that exits).
func (c *Client) WaitAvailable(ctx context.Context, timeout time.Duration) error {
	dep := object.ObjMetadata{Namespace: Namespace, Name: AgentName, GroupKind: schema.GroupKind{Group: "apps", Kind: "Deployment"}}
	err := c.rm.WaitForSetWithContext(ctx, object.ObjMetadataSet{dep}, ssa.WaitOptions{Interval: 2 * time.Second, Timeout: timeout})
	if err == nil {
		return nil
	}
	diag := c.diagnose(context.WithoutCancel(ctx))
	if diag == "" {
		diag = err.Error()
	}
	return fmt.Errorf("the agent's Deployment %s/%s is not available after %s:\n%s", Namespace, AgentName, timeout, diag)
}

func (c *Client) diagnose(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var lines []string
	var d appsv1.Deployment
	if err := c.Kube.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: AgentName}, &d); err == nil {
		for _, cond := range d.Status.Conditions {
			if cond.Status != corev1.ConditionTrue {
				lines = append(lines, fmt.Sprintf("  deployment: %s is %s: %s", cond.Type, cond.Reason, cond.Message))
			}
		}
	}
	var pods corev1.PodList
	if err := c.Kube.List(ctx, &pods, client.InNamespace(Namespace), client.MatchingLabels{"app.kubernetes.io/name": AgentName}); err == nil {
		if len(pods.Items) == 0 {
			lines = append(lines, "  no pod of the agent exists (see the ReplicaSet's events: kubectl -n "+Namespace+" describe replicaset)")
		}
		for _, p := range pods.Items {
			lines = append(lines, podProblems(&p)...)
			lines = append(lines, c.events(ctx, p.Name)...)
		}
	}
	return strings.Join(lines, "\n")
}

func podProblems(p *corev1.Pod) []string {
	var out []string
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodScheduled && cond.Status != corev1.ConditionTrue {
			out = append(out, fmt.Sprintf("  pod %s: not scheduled: %s: %s", p.Name, cond.Reason, cond.Message))
		}
	}
	for _, s := range p.Status.ContainerStatuses {
		if w := s.State.Waiting; w != nil {
			out = append(out, fmt.Sprintf("  pod %s: container %s is waiting: %s: %s", p.Name, s.Name, w.Reason, w.Message))
		}
		if t := s.LastTerminationState.Terminated; t != nil {
			out = append(out, fmt.Sprintf("  pod %s: container %s exited with code %d (%s): %s", p.Name, s.Name, t.ExitCode, t.Reason, strings.TrimSpace(t.Message)))
		}
		if s.State.Running != nil && !s.Ready {
			out = append(out, fmt.Sprintf("  pod %s: container %s runs but is not ready (its /readyz answers once it reached the repository and the cluster: kubectl -n %s logs %s)", p.Name, s.Name, Namespace, p.Name))
		}
	}
	return out
}

func (c *Client) events(ctx context.Context, pod string) []string {
	var evs corev1.EventList
	if err := c.Kube.List(ctx, &evs, client.InNamespace(Namespace)); err != nil {
		return nil
	}
	var out []string
	for _, e := range evs.Items {
		if e.InvolvedObject.Name == pod && e.Type == corev1.EventTypeWarning {
			out = append(out, fmt.Sprintf("  pod %s: %s: %s", pod, e.Reason, e.Message))
		}
	}
	return out
}

// Uninstall deletes what Install created, in either RBAC mode, with the
// tenancy marks that name the agent's account, and never the workloads the
// agent applied nor their inventories: the namespace stays. dryRun lists
// what it would delete.
func (c *Client) Uninstall(ctx context.Context, dryRun bool) ([]Change, error) {
	all, err := everyMode()
	if err != nil {
		return nil, err
	}
	var targets []*unstructured.Unstructured
	for _, o := range all {
		if o.GetKind() != "Namespace" {
			targets = append(targets, o)
		}
	}
	for _, name := range []string{GitSecret, AgeSecret, WebhookSecret} {
		s := &unstructured.Unstructured{}
		s.SetAPIVersion("v1")
		s.SetKind("Secret")
		s.SetNamespace(Namespace)
		s.SetName(name)
		targets = append(targets, s)
	}
	marks, err := c.marks(ctx)
	if err != nil {
		return nil, err
	}
	return c.deleteAll(ctx, append(targets, marks...), dryRun)
}

func (c *Client) delete(ctx context.Context, t *unstructured.Unstructured, dryRun bool) (string, error) {
	cur := &unstructured.Unstructured{}
	cur.SetGroupVersionKind(t.GroupVersionKind())
	err := c.Kube.Get(ctx, client.ObjectKeyFromObject(t), cur)
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if dryRun {
		return "would be deleted", nil
	}
	if err := c.Kube.Delete(ctx, cur, client.PropagationPolicy("Background")); err != nil && !apierrors.IsNotFound(err) {
		return "", err
	}
	return "deleted", nil
}

// marks finds the tenancy marks: RoleBindings named flotilla-impersonate
// whose subject is the agent's account, and their Roles.
func (c *Client) marks(ctx context.Context) ([]*unstructured.Unstructured, error) {
	var rbs unstructured.UnstructuredList
	rbs.SetAPIVersion("rbac.authorization.k8s.io/v1")
	rbs.SetKind("RoleBindingList")
	if err := c.Kube.List(ctx, &rbs); err != nil {
		return nil, fmt.Errorf("listing tenancy marks: %w", err)
	}
	var out []*unstructured.Unstructured
	for i := range rbs.Items {
		rb := &rbs.Items[i]
		if rb.GetName() != "flotilla-impersonate" {
			continue
		}
		subjects, _, _ := unstructured.NestedSlice(rb.Object, "subjects")
		ours := slices.ContainsFunc(subjects, func(s any) bool {
			m, _ := s.(map[string]any)
			return m["kind"] == "ServiceAccount" && m["name"] == AgentName && m["namespace"] == Namespace
		})
		if !ours {
			continue
		}
		role := &unstructured.Unstructured{}
		role.SetAPIVersion("rbac.authorization.k8s.io/v1")
		role.SetKind("Role")
		role.SetNamespace(rb.GetNamespace())
		role.SetName("flotilla-impersonate")
		out = append(out, rb, role)
	}
	return out, nil
}
