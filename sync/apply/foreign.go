package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/object"
	ssautils "github.com/fluxcd/pkg/ssa/utils"
	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ErrForeignOwner is wrapped when a bundle would take over objects that
// another GitOps controller manages and the bundle does not say adopt.
var ErrForeignOwner = errors.New("managed by another GitOps controller")

// ForeignOwner names the controller that manages an object, from the marks
// each one leaves on what it applies, or returns "" when there is none:
//
//   - Argo CD: the annotation argocd.argoproj.io/tracking-id (annotation
//     tracking, the default since Argo CD 3) or the label
//     argocd.argoproj.io/instance (label tracking with Argo CD's own key);
//   - Flux: the labels kustomize.toolkit.fluxcd.io/name and
//     helm.toolkit.fluxcd.io/name (with their /namespace);
//   - Helm: the annotation meta.helm.sh/release-name (with
//     release-namespace), which `helm install` and `helm upgrade` set.
//
// Argo CD's older default tracking label, app.kubernetes.io/instance, is
// not read: most Helm charts set it on every object they template, so it
// would name an owner for objects that Flotilla itself rendered.
func ForeignOwner(labels, annotations map[string]string) string {
	if id := annotations["argocd.argoproj.io/tracking-id"]; id != "" {
		app, _, _ := strings.Cut(id, ":")
		return "Argo CD application " + app
	}
	if app := labels["argocd.argoproj.io/instance"]; app != "" {
		return "Argo CD application " + app
	}
	for _, ctl := range []struct{ group, kind string }{
		{"kustomize.toolkit.fluxcd.io", "Kustomization"},
		{"helm.toolkit.fluxcd.io", "HelmRelease"},
	} {
		if name := labels[ctl.group+"/name"]; name != "" {
			return "Flux " + ctl.kind + " " + qualified(labels[ctl.group+"/namespace"], name)
		}
	}
	if rel := annotations["meta.helm.sh/release-name"]; rel != "" {
		return "Helm release " + qualified(annotations["meta.helm.sh/release-namespace"], rel)
	}
	return ""
}

func qualified(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// maxForeignNamed bounds the objects one refusal names.
const maxForeignNamed = 10

// refuseForeign reads, for each object the bundle's inventory does not
// hold yet, the cluster's copy (metadata only), and fails when any is
// managed by another GitOps controller. Objects the inventory holds were
// created or adopted by Flotilla before and are not read again, so a
// steady bundle costs no request here. Objects that do not exist, or
// whose kind the cluster does not know yet (a CRD of the same bundle),
// are free to take.
func (m *Manager) refuseForeign(ctx context.Context, c *primedClient, objects []*unstructured.Unstructured, inv *Inventory) error {
	var held map[object.ObjMetadata]Entry
	if inv != nil {
		held = inv.index()
	}
	var check []*unstructured.Unstructured
	for _, o := range objects {
		id := object.UnstructuredToObjMetadata(o)
		if _, ok := held[id]; !ok {
			check = append(check, o)
		}
	}
	owners := make([]string, len(check))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, m.opts.ObjectConcurrency))
	for i, o := range check {
		g.Go(func() error {
			// The whole object, kept for ApplyAll's read of it (primed).
			live := &unstructured.Unstructured{}
			live.SetGroupVersionKind(o.GroupVersionKind())
			err := c.Client.Get(gctx, client.ObjectKeyFromObject(o), live)
			switch {
			case err == nil:
				owners[i] = ForeignOwner(live.GetLabels(), live.GetAnnotations())
				c.prime(o, live)
			case apierrors.IsNotFound(err):
				c.prime(o, nil)
			case meta.IsNoMatchError(err): // a kind the cluster does not know yet: ssa reads it itself
			default:
				return fmt.Errorf("reading %s to check who manages it: %w", ssautils.FmtUnstructured(o), err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	var taken []string
	for i, owner := range owners {
		if owner != "" {
			taken = append(taken, fmt.Sprintf("%s is managed by %s", ssautils.FmtUnstructured(check[i]), owner))
		}
	}
	if len(taken) == 0 {
		return nil
	}
	n := len(taken)
	if n > maxForeignNamed {
		taken = append(taken[:maxForeignNamed], fmt.Sprintf("and %d more", n-maxForeignNamed))
	}
	return fmt.Errorf("%w: %s; nothing of the bundle was applied (set adopt: true on the bundle to take these objects over)",
		ErrForeignOwner, strings.Join(taken, "; "))
}
