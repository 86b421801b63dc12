package metrics

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// event builds a task event for task name at t0 + at.
func event(typ, task string, at, runtime time.Duration) *consumer.TaskEvent {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	return &consumer.TaskEvent{
		Type: typ, Time: t0.Add(at), Received: t0, Runtime: runtime, Queue: "q",
		Message: &protocol.Message{ID: "id-" + task, Task: task},
	}
}

// family gathers c's registry and returns the named family, or nil.
func family(t *testing.T, c *Collector, name string) *dto.MetricFamily {
	t.Helper()
	mfs, err := c.Registry().Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf
		}
	}
	return nil
}

// series returns the metric of family name with task=task, or nil.
func series(t *testing.T, c *Collector, name, task string) *dto.Metric {
	t.Helper()
	mf := family(t, c, name)
	if mf == nil {
		return nil
	}
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "task" && l.GetValue() == task {
				return m
			}
		}
	}
	return nil
}

func TestObserveTaskCounters(t *testing.T) {
	c := NewCollector(Config{Tasks: []string{"proj.add", "proj.slow"}})
	for _, e := range []*consumer.TaskEvent{
		event(consumer.TaskReceived, "proj.add", 0, 0),
		event(consumer.TaskStarted, "proj.add", time.Millisecond, 0),
		event(consumer.TaskSucceeded, "proj.add", 2*time.Millisecond, 300*time.Microsecond),
		event(consumer.TaskReceived, "proj.add", 0, 0),
		event(consumer.TaskStarted, "proj.add", 0, 0),
		event(consumer.TaskFailed, "proj.add", 0, 2*time.Second),
		event(consumer.TaskReceived, "proj.add", 0, 0),
		event(consumer.TaskRetried, "proj.add", 0, 0),
		event(consumer.TaskRevoked, "proj.add", 0, 0),
		event(consumer.TaskRejected, "proj.add", 0, 0),
		// Unregistered: only task-failed, runtime 0, under "other".
		event(consumer.TaskFailed, "evil.name", 0, 0),
		event("worker-heartbeat", "proj.add", 0, 0), // not a task event: ignored
		{Type: consumer.TaskReceived},               // no message: "other"
	} {
		c.ObserveTask(e)
	}
	want := `
# HELP gocelery_tasks_failed_total Tasks that failed, unregistered names included (task-failed events).
# TYPE gocelery_tasks_failed_total counter
gocelery_tasks_failed_total{task="other"} 1
gocelery_tasks_failed_total{task="proj.add"} 1
gocelery_tasks_failed_total{task="proj.slow"} 0
# HELP gocelery_tasks_received_total Tasks received by the worker (task-received events).
# TYPE gocelery_tasks_received_total counter
gocelery_tasks_received_total{task="other"} 1
gocelery_tasks_received_total{task="proj.add"} 3
gocelery_tasks_received_total{task="proj.slow"} 0
# HELP gocelery_tasks_rejected_total Tasks rejected by their handler (task-rejected events).
# TYPE gocelery_tasks_rejected_total counter
gocelery_tasks_rejected_total{task="other"} 0
gocelery_tasks_rejected_total{task="proj.add"} 1
gocelery_tasks_rejected_total{task="proj.slow"} 0
# HELP gocelery_tasks_retried_total Tasks that asked to be retried (task-retried events).
# TYPE gocelery_tasks_retried_total counter
gocelery_tasks_retried_total{task="other"} 0
gocelery_tasks_retried_total{task="proj.add"} 1
gocelery_tasks_retried_total{task="proj.slow"} 0
# HELP gocelery_tasks_revoked_total Tasks revoked, for example expired before they ran (task-revoked events).
# TYPE gocelery_tasks_revoked_total counter
gocelery_tasks_revoked_total{task="other"} 0
gocelery_tasks_revoked_total{task="proj.add"} 1
gocelery_tasks_revoked_total{task="proj.slow"} 0
# HELP gocelery_tasks_started_total Tasks whose handler started (task-started events).
# TYPE gocelery_tasks_started_total counter
gocelery_tasks_started_total{task="other"} 0
gocelery_tasks_started_total{task="proj.add"} 2
gocelery_tasks_started_total{task="proj.slow"} 0
# HELP gocelery_tasks_succeeded_total Tasks that succeeded (task-succeeded events).
# TYPE gocelery_tasks_succeeded_total counter
gocelery_tasks_succeeded_total{task="other"} 0
gocelery_tasks_succeeded_total{task="proj.add"} 1
gocelery_tasks_succeeded_total{task="proj.slow"} 0
`
	if err := testutil.GatherAndCompare(c.Registry(), strings.NewReader(want),
		"gocelery_tasks_received_total", "gocelery_tasks_started_total", "gocelery_tasks_succeeded_total",
		"gocelery_tasks_failed_total", "gocelery_tasks_retried_total", "gocelery_tasks_revoked_total",
		"gocelery_tasks_rejected_total"); err != nil {
		t.Error(err)
	}
}

func TestObserveTaskHistograms(t *testing.T) {
	tests := []struct {
		name       string
		events     []*consumer.TaskEvent
		metric     string
		count      uint64
		sum        float64
		bucketLE   float64 // a bucket bound to check
		bucketWant uint64
	}{
		{
			name: "runtime of successes and timed failures",
			events: []*consumer.TaskEvent{
				event(consumer.TaskSucceeded, "t", 0, 300*time.Microsecond),
				event(consumer.TaskFailed, "t", 0, 2*time.Second),
				event(consumer.TaskFailed, "t", 0, 0), // never ran: no sample
				event(consumer.TaskRetried, "t", 0, time.Hour),
			},
			metric: "gocelery_task_runtime_seconds", count: 2, sum: 2.0003,
			bucketLE: 0.0005, bucketWant: 1,
		},
		{
			name: "queue wait on task-started only",
			events: []*consumer.TaskEvent{
				event(consumer.TaskReceived, "t", 0, 0),
				event(consumer.TaskStarted, "t", 50*time.Microsecond, 0),
				event(consumer.TaskStarted, "t", 90*time.Second, 0), // an ETA hold
				event(consumer.TaskSucceeded, "t", 91*time.Second, time.Second),
			},
			metric: "gocelery_task_queue_wait_seconds", count: 2, sum: 90.00005,
			bucketLE: 0.0001, bucketWant: 1,
		},
		{
			name: "clock going backwards counts as no wait",
			events: []*consumer.TaskEvent{
				event(consumer.TaskStarted, "t", -time.Second, 0),
			},
			metric: "gocelery_task_queue_wait_seconds", count: 1, sum: 0,
			bucketLE: 0.0001, bucketWant: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCollector(Config{Tasks: []string{"t"}})
			for _, e := range tt.events {
				c.ObserveTask(e)
			}
			m := series(t, c, tt.metric, "t")
			if m == nil {
				t.Fatalf("no %s{task=t}", tt.metric)
			}
			h := m.GetHistogram()
			if h.GetSampleCount() != tt.count {
				t.Errorf("count = %d, want %d", h.GetSampleCount(), tt.count)
			}
			if d := h.GetSampleSum() - tt.sum; d > 1e-9 || d < -1e-9 {
				t.Errorf("sum = %v, want %v", h.GetSampleSum(), tt.sum)
			}
			found := false
			for _, b := range h.GetBucket() {
				if b.GetUpperBound() == tt.bucketLE {
					found = true
					if b.GetCumulativeCount() != tt.bucketWant {
						t.Errorf("bucket le=%v = %d, want %d", tt.bucketLE, b.GetCumulativeCount(), tt.bucketWant)
					}
				}
			}
			if !found {
				t.Errorf("no bucket le=%v", tt.bucketLE)
			}
		})
	}
}

func TestTaskLabelCardinality(t *testing.T) {
	names := make([]string, 500)
	for i := range names {
		names[i] = fmt.Sprintf("attacker.task%d", i)
	}
	tests := []struct {
		name      string
		opts      Config
		feed      []string
		wantTasks []string // labels of gocelery_tasks_failed_total, sorted
		wantOther float64
	}{
		{
			name:      "registered names only",
			opts:      Config{Tasks: []string{"proj.a", "proj.b", "proj.a"}},
			feed:      append([]string{"proj.a", "proj.b"}, names...),
			wantTasks: []string{"other", "proj.a", "proj.b"},
			wantOther: 500,
		},
		{
			name:      "first MaxTasks names, then other",
			opts:      Config{MaxTasks: 3},
			feed:      append([]string{"x", "y", "x"}, names...),
			wantTasks: []string{"attacker.task0", "other", "x", "y"},
			wantOther: 499,
		},
		{
			name:      "default cap",
			opts:      Config{},
			feed:      names,
			wantTasks: nil, // checked by count below
			wantOther: 500 - DefaultMaxTasks,
		},
		{
			name:      "a task literally named other shares the bucket",
			opts:      Config{MaxTasks: 1},
			feed:      []string{OtherTask, "a", "b"},
			wantTasks: []string{"a", "other"},
			wantOther: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCollector(tt.opts)
			for _, n := range tt.feed {
				c.ObserveTask(event(consumer.TaskFailed, n, 0, 0))
			}
			mf := family(t, c, "gocelery_tasks_failed_total")
			var got []string
			for _, m := range mf.GetMetric() {
				got = append(got, m.GetLabel()[0].GetValue())
			}
			if tt.wantTasks != nil && strings.Join(got, ",") != strings.Join(tt.wantTasks, ",") {
				t.Errorf("task labels = %v, want %v", got, tt.wantTasks)
			}
			if tt.wantTasks == nil && len(got) != DefaultMaxTasks+1 {
				t.Errorf("%d task labels, want %d", len(got), DefaultMaxTasks+1)
			}
			if v := series(t, c, "gocelery_tasks_failed_total", OtherTask).GetCounter().GetValue(); v != tt.wantOther {
				t.Errorf("other = %v, want %v", v, tt.wantOther)
			}
		})
	}
}

// fakeWorker and fakeBroker stand for *consumer.Worker and a broker.
type fakeWorker struct {
	mu        sync.Mutex
	stats     consumer.Stats
	consuming bool
}

func (f *fakeWorker) Stats() consumer.Stats { f.mu.Lock(); defer f.mu.Unlock(); return f.stats }
func (f *fakeWorker) Consuming() bool       { f.mu.Lock(); defer f.mu.Unlock(); return f.consuming }
func (f *fakeWorker) set(consuming bool)    { f.mu.Lock(); f.consuming = consuming; f.mu.Unlock() }

type fakeWorkerWithConcurrency struct{ *fakeWorker }

func (fakeWorkerWithConcurrency) Concurrency() int { return 8 }

type fakeBroker struct {
	mu         sync.Mutex
	connected  bool
	reconnects int64
}

func (f *fakeBroker) Connected() bool    { f.mu.Lock(); defer f.mu.Unlock(); return f.connected }
func (f *fakeBroker) Reconnects() int64  { f.mu.Lock(); defer f.mu.Unlock(); return f.reconnects }
func (f *fakeBroker) set(connected bool) { f.mu.Lock(); f.connected = connected; f.mu.Unlock() }

func TestScrapeTimeGauges(t *testing.T) {
	scraped := []string{
		"gocelery_worker_consuming", "gocelery_worker_active_tasks", "gocelery_worker_eta_held_tasks", "gocelery_worker_reserved_tasks",
		"gocelery_worker_prefetch_limit", "gocelery_worker_concurrency", "gocelery_worker_processed_tasks_total",
		"gocelery_worker_abandoned_tasks_total", "gocelery_broker_connected", "gocelery_broker_reconnects_total",
	}
	w := &fakeWorker{consuming: true, stats: consumer.Stats{Active: 3, Processed: 1234, Abandoned: 1, Reserved: 5, HeldETA: 7, Prefetch: 39}}
	tests := []struct {
		name   string
		worker WorkerStats
		broker BrokerHealth
		want   string
	}{
		{name: "not watched", want: ""},
		{
			name: "worker and broker", worker: fakeWorkerWithConcurrency{w},
			broker: &fakeBroker{connected: true, reconnects: 2},
			want: `
# HELP gocelery_broker_connected 1 while the broker connection is up.
# TYPE gocelery_broker_connected gauge
gocelery_broker_connected 1
# HELP gocelery_broker_reconnects_total Times the broker connection was re-established after a loss.
# TYPE gocelery_broker_reconnects_total counter
gocelery_broker_reconnects_total 2
# HELP gocelery_worker_abandoned_tasks_total Handlers left running after a hard time limit.
# TYPE gocelery_worker_abandoned_tasks_total counter
gocelery_worker_abandoned_tasks_total 1
# HELP gocelery_worker_active_tasks Task handlers running now.
# TYPE gocelery_worker_active_tasks gauge
gocelery_worker_active_tasks 3
# HELP gocelery_worker_concurrency Tasks the worker runs at once.
# TYPE gocelery_worker_concurrency gauge
gocelery_worker_concurrency 8
# HELP gocelery_worker_consuming 1 while the worker is taking messages (started consuming, not shutting down).
# TYPE gocelery_worker_consuming gauge
gocelery_worker_consuming 1
# HELP gocelery_worker_eta_held_tasks ETA and countdown tasks held unacknowledged in memory until due.
# TYPE gocelery_worker_eta_held_tasks gauge
gocelery_worker_eta_held_tasks 7
# HELP gocelery_worker_prefetch_limit Prefetch limit in force: concurrency x multiplier, raised by one per held ETA task up to the ETA task limit.
# TYPE gocelery_worker_prefetch_limit gauge
gocelery_worker_prefetch_limit 39
# HELP gocelery_worker_processed_tasks_total Tasks the worker's pool finished, whatever the outcome.
# TYPE gocelery_worker_processed_tasks_total counter
gocelery_worker_processed_tasks_total 1234
# HELP gocelery_worker_reserved_tasks Tasks received (prefetched) and waiting for a free slot; ETA tasks are counted apart.
# TYPE gocelery_worker_reserved_tasks gauge
gocelery_worker_reserved_tasks 5
`,
		},
		{
			name: "broker down, no Concurrency method", worker: &fakeWorker{},
			broker: &fakeBroker{connected: false, reconnects: 5},
			want: `
# HELP gocelery_broker_connected 1 while the broker connection is up.
# TYPE gocelery_broker_connected gauge
gocelery_broker_connected 0
# HELP gocelery_broker_reconnects_total Times the broker connection was re-established after a loss.
# TYPE gocelery_broker_reconnects_total counter
gocelery_broker_reconnects_total 5
# HELP gocelery_worker_abandoned_tasks_total Handlers left running after a hard time limit.
# TYPE gocelery_worker_abandoned_tasks_total counter
gocelery_worker_abandoned_tasks_total 0
# HELP gocelery_worker_active_tasks Task handlers running now.
# TYPE gocelery_worker_active_tasks gauge
gocelery_worker_active_tasks 0
# HELP gocelery_worker_consuming 1 while the worker is taking messages (started consuming, not shutting down).
# TYPE gocelery_worker_consuming gauge
gocelery_worker_consuming 0
# HELP gocelery_worker_eta_held_tasks ETA and countdown tasks held unacknowledged in memory until due.
# TYPE gocelery_worker_eta_held_tasks gauge
gocelery_worker_eta_held_tasks 0
# HELP gocelery_worker_prefetch_limit Prefetch limit in force: concurrency x multiplier, raised by one per held ETA task up to the ETA task limit.
# TYPE gocelery_worker_prefetch_limit gauge
gocelery_worker_prefetch_limit 0
# HELP gocelery_worker_processed_tasks_total Tasks the worker's pool finished, whatever the outcome.
# TYPE gocelery_worker_processed_tasks_total counter
gocelery_worker_processed_tasks_total 0
# HELP gocelery_worker_reserved_tasks Tasks received (prefetched) and waiting for a free slot; ETA tasks are counted apart.
# TYPE gocelery_worker_reserved_tasks gauge
gocelery_worker_reserved_tasks 0
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCollector(Config{})
			if tt.worker != nil || tt.broker != nil {
				c.Watch(tt.worker, tt.broker)
			}
			if err := testutil.GatherAndCompare(c.Registry(), strings.NewReader(tt.want), scraped...); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestConcurrentObserveAndScrape is for the race detector: events for new
// and known names while scraping and re-watching.
func TestConcurrentObserveAndScrape(t *testing.T) {
	c := NewCollector(Config{MaxTasks: 20})
	w, b := &fakeWorker{consuming: true}, &fakeBroker{connected: true}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				name := fmt.Sprintf("t%d", (g*7+i)%40)
				c.ObserveTask(event(consumer.TaskStarted, name, time.Millisecond, 0))
				c.ObserveTask(event(consumer.TaskSucceeded, name, 0, time.Millisecond))
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			c.Watch(w, b)
			if _, err := c.Registry().Gather(); err != nil {
				t.Error(err)
				return
			}
			c.Healthy()
		}
	})
	wg.Wait()
	var total float64
	for _, m := range family(t, c, "gocelery_tasks_succeeded_total").GetMetric() {
		total += m.GetCounter().GetValue()
	}
	if total != 8*2000 {
		t.Errorf("succeeded total = %v, want %d", total, 8*2000)
	}
	if n := len(family(t, c, "gocelery_tasks_succeeded_total").GetMetric()); n != 21 {
		t.Errorf("%d task labels, want 20 + other", n)
	}
}
