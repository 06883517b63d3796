package agent

import (
	"errors"
	"regexp"
	"slices"
	"sync/atomic"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/flotilla-gitops/flotilla/sync/apply"
	"github.com/flotilla-gitops/flotilla/sync/notify"
	"github.com/flotilla-gitops/flotilla/sync/report"
	"github.com/flotilla-gitops/flotilla/sync/sandbox"
	"github.com/flotilla-gitops/flotilla/sync/source"
)

// metrics are the agent's Prometheus metrics, on a registry of its own (no
// global state). Labels are bundles and phases, never objects: cardinality
// stays the size of the fleet.
type metrics struct {
	registry     *prometheus.Registry
	passDuration prometheus.Histogram
	revision     *prometheus.GaugeVec
	bundles      *prometheus.GaugeVec
	objects      *prometheus.CounterVec
	drift        *prometheus.CounterVec
	gitErrors    *prometheus.CounterVec
	passes       *prometheus.CounterVec
	bundleSyncs  *prometheus.CounterVec
	rollout      *prometheus.GaugeVec
	took         *prometheus.HistogramVec
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		passDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flotilla_sync_duration_seconds", Help: "Duration of passes that planned and applied.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}),
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flotilla_applied_revision_info", Help: "The revision last applied in full (value 1).",
		}, []string{"revision"}),
		bundles: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flotilla_bundles", Help: "Bundles by phase after the last pass that applied.",
		}, []string{"phase"}),
		objects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_objects_applied_total", Help: "Objects created, configured or deleted, by bundle.",
		}, []string{"bundle", "action"}),
		drift: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_drift_corrections_total", Help: "Objects changed outside Git and put back (or reported), by bundle.",
		}, []string{"bundle"}),
		gitErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_git_errors_total", Help: "Failed asks and fetches of the fleet repository, by reason.",
		}, []string{"reason"}),
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_passes_total", Help: "Passes, by outcome: idle, applied, failed.",
		}, []string{"outcome"}),
		bundleSyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flotilla_bundle_syncs_total", Help: "Bundle syncs, by mode: incremental (what changed, and what the drift watch saw move) or full (every object checked).",
		}, []string{"mode"}),
		took: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "flotilla_commit_to_ready_seconds",
			Help: "From a revision's commit to this cluster Ready at it, by the cluster's rollout wave (observed when the agent sees the cluster take a new revision).",
			// 10 s to about 45 hours.
			Buckets: prometheus.ExponentialBuckets(10, 2, 15),
		}, []string{"wave"}),
		rollout: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flotilla_rollout_state", Help: "Where the cluster stands in the rollout of the tip: 1 for its state (Applied, Waiting, Halted), 0 for the others.",
		}, []string{"state"}),
	}
	m.registry.MustRegister(m.passDuration, m.revision, m.bundles, m.objects, m.drift, m.gitErrors, m.passes, m.bundleSyncs, m.rollout, m.took,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// MetricNames are the names of every metric an agent can serve (its own,
// with workers and receivers configured, and the Go and process
// collectors'), for checking what dashboards and alerts name.
func MetricNames() []string {
	m := newMetrics()
	m.countWorkers(nil)
	m.countNotifications(notify.New(&notify.Config{}, notify.Options{}, logr.Discard()))
	descs := make(chan *prometheus.Desc)
	go func() {
		m.registry.Describe(descs)
		close(descs)
	}()
	var names []string
	for d := range descs {
		if m := fqName.FindStringSubmatch(d.String()); m != nil && !slices.Contains(names, m[1]) {
			names = append(names, m[1])
		}
	}
	slices.Sort(names)
	return names
}

// fqName finds a metric's name in its description.
var fqName = regexp.MustCompile(`fqName: "([a-zA-Z_:][a-zA-Z0-9_:]*)"`)

// countWorkers adds the number of the pool's render workers running now.
func (m *metrics) countWorkers(pool *sandbox.Pool) {
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "flotilla_render_workers",
		Help: "Render workers running now: they end once a pass has rendered, before it applies (unless --worker-idle-timeout is 0).",
	}, func() float64 { return float64(pool.Workers()) }))
}

// countNotifications adds the notifier's deliveries, by outcome.
func (m *metrics) countNotifications(n *notify.Notifier) {
	for outcome, count := range map[string]*atomic.Int64{"sent": &n.Sent, "dropped": &n.Dropped, "failed": &n.Failed} {
		m.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "flotilla_notifications_total",
			Help:        "Events for the --notify-config receivers, by outcome: sent, dropped (a full queue), failed (after its retries).",
			ConstLabels: prometheus.Labels{"outcome": outcome},
		}, func() float64 { return float64(count.Load()) }))
	}
}

// observe records a pass.
func (m *metrics) observe(p *Pass) {
	if p.gate != nil {
		for _, state := range []report.RolloutState{report.RolloutApplied, report.RolloutWaiting, report.RolloutHalted} {
			v := 0.0
			if p.gate.status.State == state {
				v = 1
			}
			m.rollout.WithLabelValues(state.String()).Set(v)
		}
	}
	switch {
	case p.Err != nil:
		m.passes.WithLabelValues("failed").Inc()
		if p.gitErr {
			reason := "other"
			switch {
			case errors.Is(p.Err, source.ErrAuth):
				reason = "auth"
			case errors.Is(p.Err, source.ErrRefNotFound):
				reason = "ref"
			}
			m.gitErrors.WithLabelValues(reason).Inc()
		}
		return
	case !p.Changed:
		m.passes.WithLabelValues("idle").Inc()
		return
	}
	m.passes.WithLabelValues("applied").Inc()
	m.passDuration.Observe(p.Result.Duration.Seconds())
	phases := map[apply.Phase]float64{}
	for _, b := range p.Result.Bundles {
		phases[b.Phase]++
		mode := "full"
		if b.Incremental {
			mode = "incremental"
		}
		m.bundleSyncs.WithLabelValues(mode).Inc()
		c := b.Counts
		for action, n := range map[apply.Action]int{apply.ActionCreated: c.Created, apply.ActionConfigured: c.Configured, apply.ActionDeleted: c.Deleted} {
			if n > 0 {
				m.objects.WithLabelValues(b.Name, string(action)).Add(float64(n))
			}
		}
		if c.Drifted > 0 {
			m.drift.WithLabelValues(b.Name).Add(float64(c.Drifted))
		}
	}
	m.bundles.Reset()
	for _, ph := range []apply.Phase{apply.PhaseReady, apply.PhaseProgressing, apply.PhaseFailed, apply.PhaseSkipped, apply.PhaseDrifted, apply.PhasePruned} {
		m.bundles.WithLabelValues(string(ph)).Set(phases[ph])
	}
	if !p.Result.Failed() && !p.gate.waiting() {
		m.revision.Reset()
		m.revision.WithLabelValues(p.Revision).Set(1)
	}
}
