// Package worker is the gocelery worker program as a library: since tasks
// are Go code, each team builds its own worker binary, and this package
// gives it Celery's command line. A complete worker:
//
//	package main
//
//	import (
//		"context"
//
//		"github.com/gocelery/gocelery/consumer"
//		"github.com/gocelery/gocelery/worker"
//	)
//
//	func main() {
//		mux := consumer.NewMux()
//		mux.HandleFunc("proj.add", func(ctx context.Context, r *consumer.Request) (any, error) {
//			return r.Args[0].(int64) + r.Args[1].(int64), nil
//		})
//		worker.Main(mux)
//	}
//
// Run it as: ./myworker --broker amqp://guest:guest@localhost:5672// --result-backend redis://localhost:6379/0 -Q proj
// (or --broker redis://localhost:6379/0 for Redis as broker).
//
// This package is the program around the engine: flags and the config
// file, dialing the broker and backend, events, remote control, metrics
// and signals. The engine itself, which consumes and runs tasks, is
// consumer.Worker; a service that has a main of its own embeds that
// directly (see its Shutdown example) and needs nothing from here.
package worker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gocelery/gocelery/broker/dial"
	"github.com/gocelery/gocelery/config"
	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/control"
	"github.com/gocelery/gocelery/events"
	"github.com/gocelery/gocelery/internal/redisurl"
	"github.com/gocelery/gocelery/metrics"
	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/results"
)

// Options are the worker's settings, from flags and environment.
type Options struct {
	BrokerURL        string
	ResultBackendURL string
	// ResultPersistent is result_persistent: rpc:// states are sent as
	// persistent messages.
	ResultPersistent bool
	Queues           []string
	MaxPriority      int
	Config           consumer.Config
	LogLevel         slog.Level
	CPUProfile       string
	// TaskEvents sends task-* events (-E); WithoutHeartbeat sends no
	// events at all; HeartbeatInterval is the worker-heartbeat period.
	TaskEvents        bool
	WithoutHeartbeat  bool
	HeartbeatInterval time.Duration
	// MetricsAddr serves /metrics and /healthz when set.
	MetricsAddr string
	// StateDB keeps revoked task ids across restarts (Celery's --statedb).
	StateDB string
	// VisibilityTimeout and RestoreInterval are kombu's Redis
	// visibility_timeout and unacked_restore_interval.
	VisibilityTimeout time.Duration
	RestoreInterval   time.Duration
	// BrokerTransportOptions and ResultBackendTransportOptions are
	// Celery's broker_transport_options and
	// result_backend_transport_options (master_name, sentinel_kwargs,
	// socket_timeout, ... for sentinel:// URLs), from repeated
	// --broker-transport-option / --result-backend-transport-option.
	BrokerTransportOptions        map[string]any
	ResultBackendTransportOptions map[string]any
	// BrokerFailoverStrategy is Celery's broker_failover_strategy for a
	// broker_url list (amqp://h1//;amqp://h2//): round-robin (default)
	// or shuffle.
	BrokerFailoverStrategy string
	// Topology is the config file's queue settings (task_queues,
	// task_default_queue_type, ...), nil without --config; ResultExpires
	// is its result_expires; ConfigWarnings name the settings it has that
	// gocelery ignores. See config.Topology.
	Topology       *config.Topology
	ResultExpires  time.Duration
	ConfigWarnings []string
}

// TransportOptionsFlag is dial.TransportOptionsFlag: a repeatable KEY=VALUE flag
// for broker_transport_options.
func TransportOptionsFlag(m map[string]any) flag.Value { return dial.TransportOptionsFlag(m) }

// ParseFlags reads Celery-like flags; environment variables
// CELERY_BROKER_URL and CELERY_RESULT_BACKEND give the defaults, as for
// Celery.
func ParseFlags(name string, args []string, stderr io.Writer) (*Options, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &Options{}
	envOr := func(k, def string) string {
		if v := os.Getenv(k); v != "" {
			return v
		}
		return def
	}
	fs.StringVar(&o.BrokerURL, "broker", envOr("CELERY_BROKER_URL", "amqp://guest:guest@localhost:5672//"), "broker URL (amqp://, pyamqp://, redis://, rediss://, sentinel://; a failover list amqp://h1//;amqp://h2//; env CELERY_BROKER_URL)")
	fs.StringVar(&o.BrokerURL, "b", o.BrokerURL, "shorthand for --broker")
	fs.StringVar(&o.ResultBackendURL, "result-backend", envOr("CELERY_RESULT_BACKEND", ""), "result backend URL (redis://, rediss://, rpc://, sentinel://; env CELERY_RESULT_BACKEND); empty stores nothing")
	fs.BoolVar(&o.ResultPersistent, "result-persistent", false, "rpc:// results: send states as persistent messages (result_persistent)")
	if o.BrokerTransportOptions == nil {
		o.BrokerTransportOptions = make(map[string]any)
	}
	if o.ResultBackendTransportOptions == nil {
		o.ResultBackendTransportOptions = make(map[string]any)
	}
	fs.Var(TransportOptionsFlag(o.BrokerTransportOptions), "broker-transport-option", "KEY=VALUE of broker_transport_options, repeatable; VALUE may be JSON (master_name=mymaster, sentinel_kwargs={\"password\":\"x\"})")
	fs.Var(TransportOptionsFlag(o.ResultBackendTransportOptions), "result-backend-transport-option", "KEY=VALUE of result_backend_transport_options, repeatable; VALUE may be JSON")
	fs.StringVar(&o.BrokerFailoverStrategy, "broker-failover-strategy", "round-robin", "order in which a broker URL list is tried: round-robin or shuffle (broker_failover_strategy)")
	var queues string
	fs.StringVar(&queues, "queues", "", "comma-separated queues to consume (required; Celery's -Q)")
	fs.StringVar(&queues, "Q", "", "shorthand for --queues")
	c := &o.Config
	fs.IntVar(&c.Concurrency, "concurrency", 0, "tasks run at once (default 4 x CPUs)")
	fs.IntVar(&c.Concurrency, "c", 0, "shorthand for --concurrency")
	fs.IntVar(&c.PrefetchMultiplier, "prefetch-multiplier", 4, "prefetch = concurrency x this (worker_prefetch_multiplier)")
	fs.BoolVar(&c.AcksLate, "acks-late", false, "ack after the task instead of at start (task_acks_late)")
	fs.BoolVar(&c.RejectOnWorkerLost, "reject-on-worker-lost", false, "with --acks-late, requeue tasks of a worker that died (task_reject_on_worker_lost)")
	fs.BoolVar(&c.TrackStarted, "track-started", false, "store STARTED when a task begins (task_track_started)")
	fs.BoolVar(&c.ResultExtended, "result-extended", false, "store name, args, kwargs, worker, retries, queue with results (result_extended)")
	fs.StringVar(&c.Hostname, "hostname", "", "node name (default gocelery@<host>)")
	fs.StringVar(&c.Hostname, "n", "", "shorthand for --hostname")
	fs.IntVar(&c.ETATaskLimit, "eta-task-limit", 10000, "most ETA tasks held in memory (worker_eta_task_limit)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "warm shutdown: wait this long for running tasks")
	fs.Func("soft-shutdown-timeout", "cold shutdown: first wait this many seconds for running tasks, then cancel them (worker_soft_shutdown_timeout; 0 = off)", func(v string) error {
		sec, err := strconv.ParseFloat(v, 64)
		if err != nil || sec < 0 {
			return fmt.Errorf("want seconds >= 0, got %q", v)
		}
		c.SoftShutdownTimeout = time.Duration(sec * float64(time.Second))
		return nil
	})
	fs.BoolVar(&c.SoftShutdownOnIdle, "enable-soft-shutdown-on-idle", false, "run the soft shutdown phase even when no task is running (worker_enable_soft_shutdown_on_idle)")
	fs.IntVar(&c.MaxAbandoned, "max-abandoned", 0, "handlers still running past their hard time limit before the worker exits non-zero for a restart (default: the concurrency; -1 = no cap)")
	fs.StringVar(&c.DefaultQueue, "default-queue", "celery", "queue for workflow steps (chain, callbacks, chord body) that name none (task_default_queue)")
	fs.StringVar(&c.DeadLetterExchange, "dead-letter-exchange", "", "exchange for dead-lettered messages (default: queue <queue>.<reason>)")
	fs.IntVar(&o.MaxPriority, "max-priority", 0, "declare queues with x-max-priority (task_queue_max_priority)")
	unknown := fs.String("unknown-tasks", "dead-letter", "unregistered task names: dead-letter (store FAILURE, move to <queue>.unregistered) or requeue")
	fs.DurationVar(&o.VisibilityTimeout, "visibility-timeout", 0, "Redis broker: unacked messages of a dead worker come back after this (kombu's visibility_timeout; 0 means broker_transport_options visibility_timeout, else 1h); a live worker keeps its own from expiring")
	fs.DurationVar(&o.RestoreInterval, "restore-interval", 10*time.Second, "Redis broker: how often to bring back unacked messages past the visibility timeout (kombu's unacked_restore_interval)")
	fs.BoolVar(&o.TaskEvents, "events", false, "send task events for monitors such as Flower (worker_send_task_events)")
	fs.BoolVar(&o.TaskEvents, "E", false, "shorthand for --events")
	fs.BoolVar(&o.WithoutHeartbeat, "without-heartbeat", false, "send no events at all (no worker-online/heartbeat/offline)")
	fs.DurationVar(&o.HeartbeatInterval, "heartbeat-interval", 2*time.Second, "worker-heartbeat event period")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", "", "serve Prometheus /metrics and /healthz on this address (e.g. :9808)")
	fs.StringVar(&o.StateDB, "statedb", "", "file keeping revoked task ids across restarts (Celery's --statedb; not Python's shelve format)")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile (pprof) to this file until shutdown")
	level := fs.String("loglevel", "info", "debug, info, warning, error")
	fs.StringVar(level, "l", "info", "shorthand for --loglevel")
	configPath := fs.String("config", "", ConfigFlagUsage)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := o.applyConfig(fs, *configPath); err != nil {
		return nil, err
	}
	for _, q := range strings.Split(queues, ",") {
		if q = strings.TrimSpace(q); q != "" {
			o.Queues = append(o.Queues, q)
		}
	}
	if len(o.Queues) == 0 && o.Topology == nil {
		return nil, errors.New("name the queues to consume with -Q (the worker never consumes a queue it was not told to)")
	}
	switch o.BrokerFailoverStrategy {
	case "round-robin", "shuffle":
	default:
		return nil, fmt.Errorf("--broker-failover-strategy: want round-robin or shuffle, got %q", o.BrokerFailoverStrategy)
	}
	switch *unknown {
	case "dead-letter":
		c.Unknown = consumer.DeadLetter
	case "requeue":
		c.Unknown = consumer.Requeue
	default:
		return nil, fmt.Errorf("--unknown-tasks: want dead-letter or requeue, got %q", *unknown)
	}
	switch strings.ToLower(*level) {
	case "debug":
		o.LogLevel = slog.LevelDebug
	case "info":
		o.LogLevel = slog.LevelInfo
	case "warn", "warning":
		o.LogLevel = slog.LevelWarn
	case "error", "critical":
		o.LogLevel = slog.LevelError
	default:
		return nil, fmt.Errorf("--loglevel: unknown level %q", *level)
	}
	return o, nil
}

// Main runs the worker program for mux with os.Args and exits.
func Main(mux *consumer.Mux) {
	err := Run(context.Background(), os.Args[1:], mux, os.Stderr, nil)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

// Setup lets a program add to the worker once its broker and backend are
// open (for example, tasks that need the result backend's Redis client).
type Setup func(mux *consumer.Mux, backend *results.Redis)

// Run parses args, connects, and runs the worker until SIGINT/SIGTERM
// (warm shutdown) or a second signal (cold shutdown).
func Run(ctx context.Context, args []string, mux *consumer.Mux, stderr io.Writer, setup Setup) error {
	o, err := ParseFlags("worker", args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.LogLevel}))
	if o.CPUProfile != "" {
		f, err := os.Create(o.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	o.Config.Logger = log
	for _, w := range o.ConfigWarnings {
		log.Warn("config: " + w)
	}
	plan, err := o.planTopology()
	if err != nil {
		return err
	}
	o.Config.Queues = plan.consumed
	if plan.staticQoS {
		log.Info("Global QoS is disabled. Prefetch count is now static.") // Celery's words, for quorum queues
		o.Config.StaticPrefetch = true
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()

	b, closeBroker, err := openBroker(runCtx, o, !plan.staticQoS, log)
	if err != nil {
		return err
	}
	defer closeBroker()
	if err := plan.prepare(runCtx, o, b, log); err != nil {
		return err
	}
	var backend consumer.Backend
	var rb *results.Redis
	if isRPC(o.ResultBackendURL) {
		backend = results.NewRPC(b, results.RPCConfig{Persistent: o.ResultPersistent})
	} else if o.ResultBackendURL != "" {
		if rb, err = results.OpenRedis(o.ResultBackendURL, results.Config{TransportOptions: o.ResultBackendTransportOptions, Expires: o.ResultExpires}); err != nil {
			return fmt.Errorf("result backend: %w", err)
		}
		defer rb.Close()
		backend = rb
	}
	if setup != nil {
		setup(mux, rb)
	}
	if o.Config.Hostname == "" {
		host, _ := os.Hostname()
		o.Config.Hostname = "gocelery@" + host // as consumer.New would; the workflow and events need it too
	}
	clock := &events.Clock{}
	var dispatcher *events.Dispatcher
	if !o.WithoutHeartbeat {
		kind := "topic"
		if strings.HasPrefix(o.BrokerURL, "redis") || redisurl.IsSentinel(o.BrokerURL) {
			kind = "fanout" // Celery declares the event exchange as fanout on Redis
		}
		dispatcher = events.New(b, events.Config{
			Hostname: o.Config.Hostname, ExchangeKind: kind, HeartbeatInterval: o.HeartbeatInterval,
			TaskEvents: o.TaskEvents, Clock: clock, Logger: log,
		})
		o.Config.Observers = append(o.Config.Observers, dispatcher)
	}
	var collector *metrics.Collector
	if o.MetricsAddr != "" {
		collector = metrics.NewCollector(metrics.Config{Tasks: mux.Names(), Logger: log})
		o.Config.Observers = append(o.Config.Observers, collector)
	}
	if o.StateDB != "" {
		o.Config.RevokedStore = &fileRevokedStore{path: o.StateDB}
	}
	if o.Config.Workflow == nil {
		o.Config.Workflow = producer.NewWorkerWorkflow(b, backend,
			producer.Config{DefaultQueue: o.Config.DefaultQueue, Origin: o.Config.Hostname, Queues: plan.declared}, log)
	}
	w, err := consumer.New(b, backend, mux, o.Config)
	if err != nil {
		return err
	}
	// The side components outlive the worker's Run a little: events say
	// worker-offline after the last task, and control stops last.
	sideCtx, stopSide := context.WithCancel(context.WithoutCancel(ctx))
	var side sync.WaitGroup
	defer func() {
		stopSide()
		side.Wait()
	}()
	start := func(name string, run func(context.Context) error) {
		side.Add(1)
		go func() {
			defer side.Done()
			if err := run(sideCtx); err != nil {
				log.Error(name+" stopped", "err", err)
			}
		}()
	}
	if dispatcher != nil {
		dispatcher.SetStats(func() (int64, int64) { st := w.Stats(); return st.Active, st.Processed })
		start("events", dispatcher.Run)
	}
	nodeCfg := control.NodeConfig{Clock: clock, Broker: brokerInfo(o.BrokerURL), Logger: log}
	if o.Topology != nil {
		nodeCfg.QueueNamed = o.Topology.Listed
	}
	if dispatcher != nil {
		nodeCfg.Events = dispatcher
	}
	// Remote control gets a connection of its own: on AMQP the prefetch is
	// one value for every consuming channel of a connection, and the
	// pidbox consumer must not change the task consumer's.
	cb, closeControl, err := openBroker(runCtx, o, true, log)
	if err != nil {
		return fmt.Errorf("remote control: %w", err)
	}
	defer closeControl()
	start("remote control", control.NewNode(cb, w.Remote(), nodeCfg).Run)
	if collector != nil {
		collector.Watch(w, b)
		ln, err := net.Listen("tcp", o.MetricsAddr) // a bad address fails startup
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		srv := metrics.NewServer(o.MetricsAddr, collector.Handler(), log)
		start("metrics", func(ctx context.Context) error { return srv.Serve(ctx, ln) })
	}
	// Signals drive Shutdown as a service's own stop would: the first
	// begins it warm, the second ends the warm phase (cold, after the soft
	// phase if configured), the third skips what is left of the soft phase.
	go func() {
		select {
		case sig := <-sigs:
			log.Info("warm shutdown: finishing running tasks (signal again for cold shutdown)", "signal", sig.String())
		case <-runCtx.Done():
			return
		}
		warm, endWarm := context.WithCancel(context.Background())
		defer endWarm()
		go func() {
			for n := 0; ; n++ {
				select {
				case sig := <-sigs:
					if n == 0 {
						log.Warn("cold shutdown (signal again to skip the soft shutdown phase)", "signal", sig.String())
						endWarm()
					} else {
						log.Warn("cancelling running tasks now", "signal", sig.String())
						w.Kill()
					}
				case <-runCtx.Done():
					return
				}
			}
		}()
		_ = w.Shutdown(warm)
	}()
	return w.Run(runCtx)
}

// Broker is what the worker program needs from a transport: consuming
// and publishing tasks, events and remote control, and health.
type Broker = dial.Transport

// brokerInfo describes the broker URL for the stats command.
func brokerInfo(rawURL string) control.BrokerInfo {
	first, _, _ := strings.Cut(rawURL, ";") // a failover list: the first URL
	u, err := url.Parse(first)
	if err != nil {
		return control.BrokerInfo{}
	}
	info := control.BrokerInfo{Transport: u.Scheme, Hostname: u.Hostname(), VHost: strings.TrimPrefix(u.Path, "/")}
	if info.Transport == "pyamqp" || info.Transport == "amqps" {
		info.Transport = "amqp"
	}
	if info.Transport == "rediss" {
		info.Transport = "redis"
	}
	info.Port, _ = strconv.Atoi(u.Port())
	return info
}

// openBroker dials the broker; globalQoS false is per-consumer QoS with a
// static prefetch, for quorum queues.
func openBroker(ctx context.Context, o *Options, globalQoS bool, log *slog.Logger) (Broker, func(), error) {
	b, err := DialBroker(ctx, o.BrokerURL, DialConfig{Logger: log, GlobalQoS: globalQoS, StaticPrefetch: !globalQoS,
		VisibilityTimeout: o.VisibilityTimeout, RestoreInterval: o.RestoreInterval,
		TransportOptions: o.BrokerTransportOptions, FailoverStrategy: o.BrokerFailoverStrategy})
	if err != nil {
		return nil, nil, err
	}
	return b, func() { b.Close() }, nil
}

// DialConfig is dial.Config: the transport settings a URL does not carry.
type DialConfig = dial.Config

// DialBroker opens the transport for a Celery broker URL; it is
// dial.Broker, kept for callers of this package.
func DialBroker(ctx context.Context, url string, o DialConfig) (Broker, error) {
	return dial.Broker(ctx, url, o)
}
