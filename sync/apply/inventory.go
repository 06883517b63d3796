package apply

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/flotilla-gitops/flotilla/schemas/spec"
	"github.com/fluxcd/cli-utils/pkg/object"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Inventory labels and keys. An inventory is one ConfigMap per bundle in
// the inventory namespace (flotilla-inv-<bundle>), plus shards
// (flotilla-inv-<bundle>.1, .2, …) when the bundle has more objects than
// fit one: readable with `kubectl get cm -n flotilla-system -l
// flotilla.dev/inventory`. Bundle names are DNS labels, without dots, so
// a shard's name is never another bundle's inventory (with "-1", bundle
// web's second shard was bundle web-1's inventory).
const (
	inventoryName = "flotilla-inv-"

	keyBundle   = "bundle"
	keyDigest   = "digest"
	keyRevision = "revision"
	// keyPrevious is the revision the bundle was at before revision (what
	// a rollback goes back to); keyRolledBack the revision it went back
	// from, which it does not take again.
	keyPrevious   = "previous"
	keyRolledBack = "rolledBack"
	keyPrune      = "prune"
	keyShards     = "shards"
	keyObjects    = "objects"
	// keyNamespace and keyServiceAccount are the identity the bundle
	// applied with, which deletes it when it leaves the plan.
	keyNamespace      = "namespace"
	keyServiceAccount = "serviceAccountName"
)

// entriesPerShard keeps each ConfigMap far below etcd's object size limit
// whatever the names' lengths. A variable for tests.
var entriesPerShard = 1000

// Entry is one object a bundle applied.
type Entry struct {
	ID      object.ObjMetadata
	Version string
	// Created is set when Flotilla created the object (rather than adopting
	// an existing one): only then may Flotilla delete a Namespace or CRD.
	Created bool
	// Digest identifies the rendered object as last applied in full
	// (objectDigest); "" when unknown, or for a Secret.
	Digest string
}

// String is the entry's line in the inventory:
// "<namespace>_<name>_<group>_<kind> <version>[ created][ d=<digest>]"
// (an agent from before digests reads the first three fields only).
func (e Entry) String() string {
	s := e.ID.String() + " " + e.Version
	if e.Created {
		s += " created"
	}
	if e.Digest != "" {
		s += " d=" + e.Digest
	}
	return s
}

func parseEntry(line string) (Entry, error) {
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return Entry{}, fmt.Errorf("inventory entry %q: want ID and version", line)
	}
	id, err := object.ParseObjMetadata(fields[0])
	if err != nil {
		return Entry{}, err
	}
	e := Entry{ID: id, Version: fields[1]}
	for _, f := range fields[2:] {
		switch {
		case f == "created":
			e.Created = true
		case strings.HasPrefix(f, "d="):
			e.Digest = strings.TrimPrefix(f, "d=")
		}
	}
	return e, nil
}

// Object returns a stub of the entry's object, enough to get or delete it.
func (e Entry) Object() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(schema.GroupVersionKind{Group: e.ID.GroupKind.Group, Version: e.Version, Kind: e.ID.GroupKind.Kind})
	u.SetNamespace(e.ID.Namespace)
	u.SetName(e.ID.Name)
	return u
}

// Inventory is what the cluster records of one bundle.
type Inventory struct {
	Bundle   string
	Digest   string
	Revision string
	// Previous is the revision the bundle was at before Revision;
	// RolledBack the revision it went back from (Bundle.RolledBack).
	Previous   string
	RolledBack string
	Prune      bool
	// Namespace and ServiceAccountName are the bundle's, as last applied:
	// when the bundle leaves the plan, its objects are deleted as that
	// ServiceAccount (as they were applied), not with the agent's identity.
	// Inventories written before they were recorded have neither.
	Namespace          string
	ServiceAccountName string
	Entries            []Entry

	// stored are the ConfigMaps' data as read, by name: a write leaves
	// alone the shards that would not change (a change to 10 of 5,000
	// objects rewrites one shard, not five).
	stored map[string]map[string]string
}

// index maps entry IDs to entries.
func (inv *Inventory) index() map[object.ObjMetadata]Entry {
	m := make(map[object.ObjMetadata]Entry, len(inv.Entries))
	for _, e := range inv.Entries {
		m[e.ID] = e
	}
	return m
}

// inventories reads and writes inventories in one namespace.
type inventories struct {
	client    client.Client
	namespace string
}

func shardName(bundle string, shard int) string {
	if shard == 0 {
		return inventoryName + bundle
	}
	return fmt.Sprintf("%s%s.%d", inventoryName, bundle, shard)
}

// ReadInventories reads every bundle's inventory in a namespace, by
// bundle, as a sync does: what tools and tests check a cluster against.
// Inventories that cannot be decoded are returned apart, with why.
func ReadInventories(ctx context.Context, c client.Client, namespace string) (map[string]*Inventory, map[string]error, error) {
	return (&inventories{client: c, namespace: namespace}).list(ctx)
}

// list reads every bundle's inventory, by bundle. An inventory that
// cannot be decoded (a shard missing or foreign, an entry garbled) is
// returned apart, with why: that bundle alone is stopped, not the sync.
func (s *inventories) list(ctx context.Context) (map[string]*Inventory, map[string]error, error) {
	var cms corev1.ConfigMapList
	if err := s.client.List(ctx, &cms, client.InNamespace(s.namespace), client.HasLabels{spec.InventoryLabel}); err != nil {
		if apierrors.IsNotFound(err) {
			return map[string]*Inventory{}, nil, nil
		}
		return nil, nil, fmt.Errorf("listing inventories: %w", err)
	}
	byBundle := map[string][]corev1.ConfigMap{}
	for _, cm := range cms.Items {
		bundle := cm.Labels[spec.InventoryLabel]
		byBundle[bundle] = append(byBundle[bundle], cm)
	}
	out := map[string]*Inventory{}
	broken := map[string]error{}
	for bundle, shards := range byBundle {
		inv, err := decodeInventory(bundle, shards)
		if err != nil {
			broken[bundle] = fmt.Errorf("%w; nothing of the bundle is applied or deleted until it is repaired (or removed: kubectl -n %s delete configmap -l %s=%s, and the next sync adopts the bundle's objects again, pruning none)",
				err, s.namespace, spec.InventoryLabel, bundle)
			continue
		}
		out[bundle] = inv
	}
	return out, broken, nil
}

// decodeInventory joins a bundle's shards; shard 0 holds the metadata.
func decodeInventory(bundle string, shards []corev1.ConfigMap) (*Inventory, error) {
	slices.SortFunc(shards, func(a, b corev1.ConfigMap) int {
		ai, _ := strconv.Atoi(a.Labels[spec.InventoryShardLabel])
		bi, _ := strconv.Atoi(b.Labels[spec.InventoryShardLabel])
		return ai - bi
	})
	head := shards[0].Data
	inv := &Inventory{
		Bundle: bundle, Digest: head[keyDigest], Revision: head[keyRevision], Prune: head[keyPrune] != "false",
		Previous: head[keyPrevious], RolledBack: head[keyRolledBack],
		Namespace: head[keyNamespace], ServiceAccountName: head[keyServiceAccount],
	}
	want, _ := strconv.Atoi(head[keyShards])
	if want != len(shards) {
		return nil, fmt.Errorf("inventory of bundle %s has %d shards, its head says %d", bundle, len(shards), want)
	}
	inv.stored = make(map[string]map[string]string, len(shards))
	for _, cm := range shards {
		inv.stored[cm.Name] = cm.Data
		for _, line := range strings.Split(cm.Data[keyObjects], "\n") {
			if line == "" {
				continue
			}
			e, err := parseEntry(line)
			if err != nil {
				return nil, fmt.Errorf("inventory of bundle %s: %w", bundle, err)
			}
			inv.Entries = append(inv.Entries, e)
		}
	}
	return inv, nil
}

// write stores an inventory, sharded, and removes shards it no longer
// needs. It applies with server-side apply like everything else.
func (s *inventories) write(ctx context.Context, inv *Inventory, fieldManager string) error {
	if len(inv.stored) == 0 { // else it holds the inventory read
		if err := s.ensureNamespace(ctx, fieldManager); err != nil {
			return err
		}
	}
	entries := slices.Clone(inv.Entries)
	slices.SortFunc(entries, func(a, b Entry) int { return strings.Compare(a.ID.String(), b.ID.String()) })
	shards := max(1, (len(entries)+entriesPerShard-1)/entriesPerShard)
	for i := range shards {
		lines := make([]string, 0, entriesPerShard)
		for _, e := range entries[min(i*entriesPerShard, len(entries)):min((i+1)*entriesPerShard, len(entries))] {
			lines = append(lines, e.String())
		}
		cm := &corev1.ConfigMap{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{
				Name:      shardName(inv.Bundle, i),
				Namespace: s.namespace,
				Labels: map[string]string{
					spec.InventoryLabel:      inv.Bundle,
					spec.InventoryShardLabel: strconv.Itoa(i),
					spec.ManagedByLabel:      spec.ManagedBy,
				},
			},
			Data: map[string]string{keyObjects: strings.Join(lines, "\n")},
		}
		if i == 0 {
			cm.Data[keyBundle] = inv.Bundle
			cm.Data[keyDigest] = inv.Digest
			cm.Data[keyRevision] = inv.Revision
			cm.Data[keyPrune] = strconv.FormatBool(inv.Prune)
			cm.Data[keyShards] = strconv.Itoa(shards)
			for key, v := range map[string]string{keyPrevious: inv.Previous, keyRolledBack: inv.RolledBack} {
				if v != "" {
					cm.Data[key] = v
				}
			}
			if inv.ServiceAccountName != "" {
				cm.Data[keyNamespace] = inv.Namespace
				cm.Data[keyServiceAccount] = inv.ServiceAccountName
			}
		}
		if maps.Equal(inv.stored[cm.Name], cm.Data) {
			continue // stored as it is
		}
		if err := s.client.Patch(ctx, cm, client.Apply, //nolint:staticcheck // SA1019: the typed Apply needs apply configurations; this ConfigMap is built as an object
			client.FieldOwner(fieldManager), client.ForceOwnership); err != nil {
			return fmt.Errorf("writing inventory of bundle %s: %w", inv.Bundle, err)
		}
	}
	if inv.storedAs(shards) {
		return nil // the shards read are these: none to delete
	}
	return s.deleteShards(ctx, inv.Bundle, shards)
}

// storedAs reports whether the inventory was read as exactly the shards
// a write of n shards names.
func (inv *Inventory) storedAs(n int) bool {
	if len(inv.stored) != n {
		return false
	}
	for i := range n {
		if _, ok := inv.stored[shardName(inv.Bundle, i)]; !ok {
			return false
		}
	}
	return true
}

// remove deletes a bundle's inventory.
func (s *inventories) remove(ctx context.Context, bundle string) error {
	return s.deleteShards(ctx, bundle, 0)
}

// deleteShards deletes the bundle's ConfigMaps other than its first keep
// shards as this version names them (shards named by an earlier version,
// "-1", go too).
func (s *inventories) deleteShards(ctx context.Context, bundle string, keep int) error {
	var cms corev1.ConfigMapList
	if err := s.client.List(ctx, &cms, client.InNamespace(s.namespace), client.MatchingLabels{spec.InventoryLabel: bundle}); err != nil {
		return err
	}
	for _, cm := range cms.Items {
		n, err := strconv.Atoi(cm.Labels[spec.InventoryShardLabel])
		if err == nil && n < keep && cm.Name == shardName(bundle, n) {
			continue
		}
		if err := s.client.Delete(ctx, &cm); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting inventory %s: %w", cm.Name, err)
		}
	}
	return nil
}

// ensureNamespace creates the inventory namespace when missing (an agent
// with least-privilege RBAC may read namespaces but not write them: the
// namespace is then installed with it).
func (s *inventories) ensureNamespace(ctx context.Context, fieldManager string) error {
	if err := s.client.Get(ctx, client.ObjectKey{Name: s.namespace}, &corev1.Namespace{}); err == nil {
		return nil
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading inventory namespace %s: %w", s.namespace, err)
	}
	ns := &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: s.namespace, Labels: map[string]string{spec.ManagedByLabel: spec.ManagedBy}},
	}
	if err := s.client.Patch(ctx, ns, client.Apply, client.FieldOwner(fieldManager)); err != nil { //nolint:staticcheck // SA1019: as above
		return fmt.Errorf("creating inventory namespace %s: %w", s.namespace, err)
	}
	return nil
}
