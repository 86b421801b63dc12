// Package metrics exposes a Go worker's health and Prometheus metrics:
// a Collector that counts task events (it is a consumer.Observer) and
// reads the worker's and the broker's state at scrape time, and a Server
// that serves /metrics, /healthz and /livez on the worker's
// --metrics-addr.
//
// Metrics, all in the collector's own registry (nothing global):
//
//	gocelery_tasks_received_total{task}       counter  task-received events
//	gocelery_tasks_started_total{task}        counter  task-started events
//	gocelery_tasks_succeeded_total{task}      counter  task-succeeded events
//	gocelery_tasks_failed_total{task}         counter  task-failed events (NotRegistered included)
//	gocelery_tasks_retried_total{task}        counter  task-retried events
//	gocelery_tasks_revoked_total{task}        counter  task-revoked events (expired)
//	gocelery_tasks_rejected_total{task}       counter  task-rejected events (consumer.RejectError)
//	gocelery_task_runtime_seconds{task}       histogram handler run time of succeeded and failed tasks
//	gocelery_task_queue_wait_seconds{task}    histogram time in the worker before the handler started
//	gocelery_worker_consuming                 gauge    1 while the worker takes messages
//	gocelery_worker_active_tasks              gauge    handlers running now
//	gocelery_worker_reserved_tasks            gauge    tasks received (prefetched), waiting for a free slot
//	gocelery_worker_eta_held_tasks            gauge    ETA/countdown tasks held unacked in memory
//	gocelery_worker_prefetch_limit            gauge    prefetch in force (raised by one per held ETA task)
//	gocelery_worker_concurrency               gauge    pool size
//	gocelery_worker_processed_tasks_total     counter  tasks the pool finished
//	gocelery_worker_abandoned_tasks_total     counter  handlers left running after a hard time limit
//	gocelery_broker_connected                 gauge    1 while the broker connection is up
//	gocelery_broker_reconnects_total          counter  broker connections re-established
//
// plus the go_* and process_* collectors. Each event type is its own
// counter rather than one counter with an event label because the events
// overlap (a task is received, then started, then succeeds): summing over
// such a label would mean nothing, which the Prometheus naming guide
// rules out.
//
// The task label is the registered task name (Message.Task, never the
// shadow name). Task names arrive from the network, so the label is
// bounded: with Config.Tasks only those names get a series of their own,
// otherwise the first Config.MaxTasks names do; every other name is
// counted under task="other" (OtherTask).
//
// Queue wait is measured on task-started as the event's Time minus the
// time the worker decoded the message: ETA and countdown holds and waits
// for a free pool slot, not time spent in the broker's queue (a Celery
// message carries no send timestamp to measure that from).
package metrics

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gocelery/gocelery/consumer"
)

// OtherTask is the task label of task names past the cardinality cap or
// outside Config.Tasks.
const OtherTask = "other"

// DefaultMaxTasks is the cap on distinct task labels when Config.Tasks
// is empty.
const DefaultMaxTasks = 100

// RuntimeBuckets are the upper bounds, in seconds, of
// gocelery_task_runtime_seconds: 100 µs to 10 minutes, about three per
// decade, so both a 200 µs Go task and a multi-minute report fall in a
// bucket of their own scale.
var RuntimeBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
	0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
}

// QueueWaitBuckets are the upper bounds, in seconds, of
// gocelery_task_queue_wait_seconds: 100 µs (a free pool slot) to an hour
// (a long countdown held in memory).
var QueueWaitBuckets = []float64{
	0.0001, 0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600,
}

// Config configures a Collector.
type Config struct {
	// Tasks, when set, are the only task names with series of their own,
	// usually mux.Names(); they are created at zero up front, so a task
	// that never ran still shows on dashboards.
	Tasks []string
	// MaxTasks caps distinct task labels when Tasks is empty;
	// 0 means DefaultMaxTasks.
	MaxTasks int
	// Logger receives errors from serving /metrics; nil means
	// slog.Default().
	Logger *slog.Logger
}

// WorkerStats is what the collector reads from the worker at scrape time;
// *consumer.Worker implements it. If it also has Concurrency() int, the
// pool size is exported too.
type WorkerStats interface {
	Stats() consumer.Stats
	Consuming() bool
}

// BrokerHealth is what the collector reads from the broker at scrape
// time; *amqp.Broker and *redis.Broker implement it.
type BrokerHealth interface {
	Connected() bool
	Reconnects() int64
}

// Collector counts task events and exposes them with the worker's and
// broker's state in its own Prometheus registry. It is a
// consumer.Observer; ObserveTask is safe for concurrent use and does not
// block.
type Collector struct {
	reg *prometheus.Registry
	log *slog.Logger

	received, started, succeeded, failed, retried, revoked, rejected *prometheus.CounterVec
	runtime, wait                                                    *prometheus.HistogramVec

	// series maps task names to their resolved series. It is copied on
	// write, so ObserveTask reads it without a lock; writes happen at
	// most MaxTasks times.
	series   atomic.Pointer[map[string]*taskSeries]
	mu       sync.Mutex // serializes writers of series
	fixed    bool       // Config.Tasks was given: no names are added later
	maxTasks int
	other    *taskSeries

	watched atomic.Pointer[watched]
}

// taskSeries are one task label's series, resolved once so the hot path
// skips the vectors' label hashing and locks.
type taskSeries struct {
	received, started, succeeded, failed, retried, revoked, rejected prometheus.Counter
	runtime, wait                                                    prometheus.Observer
}

type watched struct {
	worker WorkerStats
	broker BrokerHealth
}

// NewCollector returns a collector with its own registry.
func NewCollector(opts Config) *Collector {
	c := &Collector{reg: prometheus.NewRegistry(), log: opts.Logger, maxTasks: opts.MaxTasks}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.maxTasks <= 0 {
		c.maxTasks = DefaultMaxTasks
	}
	counter := func(event, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gocelery", Subsystem: "tasks", Name: event + "_total", Help: help,
		}, []string{"task"})
	}
	c.received = counter("received", "Tasks received by the worker (task-received events).")
	c.started = counter("started", "Tasks whose handler started (task-started events).")
	c.succeeded = counter("succeeded", "Tasks that succeeded (task-succeeded events).")
	c.failed = counter("failed", "Tasks that failed, unregistered names included (task-failed events).")
	c.retried = counter("retried", "Tasks that asked to be retried (task-retried events).")
	c.revoked = counter("revoked", "Tasks revoked, for example expired before they ran (task-revoked events).")
	c.rejected = counter("rejected", "Tasks rejected by their handler (task-rejected events).")
	c.runtime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "gocelery", Subsystem: "task", Name: "runtime_seconds",
		Help:    "Handler run time of succeeded and failed tasks.",
		Buckets: RuntimeBuckets,
	}, []string{"task"})
	c.wait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "gocelery", Subsystem: "task", Name: "queue_wait_seconds",
		Help:    "Time from the worker receiving a task to its handler starting: ETA/countdown holds and waits for a pool slot; time in the broker is not included.",
		Buckets: QueueWaitBuckets,
	}, []string{"task"})
	c.reg.MustRegister(c.received, c.started, c.succeeded, c.failed, c.retried, c.revoked, c.rejected,
		c.runtime, c.wait, (*scrapeCollector)(c),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	c.other = c.newSeries(OtherTask)
	m := map[string]*taskSeries{}
	for _, name := range opts.Tasks {
		if _, dup := m[name]; !dup {
			m[name] = c.newSeries(name)
		}
	}
	c.fixed = len(opts.Tasks) > 0
	c.series.Store(&m)
	return c
}

func (c *Collector) newSeries(task string) *taskSeries {
	return &taskSeries{
		received:  c.received.WithLabelValues(task),
		started:   c.started.WithLabelValues(task),
		succeeded: c.succeeded.WithLabelValues(task),
		failed:    c.failed.WithLabelValues(task),
		retried:   c.retried.WithLabelValues(task),
		revoked:   c.revoked.WithLabelValues(task),
		rejected:  c.rejected.WithLabelValues(task),
		runtime:   c.runtime.WithLabelValues(task),
		wait:      c.wait.WithLabelValues(task),
	}
}

// Registry returns the collector's registry, for adding an application's
// own metrics to the same /metrics page.
func (c *Collector) Registry() *prometheus.Registry { return c.reg }

// Watch sets the worker and broker whose state is read at scrape time and
// by /healthz. A nil broker is not checked by /healthz and exports no
// broker metrics. It is safe to call while serving.
func (c *Collector) Watch(w WorkerStats, b BrokerHealth) {
	c.watched.Store(&watched{worker: w, broker: b})
}

// ObserveTask counts e. It is on every task's path: a lookup in an
// immutable map and a few atomic adds, no allocation once the task's
// series exist.
func (c *Collector) ObserveTask(e *consumer.TaskEvent) {
	var name string
	if e.Message != nil {
		name = e.Message.Task
	}
	s := c.lookup(name)
	switch e.Type {
	case consumer.TaskReceived:
		s.received.Inc()
	case consumer.TaskStarted:
		s.started.Inc()
		if !e.Received.IsZero() {
			s.wait.Observe(max(e.Time.Sub(e.Received).Seconds(), 0))
		}
	case consumer.TaskSucceeded:
		s.succeeded.Inc()
		s.runtime.Observe(e.Runtime.Seconds())
	case consumer.TaskFailed:
		s.failed.Inc()
		// Runtime 0: the handler never ran (NotRegistered) or the worker
		// did not time it; a zero sample would skew the histogram.
		if e.Runtime > 0 {
			s.runtime.Observe(e.Runtime.Seconds())
		}
	case consumer.TaskRetried:
		s.retried.Inc()
	case consumer.TaskRevoked:
		s.revoked.Inc()
	case consumer.TaskRejected:
		s.rejected.Inc()
	}
}

// lookup returns the series for a task name, adding it while under the
// cap, or the "other" series.
func (c *Collector) lookup(name string) *taskSeries {
	if s, ok := (*c.series.Load())[name]; ok {
		return s
	}
	if c.fixed || name == "" || name == OtherTask {
		return c.other
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.series.Load()
	if s, ok := old[name]; ok {
		return s
	}
	if len(old) >= c.maxTasks {
		return c.other
	}
	m := make(map[string]*taskSeries, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	s := c.newSeries(name)
	m[name] = s
	c.series.Store(&m)
	return s
}

// scrapeCollector exports the watched worker's and broker's state, read
// when Prometheus scrapes, so the task path pays nothing for it.
type scrapeCollector Collector

var (
	descConsuming   = prometheus.NewDesc("gocelery_worker_consuming", "1 while the worker is taking messages (started consuming, not shutting down).", nil, nil)
	descActive      = prometheus.NewDesc("gocelery_worker_active_tasks", "Task handlers running now.", nil, nil)
	descReserved    = prometheus.NewDesc("gocelery_worker_reserved_tasks", "Tasks received (prefetched) and waiting for a free slot; ETA tasks are counted apart.", nil, nil)
	descHeldETA     = prometheus.NewDesc("gocelery_worker_eta_held_tasks", "ETA and countdown tasks held unacknowledged in memory until due.", nil, nil)
	descPrefetch    = prometheus.NewDesc("gocelery_worker_prefetch_limit", "Prefetch limit in force: concurrency x multiplier, raised by one per held ETA task up to the ETA task limit.", nil, nil)
	descConcurrency = prometheus.NewDesc("gocelery_worker_concurrency", "Tasks the worker runs at once.", nil, nil)
	descProcessed   = prometheus.NewDesc("gocelery_worker_processed_tasks_total", "Tasks the worker's pool finished, whatever the outcome.", nil, nil)
	descAbandoned   = prometheus.NewDesc("gocelery_worker_abandoned_tasks_total", "Handlers left running after a hard time limit.", nil, nil)
	descConnected   = prometheus.NewDesc("gocelery_broker_connected", "1 while the broker connection is up.", nil, nil)
	descReconnects  = prometheus.NewDesc("gocelery_broker_reconnects_total", "Times the broker connection was re-established after a loss.", nil, nil)
)

// Describe implements prometheus.Collector.
func (s *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConsuming, descActive, descReserved, descHeldETA, descPrefetch,
		descConcurrency, descProcessed, descAbandoned, descConnected, descReconnects} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	w := s.watched.Load()
	if w == nil {
		return
	}
	if w.worker != nil {
		st := w.worker.Stats()
		ch <- prometheus.MustNewConstMetric(descConsuming, prometheus.GaugeValue, boolValue(w.worker.Consuming()))
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(st.Active))
		ch <- prometheus.MustNewConstMetric(descReserved, prometheus.GaugeValue, float64(st.Reserved))
		ch <- prometheus.MustNewConstMetric(descHeldETA, prometheus.GaugeValue, float64(st.HeldETA))
		ch <- prometheus.MustNewConstMetric(descPrefetch, prometheus.GaugeValue, float64(st.Prefetch))
		ch <- prometheus.MustNewConstMetric(descProcessed, prometheus.CounterValue, float64(st.Processed))
		ch <- prometheus.MustNewConstMetric(descAbandoned, prometheus.CounterValue, float64(st.Abandoned))
		if cw, ok := w.worker.(interface{ Concurrency() int }); ok {
			ch <- prometheus.MustNewConstMetric(descConcurrency, prometheus.GaugeValue, float64(cw.Concurrency()))
		}
	}
	if w.broker != nil {
		ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, boolValue(w.broker.Connected()))
		ch <- prometheus.MustNewConstMetric(descReconnects, prometheus.CounterValue, float64(w.broker.Reconnects()))
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
