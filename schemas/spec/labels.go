package spec

// Labels and annotations Flotilla writes on objects, or reads from them.
// They are part of the format, as the schema is: users select by them
// (`kubectl get cm -l flotilla.dev/inventory`), Argo CD and Flux see them.
const (
	// ManagedByLabel is set to ManagedBy on every object Flotilla renders,
	// generates or keeps (inventories, Flux objects).
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "flotilla"
	// BundleLabel names the bundle an object belongs to.
	BundleLabel = "flotilla.dev/bundle"
	// ClusterLabel names the cluster a generated object is for.
	ClusterLabel = "flotilla.dev/cluster"
	// WaveLabel and WaveIndexLabel name the rollout wave of a generated
	// object, by name and by position.
	WaveLabel      = "flotilla.dev/wave"
	WaveIndexLabel = "flotilla.dev/wave-index"
	// InventoryLabel marks a bundle's inventory ConfigMap;
	// InventoryShardLabel its shards.
	InventoryLabel      = "flotilla.dev/inventory"
	InventoryShardLabel = "flotilla.dev/inventory-shard"

	// ReconcileAnnotation "disabled" leaves the object alone: never
	// applied, never pruned (another controller owns it).
	ReconcileAnnotation = "flotilla.dev/reconcile"
	// SSAAnnotation "IfNotPresent" creates the object when missing and
	// never changes it afterwards.
	SSAAnnotation = "flotilla.dev/ssa"
	// IgnoreFieldsAnnotation lists JSON pointers, comma-separated, of
	// fields another controller owns (an HPA's /spec/replicas): Flotilla
	// neither reverts them nor reports them as drift.
	IgnoreFieldsAnnotation = "flotilla.dev/ignore-fields"
)
