// Package consumer is the Go worker: it consumes Celery task messages from
// a broker, runs the registered handler for each, and writes states and
// results where Python's AsyncResult reads them, with Celery's semantics
// for acks, retries, ETA, expiry, time limits and shutdown.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/internal/lifecycle"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// Broker is what the worker needs from a transport (broker/amqp and
// broker/redis provide it).
type Broker interface {
	Declare(ctx context.Context, qs ...broker.Queue) error
	Consume(ctx context.Context, queues []broker.Queue, prefetch int) (<-chan *broker.Delivery, error)
	SetPrefetch(n int) error
	Publish(ctx context.Context, p broker.Publishing) error
}

// Backend stores task states; *results.Redis provides it. A nil Backend
// stores nothing, like Celery's DisabledBackend.
type Backend interface {
	Store(ctx context.Context, m *results.Meta) error
}

// Workflow continues a canvas after a task ran: callbacks and the next
// chain step on success (before the result is stored, as Celery does),
// then the chord join, failed chain steps and errbacks once a ready state
// is stored. *producer.Workflow implements it. A Finished error that wraps
// results.ErrUnavailable (the result backend stayed unreachable) sends a
// late-ack message back to the queue instead of acking it.
type Workflow interface {
	Succeeded(ctx context.Context, m *protocol.Message, value any) error
	Finished(ctx context.Context, m *protocol.Message, state string, result any) error
}

// UnknownPolicy says what happens to a message whose task is not registered.
type UnknownPolicy int

const (
	// DeadLetter stores FAILURE NotRegistered, as Celery does, and moves
	// the message to the dead-letter place instead of dropping it.
	DeadLetter UnknownPolicy = iota
	// Requeue gives the message back to the broker after a short pause,
	// for another worker that knows the task; nothing is stored.
	Requeue
)

// Config configures a Worker. Queues is required: the worker consumes only
// the queues it is given, never Celery's default "celery" unless listed,
// which is what keeps two apps on one broker apart.
type Config struct {
	Queues []broker.Queue
	// Concurrency is the number of handlers run at once; 0 means 4 x CPUs.
	// What follows an early-acked task's handler (storing its result, the
	// chord join) does not hold the slot: up to max(prefetch, Concurrency)
	// tasks are finishing at once, so a slot never waits on the result
	// backend. A late-ack task holds its slot until acked, so a kill -9
	// runs again at most Concurrency tasks.
	Concurrency int
	// PrefetchMultiplier sets prefetch = Concurrency x multiplier
	// (Celery's worker_prefetch_multiplier); 0 means 4, negative means
	// no limit.
	PrefetchMultiplier int
	// Defaults for tasks whose TaskOptions leave them unset
	// (task_acks_late, task_reject_on_worker_lost, task_track_started);
	// see TaskOptions.RejectOnWorkerLost for what "lost" means in Go.
	AcksLate           bool
	RejectOnWorkerLost bool
	TrackStarted       bool
	// AcksOnFailure acks a failed late-ack task (Celery's default, true
	// unless set); false rejects it without requeue.
	AcksOnFailure *bool
	// ResultExtended writes name, args, kwargs, worker, retries and queue
	// with each state (result_extended).
	ResultExtended bool
	// Hostname is the node name, "gocelery@<host>" by default.
	Hostname string
	// Unknown is the policy for unregistered task names.
	Unknown UnknownPolicy
	// DeadLetterExchange, when set, receives dead-lettered messages with
	// routing key "<queue>.<reason>"; otherwise they go to a durable queue
	// of that name on the default exchange.
	DeadLetterExchange string
	// StaticPrefetch keeps the prefetch fixed: no raise for held ETA
	// tasks, as Celery's worker does on quorum queues (RabbitMQ refuses
	// global QoS there, and a per-consumer one is not raised).
	StaticPrefetch bool
	// ETATaskLimit caps the ETA tasks held in memory (Celery's
	// worker_eta_task_limit); past it prefetch stops growing, so the
	// broker stops delivering. 0 means 10,000.
	ETATaskLimit int
	// ShutdownTimeout bounds the wait for running tasks on a warm
	// shutdown; 0 means 30 s.
	ShutdownTimeout time.Duration
	// SoftShutdownTimeout is Celery 5.5's worker_soft_shutdown_timeout:
	// a cold shutdown (Kill) first waits this long for running tasks, as
	// a time-limited warm phase, before it cancels them. 0 disables it.
	SoftShutdownTimeout time.Duration
	// SoftShutdownOnIdle (worker_enable_soft_shutdown_on_idle) runs the
	// soft phase even when no task is running.
	SoftShutdownOnIdle bool
	// MaxAbandoned caps the handlers left running after their hard time
	// limit (a goroutine cannot be killed); past it the worker stops
	// consuming, drains, and Run returns ErrAbandonedLimit so that a
	// supervisor restarts the process, as Celery replaces a killed child.
	// 0 means the concurrency; negative means no cap.
	MaxAbandoned int
	// Workflow continues chains, chords, callbacks and errbacks; package
	// worker sets it to producer.NewWorkerWorkflow on this worker's broker
	// and backend. With none, a task that has a workflow fails with
	// ErrNoWorkflow rather than drop its next steps.
	Workflow Workflow
	// DefaultQueue is task_default_queue for the tasks a workflow sends;
	// "" means "celery". Package worker passes it to the Workflow it
	// builds.
	DefaultQueue string
	// Observers are told every task event (events for Flower, metrics).
	Observers []Observer
	// RevokesMax and RevokeExpires bound the revoked ids remembered
	// (CELERY_WORKER_REVOKES_MAX, CELERY_WORKER_REVOKE_EXPIRES); 0 means
	// 50,000 and 3 hours.
	RevokesMax    int
	RevokeExpires time.Duration
	// RevokedStore, when set, persists revoked ids across restarts.
	RevokedStore RevokedStore
	// Decoder sets message limits.
	Decoder protocol.Decoder
	Logger  *slog.Logger
	// RetryRoute, when set, chooses where a retry with this ETA is
	// published instead of the delivery's exchange and routing key
	// (package worker sends countdowns on quorum queues through native
	// delayed delivery, as Celery >= 5.5 does).
	RetryRoute func(d *broker.Delivery, eta time.Time) (exchange, routingKey string)
}

// Worker consumes and runs tasks. Create it with New, run it with Run.
type Worker struct {
	broker  Broker
	backend Backend
	mux     *Mux
	cfg     Config
	log     *slog.Logger
	pid     int

	concurrency int
	prefetch    int
	jobs        chan *job
	finishQ     chan finishJob // to the finishers: early-acked tasks finishing off their slot (see execute)
	finishing   sync.WaitGroup // the finishers

	eta        *etaHeld
	earlyAcked earlyAckedSet // attempts early-acked here, for redelivered copies

	consuming atomic.Bool // between a successful Consume and the end of the dispatch loop
	active    atomic.Int64
	processed atomic.Int64
	abandoned atomic.Int64 // handlers left running after a hard time limit
	hung      atomic.Int64 // of those, the ones still running
	tooHung   chan struct{}
	hungOnce  sync.Once

	kill     chan struct{} // closed by the first Kill: cold shutdown
	killNow  chan struct{} // closed by the second: no soft phase left
	kills    atomic.Int32
	cold     atomic.Bool     // running handlers are being cancelled
	taskCtx  context.Context // parent of every task's context; cancelled on cold shutdown
	cancelTs context.CancelFunc

	dlqMu       sync.Mutex
	dlqDeclared map[string]bool

	queues  queueSets
	track   tracker
	revoked *revokedSet
	limits  taskLimits

	life    lifecycle.Guard
	runMu   sync.Mutex // guards started
	started time.Time  // when Run began
}

// ErrWorkerClosed is returned by Run on a worker that has run already or
// was shut down: a Worker runs once; make another with New.
var ErrWorkerClosed = errors.New("consumer: worker already ran or was shut down")

// New returns a worker for the tasks registered on mux.
func New(b Broker, backend Backend, mux *Mux, cfg Config) (*Worker, error) {
	if b == nil || mux == nil {
		return nil, errors.New("consumer: New needs a broker and a mux")
	}
	if len(cfg.Queues) == 0 {
		return nil, errors.New("consumer: no queues configured; name them (Celery's -Q), the worker never guesses")
	}
	if cfg.Hostname == "" {
		host, _ := os.Hostname()
		cfg.Hostname = "gocelery@" + host
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ETATaskLimit <= 0 {
		cfg.ETATaskLimit = 10000
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	w := &Worker{
		broker: b, backend: backend, mux: mux, cfg: cfg,
		log: cfg.Logger, pid: os.Getpid(),
		concurrency: cfg.Concurrency,
		kill:        make(chan struct{}),
		killNow:     make(chan struct{}),
		tooHung:     make(chan struct{}),
		dlqDeclared: map[string]bool{},
		track:       tracker{reqs: map[string]*tracked{}, total: map[string]int64{}},
		revoked:     &revokedSet{ids: map[string]time.Time{}, max: cfg.RevokesMax, ttl: cfg.RevokeExpires},
	}
	if w.revoked.max <= 0 {
		w.revoked.max = 50000
	}
	if w.revoked.ttl <= 0 {
		w.revoked.ttl = 3 * time.Hour
	}
	if w.concurrency <= 0 {
		w.concurrency = 4 * runtime.GOMAXPROCS(0)
	}
	if w.cfg.MaxAbandoned == 0 {
		w.cfg.MaxAbandoned = w.concurrency
	}
	switch m := cfg.PrefetchMultiplier; {
	case m < 0:
		w.prefetch = 0
	case m == 0:
		w.prefetch = w.concurrency * 4
	default:
		w.prefetch = w.concurrency * m
	}
	w.jobs = make(chan *job)
	w.finishQ = make(chan finishJob)
	w.eta = newETAHeld(w)
	return w, nil
}

// Shutdown stops the worker as http.Server.Shutdown stops a server: it
// begins a warm shutdown (consuming stops, held and prefetched messages go
// back to the broker, running tasks finish) and waits for Run to return.
// If ctx ends first, or Config.ShutdownTimeout does, the shutdown turns
// cold as Kill does (the soft phase, if configured, then running tasks
// are interrupted: see Config.RejectOnWorkerLost), Shutdown waits for Run
// to return and reports ctx's error. A worker that never ran is closed:
// its Run returns ErrWorkerClosed.
func (w *Worker) Shutdown(ctx context.Context) error {
	if !w.life.RequestStop() {
		return nil
	}
	select {
	case <-w.life.Done():
		return nil
	case <-ctx.Done():
	}
	w.Kill()
	<-w.life.Done()
	return ctx.Err()
}

// Run consumes until ctx is done, then shuts down warmly: it stops
// consuming, returns held and prefetched messages to the broker, and waits
// up to ShutdownTimeout for running tasks (Kill cuts the wait short). It
// returns nil after a clean shutdown.
func (w *Worker) Run(ctx context.Context) error {
	if !w.life.Start() {
		return ErrWorkerClosed
	}
	defer w.life.Stop()
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	w.runMu.Lock()
	w.started = time.Now()
	w.runMu.Unlock()
	w.life.OnStop(stop)
	if w.cfg.RevokedStore != nil {
		ids, err := w.cfg.RevokedStore.Load(ctx)
		if err != nil {
			return fmt.Errorf("consumer: loading revoked ids: %w", err)
		}
		w.mergeRevoked(ids)
	}
	w.taskCtx, w.cancelTs = context.WithCancel(context.WithoutCancel(ctx))
	defer w.cancelTs()
	consumeCtx, stopConsuming := context.WithCancel(ctx)
	defer stopConsuming()
	deliveries, err := w.startConsuming(consumeCtx)
	if err != nil {
		return fmt.Errorf("consumer: consume: %w", err)
	}
	names := make([]string, len(w.cfg.Queues))
	for i, q := range w.cfg.Queues {
		names[i] = q.Name
	}
	w.consuming.Store(true)
	w.log.Info("worker ready", "hostname", w.cfg.Hostname, "queues", names,
		"concurrency", w.concurrency, "prefetch", w.prefetch, "tasks", w.mux.Names())

	// The finishers live as long as Run, so their stacks stay grown: a
	// goroutine per task grew a fresh stack through the result store's
	// deep calls every time (11% of the worker's CPU with Redis results).
	for range max(w.prefetch, w.concurrency) {
		w.finishing.Go(func() {
			for f := range w.finishQ {
				w.conclude(f.j, f.c)
				w.finished()
			}
		})
	}
	var pool sync.WaitGroup
	for range w.concurrency {
		pool.Add(1)
		go func() {
			defer pool.Done()
			for j := range w.jobs {
				w.execute(j)
			}
		}()
	}
	etaDone := make(chan struct{})
	go func() {
		defer close(etaDone)
		w.eta.run(ctx)
	}()

	go func() {
		select {
		case <-w.tooHung:
			stop()
		case <-ctx.Done():
		}
	}()
	w.dispatchLoop(ctx, deliveries)
	w.consuming.Store(false)

	// Warm shutdown: nothing new starts; held ETA tasks and anything still
	// buffered go back to the broker.
	stopConsuming()
	<-etaDone
	w.eta.requeueAll()
	for d := range deliveries { // drain what the transport had buffered
		w.requeue(d, "shutdown")
	}
	close(w.jobs)
	w.log.Info("warm shutdown: waiting for running tasks", "active", w.active.Load(), "timeout", w.cfg.ShutdownTimeout)
	done := make(chan struct{})
	go func() {
		pool.Wait()
		close(w.finishQ)
		w.finishing.Wait()
		close(done)
	}()
	timer := time.NewTimer(w.cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-done:
		w.log.Info("worker stopped", "processed", w.processed.Load())
		return w.runErr()
	case <-timer.C:
	case <-w.kill:
		if !w.softShutdown(done) {
			w.log.Info("worker stopped", "processed", w.processed.Load())
			return w.runErr()
		}
	}
	// Cold shutdown: cancel running handlers. What an interrupted task
	// leaves is Celery's WorkerLostError path (see workerLost); a handler
	// that ignores its context is given up on after a second, and the
	// broker redelivers its late-ack message once the connection closes.
	w.log.Warn("cold shutdown: cancelling running tasks", "active", w.active.Load())
	w.cold.Store(true)
	w.cancelTs()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	return w.runErr()
}

// softShutdown is Celery 5.5's soft shutdown: before a cold shutdown
// cancels anything, running tasks get SoftShutdownTimeout to finish. It
// reports whether tasks are still running, so the cold phase must follow.
func (w *Worker) softShutdown(done <-chan struct{}) (cold bool) {
	soft := w.cfg.SoftShutdownTimeout
	if soft <= 0 || (w.active.Load() == 0 && !w.cfg.SoftShutdownOnIdle) {
		return true
	}
	w.log.Warn(fmt.Sprintf("Initiating Soft Shutdown, terminating in %g seconds", soft.Seconds()), "active", w.active.Load())
	t := time.NewTimer(soft)
	defer t.Stop()
	select {
	case <-done:
		return false
	case <-t.C:
	case <-w.killNow:
	}
	return true
}

// ErrAbandonedLimit is returned by Run when more handlers than
// Config.MaxAbandoned kept running past their hard time limit.
var ErrAbandonedLimit = errors.New("consumer: too many handlers still running past their hard time limit; restart the worker")

func (w *Worker) runErr() error {
	select {
	case <-w.tooHung:
		return ErrAbandonedLimit
	default:
		return nil
	}
}

// Kill turns a warm shutdown into a cold one (the second SIGTERM, or
// Celery's SIGQUIT): after the soft phase, if one is configured, running
// handlers are cancelled. A second Kill ends the soft phase at once.
func (w *Worker) Kill() {
	switch w.kills.Add(1) {
	case 1:
		close(w.kill)
	case 2:
		close(w.killNow)
	}
}

// Stats are counters for inspect and metrics.
type Stats struct {
	Active, Processed, Abandoned int64
	// Reserved counts tasks received and waiting for a free slot (ETA
	// tasks not included: see HeldETA).
	Reserved int
	HeldETA  int
	Prefetch int
}

// Stats returns the worker's counters.
func (w *Worker) Stats() Stats {
	w.eta.mu.Lock()
	held, raised := len(w.eta.h), w.eta.raised
	w.eta.mu.Unlock()
	// The prefetch in force: the raise for held ETA tasks stops at ETATaskLimit.
	reserved := 0
	w.track.mu.Lock()
	for _, t := range w.track.reqs {
		if t.state == StateReserved {
			reserved++
		}
	}
	w.track.mu.Unlock()
	return Stats{
		Active: w.active.Load(), Processed: w.processed.Load(), Abandoned: w.abandoned.Load(),
		Reserved: reserved, HeldETA: held, Prefetch: w.prefetch + raised,
	}
}

// Consuming reports whether the worker is taking messages: Run has
// started consuming and is not shutting down. Health checks use it.
func (w *Worker) Consuming() bool { return w.consuming.Load() }

// Concurrency returns the number of tasks run at once.
func (w *Worker) Concurrency() int { return w.concurrency }
