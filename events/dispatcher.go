package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/internal/lifecycle"
	"github.com/gocelery/gocelery/protocol"
)

// Publisher is what the dispatcher needs from a transport; broker/amqp and
// broker/redis provide it.
type Publisher interface {
	DeclareExchange(ctx context.Context, ex broker.Exchange) error
	Publish(ctx context.Context, p broker.Publishing) error
}

// Software identity sent in worker events; monitors only display it.
const (
	SWIdent = "gocelery"
	SWVer   = "0.1.0"
)

// Config configures a Dispatcher.
type Config struct {
	// Hostname is the worker's node name ("gocelery@host").
	Hostname string
	// Exchange is Celery's event_exchange; "" means "celeryev".
	Exchange string
	// ExchangeKind is "topic" on AMQP and "fanout" on Redis, where Celery
	// declares the event exchange as fanout (PUB/SUB); "" means topic.
	ExchangeKind string
	// HeartbeatInterval is the worker-heartbeat period (--heartbeat-interval);
	// 0 means Celery's 2 s.
	HeartbeatInterval time.Duration
	// TaskEvents sends task-* events (celery worker -E); the enable_events
	// and disable_events commands change it at run time.
	TaskEvents bool
	// FlushInterval bounds how long a task event waits in the batch;
	// 0 means 100 ms. A batch is also sent when it reaches 24 events.
	FlushInterval time.Duration
	// Clock is the worker's Lamport clock, shared with remote control;
	// nil means one of its own.
	Clock *Clock
	// Stats returns the worker's active and processed counts for worker
	// events; nil sends zeros.
	Stats  func() (active, processed int64)
	Logger *slog.Logger
}

// bufferLimit is Celery's: a batch is sent once it holds this many.
const bufferLimit = 24

// maxBatch bounds the events in one task.multi message.
const maxBatch = 256

// maxBuffered bounds the events kept while the broker is slow or down:
// monitoring must never take the worker's memory.
const maxBuffered = 10000

// ErrDispatcherClosed is returned by Run on a Dispatcher that has run already: each runs once.
var ErrDispatcherClosed = errors.New("events: already ran")

// Dispatcher sends a worker's events: it is the background component that
// announces the worker (online, heartbeat, offline) and, as a
// consumer.Observer, batches task events. Create it with New, run it with
// Run.
type Dispatcher struct {
	life  lifecycle.Guard
	p     Publisher
	cfg   Config
	clock *Clock
	log   *slog.Logger
	pid   int

	taskEvents atomic.Bool

	mu      sync.Mutex
	buf     []taskRecord
	dropped int64
	// Reused by flush, which only its one goroutine runs: spare is the
	// previous buffer, body the encoding buffer.
	spare []taskRecord
	body  []byte
	kick  chan struct{}
}

// New returns a dispatcher publishing on p.
func New(p Publisher, cfg Config) *Dispatcher {
	if cfg.Exchange == "" {
		cfg.Exchange = "celeryev"
	}
	if cfg.ExchangeKind == "" {
		cfg.ExchangeKind = "topic"
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 2 * time.Second
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Dispatcher{p: p, cfg: cfg, clock: cfg.Clock, log: cfg.Logger, pid: os.Getpid(), kick: make(chan struct{}, 1)}
	if d.clock == nil {
		d.clock = &Clock{}
	}
	d.taskEvents.Store(cfg.TaskEvents)
	return d
}

// SetStats sets where worker events read the active and processed
// counts; call it before Run.
func (d *Dispatcher) SetStats(f func() (active, processed int64)) { d.cfg.Stats = f }

// Clock returns the dispatcher's Lamport clock.
func (d *Dispatcher) Clock() *Clock { return d.clock }

// Observing reports whether task events are on (consumer.Quiet): while
// they are off the worker does not build them.
func (d *Dispatcher) Observing() bool { return d.taskEvents.Load() }

// TaskEvents reports whether task events are being sent.
func (d *Dispatcher) TaskEvents() bool { return d.taskEvents.Load() }

// SetTaskEvents turns task events on or off (enable_events,
// disable_events) and reports whether that changed anything.
func (d *Dispatcher) SetTaskEvents(on bool) (changed bool) {
	return d.taskEvents.Swap(on) != on
}

// Run announces the worker (worker-online), sends a worker-heartbeat every
// HeartbeatInterval and task event batches as they fill, until ctx ends;
// then it sends what is left and worker-offline.
func (d *Dispatcher) Run(ctx context.Context) error {
	if !d.life.Start() {
		return ErrDispatcherClosed
	}
	defer d.life.Stop()
	ex := broker.Exchange{Name: d.cfg.Exchange, Kind: d.cfg.ExchangeKind}
	if err := d.p.DeclareExchange(ctx, ex); err != nil {
		return fmt.Errorf("events: declare exchange %q: %w", ex.Name, err)
	}
	d.sendWorker(ctx, "worker-online", d.workerFields(d.cfg.HeartbeatInterval))
	heartbeat := time.NewTicker(d.cfg.HeartbeatInterval)
	defer heartbeat.Stop()
	flush := time.NewTicker(d.cfg.FlushInterval)
	defer flush.Stop()
	for {
		select {
		case <-ctx.Done():
			// The worker is going away: a short grace for the last words.
			done, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			d.flush(done)
			d.sendWorker(done, "worker-offline", d.workerFields(d.cfg.HeartbeatInterval))
			cancel()
			return nil
		case <-heartbeat.C:
			d.sendWorker(ctx, "worker-heartbeat", d.workerFields(d.cfg.HeartbeatInterval))
		case <-flush.C:
			d.flush(ctx)
		case <-d.kick:
			d.flush(ctx)
		}
	}
}

// Heartbeat sends an extra worker-heartbeat, as the heartbeat command
// does (freq 5, software fields only).
func (d *Dispatcher) Heartbeat(ctx context.Context) {
	d.sendWorker(ctx, "worker-heartbeat", []Field{
		{"freq", 5.0}, {"sw_ident", SWIdent}, {"sw_ver", SWVer}, {"sw_sys", swSys()},
	})
}

func (d *Dispatcher) workerFields(freq time.Duration) []Field {
	var active, processed int64
	if d.cfg.Stats != nil {
		active, processed = d.cfg.Stats()
	}
	return []Field{
		{"freq", freq.Seconds()}, {"active", active}, {"processed", processed}, {"loadavg", loadavg()},
		{"sw_ident", SWIdent}, {"sw_ver", SWVer}, {"sw_sys", swSys()},
	}
}

func (d *Dispatcher) sendWorker(ctx context.Context, typ string, fields []Field) {
	e := Event{Type: typ, Fields: fields, Time: time.Now()}
	body := appendEvent(nil, &e, d.cfg.Hostname, d.pid, d.clock.Forward())
	if err := d.publish(ctx, routingKey(typ), body); err != nil {
		d.log.Warn("events: sending "+typ+" failed", "err", err)
	}
}

func (d *Dispatcher) publish(ctx context.Context, key string, body []byte) error {
	return d.p.Publish(ctx, broker.Publishing{
		Raw: protocol.Raw{
			ContentType: protocol.ContentTypeJSON, ContentEncoding: "utf-8",
			Headers:    map[string]any{"hostname": d.cfg.Hostname},
			Properties: protocol.Properties{DeliveryMode: 1},
			Body:       body,
		},
		Exchange: d.cfg.Exchange, RoutingKey: key,
	})
}

// ObserveTask queues the task event for the next batch, when task events
// are on. It never blocks: past maxBuffered events are dropped and counted.
func (d *Dispatcher) ObserveTask(te *consumer.TaskEvent) {
	if !d.taskEvents.Load() {
		return
	}
	e := taskRecord{TaskEvent: *te}
	if te.Type == consumer.TaskSucceeded {
		e.resultRepr = protocol.Repr(te.Result) // now: the value may change after the handler returns
		e.Result = nil
	}
	d.mu.Lock()
	if len(d.buf) >= maxBuffered {
		d.dropped++
		d.mu.Unlock()
		return
	}
	d.buf = append(d.buf, e)
	full := len(d.buf) >= bufferLimit
	d.mu.Unlock()
	if full {
		select {
		case d.kick <- struct{}{}:
		default:
		}
	}
}

// flush sends the buffered task events in batches of bufferLimit, each as
// one "task.multi" message whose body is a JSON array, as Celery's worker
// does even for a single event.
func (d *Dispatcher) flush(ctx context.Context) {
	d.mu.Lock()
	buf, dropped := d.buf, d.dropped
	d.buf, d.dropped = d.spare[:0], 0
	d.mu.Unlock()
	if dropped > 0 {
		d.log.Warn("events: task events dropped: the broker is not taking them fast enough", "dropped", dropped)
	}
	all := buf
	for len(buf) > 0 {
		// While a batch is being sent the next one fills: under load
		// batches grow past Celery's 24, up to maxBatch per message.
		n := min(len(buf), maxBatch)
		body := append(d.body[:0], '[')
		for i := range buf[:n] {
			if i > 0 {
				body = append(body, ", "...)
			}
			body = appendTaskEvent(body, &buf[i], d.cfg.Hostname, d.pid, d.clock.Forward())
		}
		body = append(body, ']')
		if err := d.publish(ctx, "task.multi", body); err != nil {
			d.log.Warn("events: sending task events failed", "events", n, "err", err)
		}
		d.body = body // the transport has copied it
		buf = buf[n:]
	}
	clear(all) // drop references to messages and results
	d.spare = all[:0]
}

// taskRecord is a task event waiting in the batch; it is encoded when the
// batch is sent, off the task's path.
type taskRecord struct {
	consumer.TaskEvent
	resultRepr string
}

// appendTaskEvent writes a task event with Celery's fields, in Celery's
// order, without going through a generic map: this runs three times per
// task.
func appendTaskEvent(b []byte, e *taskRecord, hostname string, pid int, clock int64) []byte {
	m := e.Message
	str := func(b []byte, key, v string) []byte {
		b = append(b, ", \""...)
		b = append(b, key...)
		b = append(b, "\": "...)
		b, _ = protocol.AppendJSON(b, v)
		return b
	}
	optStr := func(b []byte, key, v string) []byte {
		if v == "" {
			b = append(b, ", \""...)
			b = append(b, key...)
			return append(b, "\": null"...)
		}
		return str(b, key, v)
	}
	boolean := func(b []byte, key string, v bool) []byte {
		b = append(b, ", \""...)
		b = append(b, key...)
		b = append(b, "\": "...)
		return strconv.AppendBool(b, v)
	}
	b = appendHead(b, hostname, e.Time, pid, clock)
	b = str(b, "uuid", m.ID)
	switch e.Type {
	case consumer.TaskReceived:
		args, kwargs := m.ArgsRepr, m.KwargsRepr
		if args == "" {
			args = protocol.ReprArgs(m.Args)
		}
		if kwargs == "" {
			kwargs = "{}"
			if len(m.Kwargs) > 0 {
				kwargs = protocol.Repr(m.Kwargs)
			}
		}
		b = str(b, "name", m.Task)
		b = str(b, "args", args)
		b = str(b, "kwargs", kwargs)
		b = optStr(b, "root_id", m.RootID)
		b = optStr(b, "parent_id", m.ParentID)
		b = append(b, `, "retries": `...)
		b = strconv.AppendInt(b, int64(m.Retries), 10)
		b = optStr(b, "eta", isoOrEmpty(m.ETA))
		b = optStr(b, "expires", isoOrEmpty(m.Expires))
	case consumer.TaskSucceeded:
		b = str(b, "result", e.resultRepr)
		b = append(b, `, "runtime": `...)
		b = strconv.AppendFloat(b, e.Runtime.Seconds(), 'f', -1, 64)
	case consumer.TaskFailed, consumer.TaskRetried:
		exc := ""
		if e.Exception != nil {
			exc = e.Exception.Repr()
		}
		b = str(b, "exception", exc)
		b = str(b, "traceback", e.Traceback)
	case consumer.TaskRevoked:
		b = boolean(b, "terminated", e.Terminated)
		b = append(b, `, "signum": null`...)
		b = boolean(b, "expired", e.Expired)
	case consumer.TaskRejected:
		b = boolean(b, "requeue", e.Requeue)
	}
	return appendTail(b, e.Time, e.Type)
}

func isoOrEmpty(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return protocol.FormatISO(t)
}
