package testenv_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	ssautils "github.com/fluxcd/pkg/ssa/utils"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flotilla-gitops/flotilla/internal/testenv"
)

// fieldManager is the field manager Flotilla applies with.
const fieldManager = "flotilla"

func newManager(t *testing.T, c *testenv.Cluster) *ssa.ResourceManager {
	t.Helper()
	kube, err := client.New(c.Config, client.Options{})
	if err != nil {
		t.Fatalf("client for %s: %v", c.Name, err)
	}
	poller := polling.NewStatusPoller(kube, kube.RESTMapper(), polling.Options{})
	return ssa.NewResourceManager(kube, poller, ssa.Owner{Field: fieldManager, Group: "flotilla.dev"})
}

func readFixture(t *testing.T, name string) []*unstructured.Unstructured {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	objects, err := ssautils.ReadObjects(f)
	if err != nil {
		t.Fatalf("reading %s: %v", name, err)
	}
	return objects
}

// appliedBy reports whether the object's managedFields hold an Apply entry of
// the given field manager.
func appliedBy(obj *unstructured.Unstructured, manager string) bool {
	return slices.ContainsFunc(obj.GetManagedFields(), func(e metav1.ManagedFieldsEntry) bool {
		return e.Manager == manager && e.Operation == metav1.ManagedFieldsOperationApply
	})
}

// TestServerSideApplyOnTwoControlPlanes starts two real control planes,
// applies a Namespace, a CRD and a custom resource of it to each with
// fluxcd/pkg/ssa's staged apply, and reads them back: each cluster holds its
// own copy, owned by the flotilla field manager.
func TestServerSideApplyOnTwoControlPlanes(t *testing.T) {
	clusters := testenv.StartFleetT(t, testenv.Options{Name: "alpha"}, testenv.Options{Name: "beta"})

	for _, c := range clusters {
		objects := readFixture(t, "widgets.yaml")
		// Mark the custom resource with the cluster it was applied to, to
		// prove below that the two control planes are separate.
		if err := unstructured.SetNestedField(objects[2].Object, c.Name, "spec", "cluster"); err != nil {
			t.Fatal(err)
		}
		cs, err := newManager(t, c).ApplyAllStaged(t.Context(), objects, ssa.DefaultApplyOptions())
		if err != nil {
			t.Fatalf("%s: staged apply: %v", c.Name, err)
		}
		for _, e := range cs.Entries {
			if e.Action != ssa.CreatedAction {
				t.Errorf("%s: %s: action %s, want %s", c.Name, e.Subject, e.Action, ssa.CreatedAction)
			}
		}
		if len(cs.Entries) != len(objects) {
			t.Errorf("%s: %d change set entries, want %d", c.Name, len(cs.Entries), len(objects))
		}
	}

	for _, c := range clusters {
		kube := newManager(t, c).Client()
		for _, want := range readFixture(t, "widgets.yaml") {
			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(want.GroupVersionKind())
			if err := kube.Get(t.Context(), client.ObjectKeyFromObject(want), got); err != nil {
				t.Fatalf("%s: reading back %s: %v", c.Name, ssautils.FmtUnstructured(want), err)
			}
			if !appliedBy(got, fieldManager) {
				t.Errorf("%s: %s has no Apply entry for field manager %q in managedFields: %v",
					c.Name, ssautils.FmtUnstructured(got), fieldManager, got.GetManagedFields())
			}
			if got.GetKind() == "Widget" {
				cluster, _, _ := unstructured.NestedString(got.Object, "spec", "cluster")
				size, _, _ := unstructured.NestedInt64(got.Object, "spec", "size")
				if cluster != c.Name || size != 3 {
					t.Errorf("%s: widget spec is cluster=%q size=%d, want cluster=%q size=3", c.Name, cluster, size, c.Name)
				}
			}
		}
	}
}

// TestApplyFailsWhenAPIServerIsGone proves the tests above talk to the real
// server: once it is stopped, the same apply fails.
func TestApplyFailsWhenAPIServerIsGone(t *testing.T) {
	c := testenv.StartT(t, testenv.Options{Name: "gone"})
	manager := newManager(t, c)
	if err := c.Stop(); err != nil {
		t.Fatalf("stopping: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := manager.ApplyAllStaged(ctx, readFixture(t, "widgets.yaml"), ssa.DefaultApplyOptions()); err == nil {
		t.Fatal("apply to a stopped API server succeeded")
	}
}

// TestFullClusterRollsOutDeployment starts a full cluster (controller-manager,
// scheduler, kwok node) and waits, with kstatus, for a 2-replica Deployment
// applied through ssa to become Available on a node labelled with the
// cluster's region.
func TestFullClusterRollsOutDeployment(t *testing.T) {
	c := testenv.StartT(t, testenv.Options{Name: "full", Full: true, Region: "eu-west-1"})
	manager := newManager(t, c)
	objects := readFixture(t, "deployment.yaml")
	if _, err := manager.ApplyAllStaged(t.Context(), objects, ssa.DefaultApplyOptions()); err != nil {
		t.Fatalf("apply: %v", err)
	}
	wait := ssa.WaitOptions{Interval: 200 * time.Millisecond, Timeout: 90 * time.Second}
	if err := manager.WaitForSetWithContext(t.Context(), object.UnstructuredSetToObjMetadataSet(objects), wait); err != nil {
		t.Fatalf("deployment did not become ready: %v", err)
	}

	kube := manager.Client()
	var deploy appsv1.Deployment
	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: "default", Name: "web"}, &deploy); err != nil {
		t.Fatal(err)
	}
	if deploy.Status.AvailableReplicas != 2 {
		t.Errorf("available replicas %d, want 2", deploy.Status.AvailableReplicas)
	}
	var pods corev1.PodList
	if err := kube.List(t.Context(), &pods, client.InNamespace("default"), client.MatchingLabels{"app": "web"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		var node corev1.Node
		if err := kube.Get(t.Context(), client.ObjectKey{Name: p.Spec.NodeName}, &node); err != nil {
			t.Fatalf("pod %s on node %q: %v", p.Name, p.Spec.NodeName, err)
		}
		if got := node.Labels[testenv.RegionLabel]; got != "eu-west-1" {
			t.Errorf("pod %s runs on node %s in region %q, want eu-west-1", p.Name, node.Name, got)
		}
	}
}

// TestStartExplainsMissingBinaries checks the message a developer sees before
// running `make testenv`.
func TestStartExplainsMissingBinaries(t *testing.T) {
	_, err := testenv.Start(t.Context(), testenv.Options{AssetsDir: t.TempDir(), Full: true})
	if !errors.Is(err, testenv.ErrBinariesMissing) {
		t.Fatalf("error %v, want ErrBinariesMissing", err)
	}
	for _, want := range []string{"kube-apiserver", "kwok", "make testenv", testenv.AssetsEnv} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestAuditLogCountsAClientsRequests: with Audit, the API server logs the
// requests of a client under its user agent, each once, with its verb and
// resource; a reader picks up from where it stopped.
func TestAuditLogCountsAClientsRequests(t *testing.T) {
	c := testenv.StartT(t, testenv.Options{Name: "audited", Audit: true})
	_, from, err := c.ReadAudit(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(c.Config)
	cfg.UserAgent = "audit-probe/v1"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("probe-%d", i), Namespace: "default"}}
		if _, err := cs.CoreV1().ConfigMaps("default").Create(t.Context(), cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Get(t.Context(), "probe-0", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	// An event is written as its request completes, which may be just
	// after the client has its response: read until the four are there.
	verbs := map[string]int{}
	deadline := time.Now().Add(30 * time.Second)
	for verbs["create"]+verbs["get"] < 4 && time.Now().Before(deadline) {
		events, next, err := c.ReadAudit(from)
		if err != nil {
			t.Fatal(err)
		}
		from = next
		for _, e := range events {
			if e.Client() == "audit-probe" && e.ObjectRef != nil && e.ObjectRef.Resource == "configmaps" {
				verbs[e.Verb]++
			}
		}
		time.Sleep(50 * time.Millisecond) // polling a file, bounded by the deadline
	}
	if verbs["create"] != 3 || verbs["get"] != 1 || len(verbs) != 2 {
		t.Errorf("audited requests of the probe: %v, want 3 creates and 1 get", verbs)
	}
}
