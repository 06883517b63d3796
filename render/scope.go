package render

import (
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Scope tells whether a kind is namespaced. known is false when it cannot
// tell.
type Scope interface {
	Namespaced(gvk schema.GroupVersionKind) (namespaced, known bool)
}

// ScopeFunc adapts a function to Scope.
type ScopeFunc func(gvk schema.GroupVersionKind) (namespaced, known bool)

// Namespaced calls f.
func (f ScopeFunc) Namespaced(gvk schema.GroupVersionKind) (bool, bool) { return f(gvk) }

var _ Scope = ScopeFunc(nil)

// BuiltinScope knows the kinds built into the Kubernetes API server.
// Rendering offline (a laptop, CI) has no cluster to ask; the agent passes
// a Scope backed by the cluster's discovery instead.
func BuiltinScope() Scope {
	return ScopeFunc(func(gvk schema.GroupVersionKind) (bool, bool) {
		namespaced, known := builtinKinds[gvk.GroupKind()]
		return namespaced, known
	})
}

// builtinKinds maps the built-in kinds of kube-apiserver v1.36 to whether
// they are namespaced. The test TestBuiltinScopeMatchesAPIServer checks it
// against a real API server's discovery.
var builtinKinds = map[schema.GroupKind]bool{
	// Cluster-scoped.
	{Group: "", Kind: "ComponentStatus"}:                                              false,
	{Group: "", Kind: "Namespace"}:                                                    false,
	{Group: "", Kind: "Node"}:                                                         false,
	{Group: "", Kind: "PersistentVolume"}:                                             false,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingAdmissionPolicy"}:          false,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingAdmissionPolicyBinding"}:   false,
	{Group: "admissionregistration.k8s.io", Kind: "MutatingWebhookConfiguration"}:     false,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicy"}:        false,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingAdmissionPolicyBinding"}: false,
	{Group: "admissionregistration.k8s.io", Kind: "ValidatingWebhookConfiguration"}:   false,
	{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}:                 false,
	{Group: "apiregistration.k8s.io", Kind: "APIService"}:                             false,
	{Group: "authentication.k8s.io", Kind: "SelfSubjectReview"}:                       false,
	{Group: "authentication.k8s.io", Kind: "TokenReview"}:                             false,
	{Group: "authorization.k8s.io", Kind: "SelfSubjectAccessReview"}:                  false,
	{Group: "authorization.k8s.io", Kind: "SelfSubjectRulesReview"}:                   false,
	{Group: "authorization.k8s.io", Kind: "SubjectAccessReview"}:                      false,
	{Group: "certificates.k8s.io", Kind: "CertificateSigningRequest"}:                 false,
	{Group: "flowcontrol.apiserver.k8s.io", Kind: "FlowSchema"}:                       false,
	{Group: "flowcontrol.apiserver.k8s.io", Kind: "PriorityLevelConfiguration"}:       false,
	{Group: "networking.k8s.io", Kind: "IPAddress"}:                                   false,
	{Group: "networking.k8s.io", Kind: "IngressClass"}:                                false,
	{Group: "networking.k8s.io", Kind: "ServiceCIDR"}:                                 false,
	{Group: "node.k8s.io", Kind: "RuntimeClass"}:                                      false,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}:                         false,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRoleBinding"}:                  false,
	{Group: "resource.k8s.io", Kind: "DeviceClass"}:                                   false,
	{Group: "resource.k8s.io", Kind: "ResourceSlice"}:                                 false,
	{Group: "scheduling.k8s.io", Kind: "PriorityClass"}:                               false,
	{Group: "storage.k8s.io", Kind: "CSIDriver"}:                                      false,
	{Group: "storage.k8s.io", Kind: "CSINode"}:                                        false,
	{Group: "storage.k8s.io", Kind: "StorageClass"}:                                   false,
	{Group: "storage.k8s.io", Kind: "VolumeAttachment"}:                               false,
	{Group: "storage.k8s.io", Kind: "VolumeAttributesClass"}:                          false,
	// Namespaced.
	{Group: "", Kind: "Binding"}:                                      true,
	{Group: "", Kind: "ConfigMap"}:                                    true,
	{Group: "", Kind: "Endpoints"}:                                    true,
	{Group: "", Kind: "Event"}:                                        true,
	{Group: "", Kind: "LimitRange"}:                                   true,
	{Group: "", Kind: "PersistentVolumeClaim"}:                        true,
	{Group: "", Kind: "Pod"}:                                          true,
	{Group: "", Kind: "PodTemplate"}:                                  true,
	{Group: "", Kind: "ReplicationController"}:                        true,
	{Group: "", Kind: "ResourceQuota"}:                                true,
	{Group: "", Kind: "Secret"}:                                       true,
	{Group: "", Kind: "Service"}:                                      true,
	{Group: "", Kind: "ServiceAccount"}:                               true,
	{Group: "apps", Kind: "ControllerRevision"}:                       true,
	{Group: "apps", Kind: "DaemonSet"}:                                true,
	{Group: "apps", Kind: "Deployment"}:                               true,
	{Group: "apps", Kind: "ReplicaSet"}:                               true,
	{Group: "apps", Kind: "StatefulSet"}:                              true,
	{Group: "authorization.k8s.io", Kind: "LocalSubjectAccessReview"}: true,
	{Group: "autoscaling", Kind: "HorizontalPodAutoscaler"}:           true,
	{Group: "batch", Kind: "CronJob"}:                                 true,
	{Group: "batch", Kind: "Job"}:                                     true,
	{Group: "coordination.k8s.io", Kind: "Lease"}:                     true,
	{Group: "discovery.k8s.io", Kind: "EndpointSlice"}:                true,
	{Group: "events.k8s.io", Kind: "Event"}:                           true,
	{Group: "networking.k8s.io", Kind: "Ingress"}:                     true,
	{Group: "networking.k8s.io", Kind: "NetworkPolicy"}:               true,
	{Group: "policy", Kind: "PodDisruptionBudget"}:                    true,
	{Group: "rbac.authorization.k8s.io", Kind: "Role"}:                true,
	{Group: "rbac.authorization.k8s.io", Kind: "RoleBinding"}:         true,
	{Group: "resource.k8s.io", Kind: "ResourceClaim"}:                 true,
	{Group: "resource.k8s.io", Kind: "ResourceClaimTemplate"}:         true,
	{Group: "storage.k8s.io", Kind: "CSIStorageCapacity"}:             true,
}

// withCRDs extends a scope with the CustomResourceDefinitions among the
// objects being rendered, so a chart's own custom resources are placed
// right without a cluster.
func withCRDs(s Scope, objects []Object) Scope {
	crds := map[schema.GroupKind]bool{}
	for _, o := range objects {
		obj := o.Object
		if obj.GroupVersionKind().GroupKind() != (schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}) {
			continue
		}
		group, _, _ := unstructured.NestedString(obj.Object, "spec", "group")
		kind, _, _ := unstructured.NestedString(obj.Object, "spec", "names", "kind")
		scope, _, _ := unstructured.NestedString(obj.Object, "spec", "scope")
		crds[schema.GroupKind{Group: group, Kind: kind}] = scope != "Cluster"
	}
	if len(crds) == 0 {
		return s
	}
	return ScopeFunc(func(gvk schema.GroupVersionKind) (bool, bool) {
		if namespaced, ok := crds[gvk.GroupKind()]; ok {
			return namespaced, true
		}
		return s.Namespaced(gvk)
	})
}

// MapperScope asks a RESTMapper (a cluster's discovery) and falls back to
// the built-in kinds when the mapper does not know a kind.
func MapperScope(mapper meta.RESTMapper) Scope {
	builtin := BuiltinScope()
	return ScopeFunc(func(gvk schema.GroupVersionKind) (bool, bool) {
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return builtin.Namespaced(gvk)
		}
		return m.Scope.Name() == meta.RESTScopeNameNamespace, true
	})
}
