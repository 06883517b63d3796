package companion

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/internal/gitrev"
	"github.com/flotilla-gitops/flotilla/internal/version"
	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/identity"
	"github.com/flotilla-gitops/flotilla/sync/report"
)

// ObserveOptions configure an agent that observes Flux instead of
// applying.
type ObserveOptions struct {
	Identity identity.Options
	// Interval between observations.
	Interval time.Duration
	// Status is where the cluster's status is published.
	Status report.Options
	// HydratedURL and HydratedBranch are the hydrated branch Flux
	// follows, read to name the source commit of what Flux applied.
	HydratedURL    string
	HydratedBranch string
	HydratedAuth   transport.AuthMethod
}

// fluxKustomizations is the kind flotilla hydrate generates per bundle.
var fluxKustomizations = schema.GroupVersionKind{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Kind: "KustomizationList"}

// Observer publishes, in Flotilla's status format, the state of the Flux
// Kustomizations that `flotilla hydrate` generated for its cluster: it
// applies nothing. `flotilla status`, rollout gates and previews then work
// for a Flux fleet as for one Flotilla applies.
type Observer struct {
	ident    *identity.Resolver
	kube     client.Client
	opts     ObserveOptions
	reporter *report.Reporter
	log      logr.Logger
	since    map[string]time.Time // when each bundle became Ready at its revision
	sinceRev map[string]string
	// sources maps the hydrated commits read so far to their source
	// commits, and tip is the hydrated branch's tip when it was read: the
	// branch is fetched again only when Flux applied a hydrated commit not
	// in sources, so an idle observation makes no Git request.
	sources Hydrations
	tip     string
}

// NewObserver builds an observing agent for the cluster cfg names.
func NewObserver(cfg *rest.Config, opts ObserveOptions, log logr.Logger) (*Observer, error) {
	if opts.HydratedBranch == "" {
		return nil, errors.New("observing Flux needs the hydrated branch Flux follows")
	}
	kube, err := client.New(cfg, client.Options{})
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	r, err := report.New(opts.Status)
	if err != nil {
		return nil, err
	}
	return &Observer{ident: identity.New(opts.Identity, kube, dc), kube: kube, opts: opts, reporter: r, log: log, since: map[string]time.Time{}, sinceRev: map[string]string{}}, nil
}

// Observe reads the cluster's Flux Kustomizations once and publishes the
// status; it returns the status built.
func (o *Observer) Observe(ctx context.Context) (*report.Status, error) {
	now := time.Now()
	c, err := o.ident.Resolve(ctx)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	st := &report.Status{APIVersion: report.APIVersion, Kind: report.Kind, Cluster: c,
		Agent: version.Get().Version + " (observing flux)", Bundles: []report.BundleStatus{}, ReportedAt: now.UTC()}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(fluxKustomizations)
	err = o.kube.List(ctx, list, client.MatchingLabels{spec.ClusterLabel: c.Name})
	if meta.IsNoMatchError(err) {
		err = errors.New("the Flux Kustomization kind is not served: is Flux installed in the cluster?")
	}
	if err != nil {
		st.Phase, st.Message = report.ClusterFailed, "reading Flux's Kustomizations: "+err.Error()
		_, perr := o.reporter.Publish(ctx, st, now)
		return st, errors.Join(err, perr)
	}
	var items []unstructured.Unstructured
	fetch := o.sources == nil
	for _, k := range list.Items {
		if k.GetLabels()[spec.BundleLabel] == "" {
			continue // the root Kustomization of --flux-bootstrap
		}
		items = append(items, k)
		// A commit Flux applied, or tried to and failed (it never becomes
		// lastAppliedRevision), that was not read yet: the branch moved.
		for _, h := range []string{hydratedCommit(&k), attemptedCommit(&k)} {
			if h != "" && o.sources[h].Dry == "" {
				fetch = true
			}
		}
	}
	if fetch {
		sources, tip, err := SourceCommits(ctx, o.opts.HydratedURL, o.opts.HydratedBranch, o.opts.HydratedAuth, 100)
		if err != nil {
			st.Phase, st.Message = report.ClusterFailed, err.Error()
		} else {
			o.sources, o.tip = sources, tip
		}
	}
	st.SeenRevision = o.sources.Revision(o.tip, c.Name, "")
	revisions := map[string]bool{}
	for _, k := range items {
		b := bundleOfKustomization(&k, c.Name, o.sources)
		key := b.Name + "@" + b.Revision
		if b.Phase == apply.PhaseReady {
			if o.sinceRev[b.Name] != key {
				o.since[b.Name], o.sinceRev[b.Name] = now.UTC(), key
			}
			t := o.since[b.Name]
			b.ReadySince = &t
		} else {
			delete(o.sinceRev, b.Name)
		}
		st.Bundles = append(st.Bundles, b)
		revisions[b.Revision] = true
	}
	slices.SortFunc(st.Bundles, func(x, y report.BundleStatus) int { return strings.Compare(x.Name, y.Name) })
	summarize(st, revisions)
	// The cluster's folder at the hydrated tip is what the rollout let it
	// take (gated hydration): a failure there is a failure while taking
	// it, which halts the later waves as an agent's would.
	if st.SeenRevision != "" {
		st.Rollout = &report.RolloutStatus{Revision: st.SeenRevision, Waves: []string{}, State: report.RolloutApplied}
	}
	if _, err := o.reporter.Publish(ctx, st, now); err != nil {
		return st, fmt.Errorf("publishing the status: %w", err)
	}
	return st, nil
}

// summarize sets the cluster's phase from its bundles' (unless the
// observation failed), its applied revision when every bundle is at one,
// and when it became Ready there.
func summarize(st *report.Status, revisions map[string]bool) {
	if st.Phase == "" {
		st.Phase = report.ClusterReady
		for _, b := range st.Bundles {
			switch b.Phase {
			case apply.PhaseFailed:
				st.Phase, st.Message = report.ClusterFailed, fmt.Sprintf("bundle %s: %s", b.Name, b.Message)
			case apply.PhaseProgressing:
				if st.Phase == report.ClusterReady {
					st.Phase = report.ClusterProgressing
				}
			}
		}
	}
	if len(revisions) == 1 {
		for r := range revisions {
			st.AppliedRevision = r
		}
	}
	if st.Phase == report.ClusterReady && st.AppliedRevision != "" {
		var latest time.Time
		for _, b := range st.Bundles {
			if b.ReadySince != nil && b.ReadySince.After(latest) {
				latest = *b.ReadySince
			}
		}
		st.ReadySince = &latest
	}
}

// bundleOfKustomization is a Flux Kustomization's state as a bundle's
// status: Ready when its Ready condition is True; Progressing while Flux
// works or waits for a dependency; Failed otherwise. Its revision is the
// source commit the bundle's folder was hydrated from in the hydrated
// commit Flux last applied (the rollout may have held it at an earlier one).
func bundleOfKustomization(k *unstructured.Unstructured, cluster string, sources Hydrations) report.BundleStatus {
	b := report.BundleStatus{Name: k.GetLabels()[spec.BundleLabel], Phase: apply.PhaseProgressing, Message: "Flux has not reconciled it yet"}
	if hydrated := hydratedCommit(k); hydrated != "" {
		b.Revision = sources.Revision(hydrated, cluster, b.Name)
		if b.Revision == "" {
			b.Revision = hydrated
		}
	}
	conds, _, _ := unstructured.NestedSlice(k.Object, "status", "conditions")
	for _, raw := range conds {
		cond, ok := raw.(map[string]any)
		if !ok || cond["type"] != "Ready" {
			continue
		}
		status, _ := cond["status"].(string)
		reason, _ := cond["reason"].(string)
		msg, _ := cond["message"].(string)
		b.Message = fmt.Sprintf("Flux: %s: %s", reason, msg)
		switch {
		case status == string(metav1.ConditionTrue):
			b.Phase = apply.PhaseReady
		case status == string(metav1.ConditionFalse) && reason != "DependencyNotReady" && reason != "Progressing":
			b.Phase = apply.PhaseFailed
		}
		if t, err := time.Parse(time.RFC3339, fmt.Sprint(cond["lastTransitionTime"])); err == nil {
			b.LastTransitionTime = t
		}
	}
	if suspended, _, _ := unstructured.NestedBool(k.Object, "spec", "suspend"); suspended {
		b.Phase, b.Message = apply.PhaseProgressing, "suspended in Flux; "+b.Message
	}
	return b
}

// hydratedCommit is the hydrated commit a Flux Kustomization last applied
// ("hydrated@sha1:<hash>"), or "".
func hydratedCommit(k *unstructured.Unstructured) string {
	return commitOf(k, "lastAppliedRevision")
}

// attemptedCommit is the hydrated commit a Flux Kustomization last tried
// to apply, or "".
func attemptedCommit(k *unstructured.Unstructured) string {
	return commitOf(k, "lastAttemptedRevision")
}

func commitOf(k *unstructured.Unstructured, field string) string {
	rev, _, _ := unstructured.NestedString(k.Object, "status", field)
	if i := strings.LastIndex(rev, ":"); i >= 0 {
		return rev[i+1:]
	}
	return ""
}

// Run observes every Interval (jittered by up to a tenth) until ctx ends.
func (o *Observer) Run(ctx context.Context) error {
	if o.opts.Interval <= 0 {
		return errors.New("the observe interval must be positive")
	}
	for {
		st, err := o.Observe(ctx)
		if err != nil {
			o.log.Error(err, "observing Flux")
		} else {
			o.log.Info("observed Flux", "cluster", st.Cluster.Name, "phase", st.Phase, "bundles", len(st.Bundles), "revision", gitrev.Short(st.AppliedRevision))
		}
		wait := o.opts.Interval + time.Duration(rand.Int64N(int64(o.opts.Interval/10)+1))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}
