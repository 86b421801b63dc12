package worker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strings"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/broker/amqp"
	"github.com/gocelery/gocelery/config"
)

// ConfigFlagUsage is the help text of --config, shared by the programs
// that read a config file.
const ConfigFlagUsage = "YAML file of Celery settings by Celery's names (broker_url, task_queues, task_default_queue_type, ...); flags and CELERY_BROKER_URL / CELERY_RESULT_BACKEND win over it"

// applyConfig loads the file at path (none when "") into o, under every
// flag set on the command line (fs) and, as in Celery, under the
// CELERY_BROKER_URL and CELERY_RESULT_BACKEND environment variables.
func (o *Options) applyConfig(fs *flag.FlagSet, path string) error {
	if path == "" {
		return nil
	}
	f, err := config.Load(path)
	if err != nil {
		return err
	}
	o.ConfigWarnings = f.Warnings
	set := make(map[string]bool)
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	// use reports whether key is in the file and none of flags was given.
	use := func(key string, flags ...string) bool {
		if !f.Has(key) {
			return false
		}
		for _, fl := range flags {
			if set[fl] {
				return false
			}
		}
		return true
	}
	if use("broker_url", "broker", "b") && os.Getenv("CELERY_BROKER_URL") == "" {
		o.BrokerURL = f.BrokerURL
	}
	if use("result_backend", "result-backend") && os.Getenv("CELERY_RESULT_BACKEND") == "" {
		o.ResultBackendURL = f.ResultBackend
	}
	if use("broker_failover_strategy", "broker-failover-strategy") {
		o.BrokerFailoverStrategy = f.BrokerFailoverStrategy
	}
	// Transport options merge: a repeated flag overrides one key.
	if f.Has("broker_transport_options") {
		o.BrokerTransportOptions = mergeOptions(f.BrokerTransportOptions, o.BrokerTransportOptions)
	}
	if f.Has("result_backend_transport_options") {
		o.ResultBackendTransportOptions = mergeOptions(f.ResultBackendTransportOptions, o.ResultBackendTransportOptions)
	}
	if use("result_expires") {
		o.ResultExpires = f.ResultExpires
	}
	c := &o.Config
	if use("worker_concurrency", "concurrency", "c") {
		c.Concurrency = f.WorkerConcurrency
	}
	if use("worker_prefetch_multiplier", "prefetch-multiplier") {
		c.PrefetchMultiplier = f.WorkerPrefetchMultiplier
		if c.PrefetchMultiplier == 0 {
			c.PrefetchMultiplier = -1 // Celery's 0: no limit
		}
	}
	if use("worker_eta_task_limit", "eta-task-limit") {
		c.ETATaskLimit = f.WorkerEtaTaskLimit
	}
	if use("task_acks_late", "acks-late") {
		c.AcksLate = f.TaskAcksLate
	}
	if use("task_acks_on_failure_or_timeout") {
		v := f.TaskAcksOnFailureOrTimeout
		c.AcksOnFailure = &v
	}
	if use("task_reject_on_worker_lost", "reject-on-worker-lost") {
		c.RejectOnWorkerLost = f.TaskRejectOnWorkerLost
	}
	if use("task_track_started", "track-started") {
		c.TrackStarted = f.TaskTrackStarted
	}
	if use("result_extended", "result-extended") {
		c.ResultExtended = f.ResultExtended
	}
	if use("worker_send_task_events", "events", "E") {
		o.TaskEvents = f.WorkerSendTaskEvents
	}
	if use("worker_state_db", "statedb") {
		o.StateDB = f.WorkerStateDB
	}
	t := f.Topology
	if set["default-queue"] {
		t.DefaultQueue = c.DefaultQueue
	} else {
		c.DefaultQueue = t.DefaultQueue
	}
	if set["max-priority"] && o.MaxPriority > 0 {
		t.MaxPriority = &o.MaxPriority
	}
	o.Topology = &t
	return nil
}

func mergeOptions(file, flags map[string]any) map[string]any {
	out := maps.Clone(file)
	if out == nil {
		out = make(map[string]any)
	}
	maps.Copy(out, flags)
	return out
}

// isAMQP reports whether url names a RabbitMQ broker (or a list of them).
func isAMQP(url string) bool {
	scheme, _, _ := strings.Cut(url, "://")
	return scheme == "amqp" || scheme == "amqps" || scheme == "pyamqp"
}

// topologyPlan is what the config file's queues mean for this run.
type topologyPlan struct {
	consumed []broker.Queue // what -Q (or task_queues) selects
	declared []broker.Queue // app.amqp.queues of a Celery worker so configured
	// quorum: a quorum queue among declared on RabbitMQ; Celery's worker
	// then sets up native delayed delivery.
	quorum bool
	// staticQoS: quorum and worker_detect_quorum_queues, for per-consumer
	// QoS with a fixed prefetch.
	staticQoS bool
}

// planTopology resolves the worker's queues, from the config file's
// Topology when there is one, else as Celery's missing queues of -Q.
func (o *Options) planTopology() (*topologyPlan, error) {
	if o.Topology == nil {
		p := &topologyPlan{}
		for _, q := range o.Queues {
			p.consumed = append(p.consumed, broker.Queue{Name: q, MaxPriority: o.MaxPriority})
		}
		p.declared = p.consumed
		return p, nil
	}
	consumed, err := o.Topology.Consumed(o.Queues)
	if err != nil {
		return nil, err
	}
	declared, err := o.Topology.Declared(o.Queues)
	if err != nil {
		return nil, err
	}
	p := &topologyPlan{consumed: consumed, declared: declared}
	p.quorum = isAMQP(o.BrokerURL) && config.UsesQuorum(declared)
	p.staticQoS = p.quorum && o.Topology.DetectQuorumQueues
	return p, nil
}

// prepare declares the consumed queues (a declaration that differs from
// the broker's stops the worker with one line saying what to set), then,
// on quorum queues, sets up native delayed delivery as Celery's worker
// does and routes retries through it.
func (p *topologyPlan) prepare(ctx context.Context, o *Options, b Broker, log *slog.Logger) error {
	if err := b.Declare(ctx, p.consumed...); err != nil {
		return mismatchHint(err, o.Topology)
	}
	if !p.quorum {
		return nil
	}
	ab, ok := b.(*amqp.Broker)
	if !ok {
		return nil
	}
	skipped, err := ab.SetupNativeDelayedDelivery(ctx, o.Topology.DelayedDeliveryQueueType, p.consumed)
	if err != nil {
		return fmt.Errorf("native delayed delivery: %w", mismatchHint(err, o.Topology))
	}
	for _, q := range skipped {
		ex, _ := q.PrimaryExchange()
		// Celery's warning, word for word.
		log.Warn(fmt.Sprintf("Exchange %s is a direct exchange and native delayed delivery do not support direct exchanges.\n"+
			"ETA tasks published to this exchange will block the worker until the ETA arrives.", ex.Name), "queue", q.Name)
	}
	delayed := make(map[string]broker.Queue)
	for _, q := range p.consumed {
		if ex, _ := q.PrimaryExchange(); ex.Kind != "direct" && ex.Name != "" {
			delayed[q.Name] = q
		}
	}
	o.Config.RetryRoute = func(d *broker.Delivery, eta time.Time) (string, string) {
		return retryRoute(delayed, d, time.Until(eta))
	}
	return nil
}

// retryRoute sends a retry whose countdown is at least a second through
// native delayed delivery, when its queue's exchange can take it back; it
// keeps the delivery's routing key (without an earlier delay prefix), or
// the queue's when the task came through the default exchange.
func retryRoute(delayed map[string]broker.Queue, d *broker.Delivery, countdown time.Duration) (string, string) {
	q, ok := delayed[d.Queue]
	if !ok || countdown < time.Second {
		return d.Exchange, d.RoutingKey
	}
	countdown = broker.RoundDelay(countdown)
	rk := broker.StripDelay(d.RoutingKey)
	if d.Exchange == "" {
		_, rk = q.PrimaryExchange()
	}
	key, err := broker.DelayedRoutingKey(countdown, rk)
	if err != nil {
		return d.Exchange, d.RoutingKey
	}
	return broker.DelayedEntryExchange, key
}

// mismatchHint turns a declaration RabbitMQ refused into one line naming
// the queue, the argument, both values and the setting that decides it.
func mismatchHint(err error, t *config.Topology) error {
	m := (*amqp.MismatchError)(nil)
	if !errors.As(err, &m) {
		return err
	}
	return fmt.Errorf("%s %q exists on the broker with %s=%s but this worker declares %s=%s: %s",
		m.Kind, m.Name, m.Arg, plainValue(m.Current), m.Arg, plainValue(m.Declared), settingFor(m, t))
}

// plainValue shortens RabbitMQ's "the value 'quorum' of type 'longstr'"
// to 'quorum', and "none" to (unset).
func plainValue(s string) string {
	if v, ok := strings.CutPrefix(s, "the value "); ok {
		if i := strings.LastIndex(v, " of type "); i >= 0 {
			v = v[:i]
		}
		return v
	}
	if s == "none" {
		return "(unset)"
	}
	return s
}

// settingFor names the config key that sets the refused argument.
func settingFor(m *amqp.MismatchError, t *config.Topology) string {
	if strings.HasPrefix(m.Name, "celery_delayed_") {
		return "set broker_native_delayed_delivery_queue_type to what the Python app uses"
	}
	listed := false
	if t != nil {
		for _, q := range t.Queues {
			if q.Name == m.Name {
				listed = true
			}
		}
	}
	if m.Kind == "exchange" {
		switch m.Arg {
		case "type":
			return "set exchange_type of its task_queues entries (or task_default_exchange_type) as the Python app declares it"
		case "durable":
			return "set exchange_durable of its task_queues entries as the Python app declares it"
		case "auto_delete":
			return "set exchange_auto_delete of its task_queues entries as the Python app declares it"
		}
		return "declare the exchange in task_queues as the Python app does"
	}
	entry := fmt.Sprintf("in the task_queues entry %q", m.Name)
	if !listed {
		entry = fmt.Sprintf("list %q in task_queues as the Python app declares it", m.Name)
	}
	switch m.Arg {
	case "x-queue-type":
		if listed {
			return "set queue_arguments x-queue-type " + entry
		}
		return entry + ", or set task_default_queue_type / task_create_missing_queue_type"
	case "x-max-priority":
		if listed {
			return "set max_priority (or queue_arguments x-max-priority) " + entry + ", or task_queue_max_priority"
		}
		return entry + ", or set task_queue_max_priority"
	case "durable", "auto_delete", "exclusive":
		if listed {
			return "set " + m.Arg + " " + entry
		}
		return entry + " with " + m.Arg
	}
	if listed {
		return "set queue_arguments " + m.Arg + " " + entry
	}
	return entry + " with queue_arguments " + m.Arg
}
