// Package apply makes a cluster match its rendered bundles, safely: staged
// server-side apply with fluxcd/pkg/ssa, readiness waits with kstatus that
// a newer revision or shutdown cancels, a per-bundle inventory stored in
// the cluster, pruning, deletion of bundles the cluster no longer gets, a
// mass-deletion guard, drift correction or reporting, and per-bundle
// impersonation of a ServiceAccount.
//
// It returns structured results and never logs.
package apply

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// Options configure a Manager; start from DefaultOptions.
type Options struct {
	// FieldManager owns the applied fields.
	FieldManager string
	// InventoryNamespace holds the bundles' inventories.
	InventoryNamespace string
	// Concurrency is how many independent bundles sync at once.
	Concurrency int
	// ObjectConcurrency is how many objects of a bundle apply at once.
	ObjectConcurrency int
	// MaxDeleteShare: a sync that would delete more than this share of the
	// managed objects (and more than MinGuardedDeletes) deletes nothing and
	// says why, unless AllowMassDeletion.
	MaxDeleteShare    float64
	MinGuardedDeletes int
	AllowMassDeletion bool
	// WaitInterval is how often readiness is polled.
	WaitInterval time.Duration
	// DryRun applies nothing: every object is dry-run applied and the
	// result says what would change.
	DryRun bool
	// KeepUnlisted leaves alone the bundles the cluster has that are not
	// in this sync (a partial sync, `apply --bundle`), instead of deleting
	// them as bundles that left the plan.
	KeepUnlisted bool
	// Self is the Deployment running this agent (the agent's own
	// manifests may be a bundle of the fleet): never waited on, and when a
	// sync would change its pod template, applied last by ApplySelf (see
	// SelfUpdate).
	Self object.ObjMetadata
}

// DefaultOptions are the agent's defaults.
func DefaultOptions() Options {
	return Options{
		FieldManager:       "flotilla",
		InventoryNamespace: "flotilla-system",
		Concurrency:        4,
		ObjectConcurrency:  8,
		MaxDeleteShare:     0.5,
		MinGuardedDeletes:  5,
		WaitInterval:       2 * time.Second,
	}
}

// Manager syncs one cluster.
type Manager struct {
	opts     Options
	cfg      *rest.Config
	mapper   meta.RESTMapper
	http     *http.Client
	manager  *ssa.ResourceManager
	inv      *inventories
	requests atomic.Int64

	mu            sync.Mutex
	impersonating map[string]*ssa.ResourceManager // by ServiceAccount user name
}

// New returns a Manager for the cluster cfg names. Client-side rate
// limiting is off: the API server's priority and fairness protects it, and
// a token bucket would only slow a healthy server down.
func New(cfg *rest.Config, opts Options) (*Manager, error) {
	m := &Manager{opts: opts}
	m.cfg = rest.CopyConfig(cfg)
	m.cfg.QPS = -1
	m.cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &counting{next: rt, total: &m.requests} })
	var err error
	if m.http, err = rest.HTTPClientFor(m.cfg); err != nil {
		return nil, err
	}
	if m.mapper, err = apiutil.NewDynamicRESTMapper(m.cfg, m.http); err != nil {
		return nil, err
	}
	if m.manager, err = m.resourceManager(m.cfg); err != nil {
		return nil, err
	}
	m.inv = &inventories{client: m.manager.Client(), namespace: opts.InventoryNamespace}
	return m, nil
}

// resourceManager builds an ssa manager on a client for cfg, sharing the
// REST mapper.
func (m *Manager) resourceManager(cfg *rest.Config) (*ssa.ResourceManager, error) {
	httpClient := m.http
	if cfg != m.cfg {
		var err error
		if httpClient, err = rest.HTTPClientFor(cfg); err != nil {
			return nil, err
		}
	}
	c, err := client.New(cfg, client.Options{HTTPClient: httpClient, Mapper: m.mapper})
	if err != nil {
		return nil, err
	}
	return m.ssaManager(c), nil
}

// ssaManager is an ssa manager on c: the agent's field manager, its
// status poller, its object concurrency.
func (m *Manager) ssaManager(c client.Client) *ssa.ResourceManager {
	rm := ssa.NewResourceManager(c, polling.NewStatusPoller(c, m.mapper, polling.Options{}), ssa.Owner{Field: m.opts.FieldManager, Group: "flotilla.dev"})
	rm.SetConcurrency(m.opts.ObjectConcurrency)
	return rm
}

// managerFor returns the ssa manager a bundle applies with: impersonating
// its ServiceAccount when it names one. Impersonating managers (each with
// its own HTTP client) are made once per account and reused by every step
// and sync.
func (m *Manager) managerFor(namespace, serviceAccount string) (*ssa.ResourceManager, error) {
	if serviceAccount == "" {
		return m.manager, nil
	}
	user := fmt.Sprintf("system:serviceaccount:%s:%s", namespace, serviceAccount)
	m.mu.Lock()
	defer m.mu.Unlock()
	if rm, ok := m.impersonating[user]; ok {
		return rm, nil
	}
	cfg := rest.CopyConfig(m.cfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	rm, err := m.resourceManager(cfg)
	if err != nil {
		return nil, err
	}
	if m.impersonating == nil {
		m.impersonating = map[string]*ssa.ResourceManager{}
	}
	m.impersonating[user] = rm
	return rm, nil
}

// RESTMapper is the cluster's discovery, for rendering with the cluster's
// scopes (render.MapperScope).
func (m *Manager) RESTMapper() meta.RESTMapper { return m.mapper }

// counting counts requests, in total and for the bundle in the request's
// context.
type counting struct {
	next  http.RoundTripper
	total *atomic.Int64
}

type bundleCounterKey struct{}

func (c *counting) RoundTrip(req *http.Request) (*http.Response, error) {
	c.total.Add(1)
	if n, ok := req.Context().Value(bundleCounterKey{}).(*atomic.Int64); ok {
		n.Add(1)
	}
	return c.next.RoundTrip(req)
}

// withCounter counts the requests made with ctx in n.
func withCounter(ctx context.Context, n *atomic.Int64) context.Context {
	return context.WithValue(ctx, bundleCounterKey{}, n)
}
