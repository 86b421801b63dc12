package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/events"
	"github.com/gocelery/gocelery/internal/lifecycle"
	"github.com/gocelery/gocelery/protocol"
)

// Transport is what a Node and a Client need from a broker; broker/amqp
// and broker/redis provide it.
type Transport interface {
	DeclareExchange(ctx context.Context, ex broker.Exchange) error
	Consume(ctx context.Context, queues []broker.Queue, prefetch int) (<-chan *broker.Delivery, error)
	Publish(ctx context.Context, p broker.Publishing) error
}

// Worker is what the commands read and change; *consumer.Worker
// provides it.
type Worker interface {
	Hostname() string
	Concurrency() int
	Stats() consumer.Stats
	TotalByTask() map[string]int64
	Started() time.Time
	Active() []consumer.RequestInfo
	Reserved() []consumer.RequestInfo
	Scheduled() []consumer.RequestInfo
	Query(ids []string) map[string]consumer.RequestInfo
	Registered() []consumer.TaskInfo
	Revoke(ctx context.Context, ids []string, terminate bool) []string
	Revoked() map[string]time.Time
	MergeRevoked(ids map[string]time.Time)
	SetRateLimit(task, limit string) error
	SetTimeLimit(task string, soft, hard time.Duration) error
	AddQueue(q broker.Queue) error
	CancelQueue(name string) error
	Queues() []broker.Queue
	// Shutdown stops the worker warmly (the remote shutdown command does
	// not wait for it).
	Shutdown(ctx context.Context) error
}

// EventSwitch turns task events on and off; *events.Dispatcher provides it.
type EventSwitch interface {
	TaskEvents() bool
	SetTaskEvents(on bool) (changed bool)
	Heartbeat(ctx context.Context)
}

// NodeConfig configures a Node.
type NodeConfig struct {
	// QueueNamed returns the app's own declaration of a queue (its
	// task_queues entry), which add_consumer uses instead of the command's
	// arguments, as Celery does: a quorum or priority queue must be
	// declared with its arguments. Nil uses the arguments.
	QueueNamed func(name string) (broker.Queue, bool)
	// Exchange is the mailbox exchange; "" means "celery.pidbox".
	Exchange string
	// Clock is the worker's Lamport clock (shared with events); nil means
	// one of the node's own.
	Clock *events.Clock
	// Events, when set, serves enable_events, disable_events, heartbeat.
	Events EventSwitch
	// Broker describes the connection for the stats command.
	Broker BrokerInfo
	Logger *slog.Logger
}

// BrokerInfo is the "broker" part of stats.
type BrokerInfo struct {
	Transport string // "amqp" or "redis"
	Hostname  string
	Port      int
	VHost     string
}

// ErrNodeClosed is returned by Run on a Node that has run already: each runs once.
var ErrNodeClosed = errors.New("control: already ran")

// Node answers remote control for one worker: the background component
// that consumes <hostname>.celery.pidbox. Create it with NewNode, run it
// with Run.
type Node struct {
	life  lifecycle.Guard
	t     Transport
	w     Worker
	cfg   NodeConfig
	clock *events.Clock
	log   *slog.Logger
	pid   int
}

// NewNode returns the node of worker w.
func NewNode(t Transport, w Worker, cfg NodeConfig) *Node {
	if cfg.Exchange == "" {
		cfg.Exchange = DefaultExchange
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := &Node{t: t, w: w, cfg: cfg, clock: cfg.Clock, log: cfg.Logger, pid: os.Getpid()}
	if n.clock == nil {
		n.clock = &events.Clock{}
	}
	return n
}

// Run consumes the node's queue and answers until ctx ends.
func (n *Node) Run(ctx context.Context) error {
	if !n.life.Start() {
		return ErrNodeClosed
	}
	defer n.life.Stop()
	for _, ex := range []broker.Exchange{
		{Name: n.cfg.Exchange, Kind: "fanout", Transient: true},
		{Name: "reply." + n.cfg.Exchange, Kind: "direct", Transient: true},
	} {
		if err := n.t.DeclareExchange(ctx, ex); err != nil {
			return fmt.Errorf("control: declare %q: %w", ex.Name, err)
		}
	}
	q := nodeQueue(n.w.Hostname(), n.cfg.Exchange)
	deliveries, err := n.t.Consume(ctx, []broker.Queue{q}, 10)
	if err != nil {
		return fmt.Errorf("control: consume %q: %w", q.Name, err)
	}
	for d := range deliveries {
		if err := d.Ack(); err != nil {
			n.log.Debug("control: ack", "err", err)
		}
		n.handle(ctx, d)
	}
	return nil
}

func (n *Node) handle(ctx context.Context, d *broker.Delivery) {
	req, err := ParseRequest(&d.Raw)
	if err != nil {
		n.log.Warn("control: bad request dropped", "err", err)
		return
	}
	if c, ok := protocol.AsInt64(d.Headers["clock"]); ok {
		n.clock.Adjust(c)
	}
	if !req.For(n.w.Hostname()) {
		return
	}
	n.log.Debug("control: command", "method", req.Method, "arguments", req.Arguments)
	reply, send := n.dispatch(ctx, req)
	if !send || req.ReplyTo == nil {
		return
	}
	body, err := protocol.AppendJSON(nil, map[string]any{n.w.Hostname(): reply})
	if err != nil {
		body, _ = protocol.AppendJSON(nil, map[string]any{n.w.Hostname(): nok(err.Error())})
	}
	err = n.t.Publish(ctx, broker.Publishing{
		Raw: protocol.Raw{
			ContentType: protocol.ContentTypeJSON, ContentEncoding: "utf-8",
			Headers:    map[string]any{"ticket": req.Ticket, "clock": n.clock.Forward()},
			Properties: protocol.Properties{DeliveryMode: 1},
			Body:       body,
		},
		Exchange: req.ReplyTo.Exchange, RoutingKey: req.ReplyTo.RoutingKey,
	})
	if err != nil {
		n.log.Warn("control: reply not sent", "method", req.Method, "err", err)
	}
}

// dispatch runs one command; send is false for commands Celery does not
// answer (shutdown, and hello from the node itself).
func (n *Node) dispatch(ctx context.Context, req *Request) (reply any, send bool) {
	a := req.Arguments
	w := n.w
	switch req.Method {
	case "ping":
		return ok("pong"), true
	case "clock":
		return map[string]any{"clock": n.clock.Value()}, true
	case "stats":
		return n.stats(), true
	case "active":
		safe, _ := a["safe"].(bool)
		return n.infos(w.Active(), safe), true
	case "reserved":
		return n.infos(w.Reserved(), false), true
	case "scheduled":
		out := []any{}
		for _, i := range w.Scheduled() {
			out = append(out, map[string]any{"eta": protocol.ISOOrNil(i.ETA), "priority": int64(6), "request": n.info(i, false)})
		}
		return out, true
	case "registered":
		return n.registered(a), true
	case "revoked":
		ids := sortedIDs(w.Revoked())
		out := make([]any, len(ids))
		for i, id := range ids {
			out[i] = id
		}
		return out, true
	case "query_task":
		out := map[string]any{}
		for id, i := range w.Query(stringList(a["ids"])) {
			state := i.State
			if state == consumer.StateScheduled {
				state = consumer.StateReserved
			}
			out[id] = []any{state, n.info(i, false)}
		}
		return out, true
	case "active_queues":
		out := []any{}
		for _, q := range w.Queues() {
			out = append(out, queueDict(q))
		}
		return out, true
	case "hello":
		from, _ := a["from_node"].(string)
		if from == w.Hostname() {
			return nil, false
		}
		w.MergeRevoked(revokedArg(a["revoked"]))
		ids := sortedIDs(w.Revoked())
		list := make([]any, len(ids))
		for i, id := range ids {
			list[i] = id
		}
		return map[string]any{"revoked": list, "clock": n.clock.Forward()}, true
	case "revoke", "terminate":
		ids := stringList(a["task_id"])
		terminate, _ := a["terminate"].(bool)
		if req.Method == "terminate" {
			terminate = true
		}
		done := w.Revoke(ctx, ids, terminate)
		if terminate {
			if len(done) == 0 {
				return ok("terminate: tasks unknown"), true
			}
			return ok("terminate: " + strings.Join(done, ", ")), true
		}
		return ok("tasks " + pySet(ids) + " flagged as revoked"), true
	case "rate_limit":
		task, _ := a["task_name"].(string)
		limit := ""
		switch v := a["rate_limit"].(type) {
		case string:
			limit = v
		case int64:
			limit = strconv.FormatInt(v, 10)
		case float64:
			limit = strconv.FormatFloat(v, 'f', -1, 64)
		}
		err := w.SetRateLimit(task, limit)
		switch {
		case errors.Is(err, consumer.ErrUnknownTask):
			return nok("unknown task"), true
		case err != nil:
			return nok(fmt.Sprintf("Invalid rate limit string: ValueError(%s)", protocol.Repr(limit))), true
		case limit == "" || limit == "0":
			return ok("rate limit disabled successfully"), true
		}
		return ok("new rate limit set successfully"), true
	case "time_limit":
		task, _ := a["task_name"].(string)
		soft, _ := protocol.AsFloat64(a["soft"])
		hard, _ := protocol.AsFloat64(a["hard"])
		if err := w.SetTimeLimit(task, seconds(soft), seconds(hard)); err != nil {
			return nok("unknown task"), true
		}
		return ok("time limits set successfully"), true
	case "add_consumer":
		q, err := queueArg(a)
		if err != nil {
			return nok(err.Error()), true
		}
		if n.cfg.QueueNamed != nil {
			// Celery's add_task_queue: a queue the app declares (task_queues)
			// is consumed as declared, whatever the command says.
			if known, ok := n.cfg.QueueNamed(q.Name); ok {
				q = known
			}
		}
		if err := w.AddQueue(q); err != nil && !errors.Is(err, consumer.ErrAlreadyConsume) {
			return nok(err.Error()), true
		}
		return ok("add consumer " + q.Name), true
	case "cancel_consumer":
		name, _ := a["queue"].(string)
		if err := w.CancelQueue(name); err != nil && !errors.Is(err, consumer.ErrUnknownQueue) {
			return nok(err.Error()), true
		}
		return ok("no longer consuming from " + name), true
	case "shutdown":
		n.log.Warn("control: shutdown requested by remote", "msg", a["msg"])
		go func() { _ = w.Shutdown(context.WithoutCancel(ctx)) }()
		return nil, false
	case "enable_events", "disable_events":
		if n.cfg.Events == nil {
			return nok("event dispatcher unavailable"), true
		}
		on := req.Method == "enable_events"
		word := map[bool]string{true: "enabled", false: "disabled"}[on]
		if n.cfg.Events.SetTaskEvents(on) {
			return ok("task events " + word), true
		}
		return ok("task events already " + word), true
	case "heartbeat":
		if n.cfg.Events != nil {
			n.cfg.Events.Heartbeat(ctx)
		}
		return nil, true
	case "report":
		return ok(fmt.Sprintf("software -> %s:%s (Go) pid:%d", events.SWIdent, events.SWVer, n.pid)), true
	case "conf", "dump_conf":
		return map[string]any{"worker_concurrency": int64(w.Concurrency())}, true
	}
	return map[string]any{"error": fmt.Sprintf("KeyError(%s)", protocol.Repr(req.Method))}, true
}

func (n *Node) infos(is []consumer.RequestInfo, safe bool) []any {
	out := make([]any, 0, len(is))
	for _, i := range is {
		out = append(out, n.info(i, safe))
	}
	return out
}

// info is Celery's Request.info().
func (n *Node) info(i consumer.RequestInfo, safe bool) map[string]any {
	var args, kwargs any = i.Args, i.Kwargs
	if i.Args == nil {
		args = []any{}
	}
	if i.Kwargs == nil {
		kwargs = map[string]any{}
	}
	if safe {
		args, kwargs = i.ArgsRepr, i.KwargsRepr
	}
	var start, pid any
	if !i.TimeStart.IsZero() {
		start, pid = float64(i.TimeStart.UnixMicro())/1e6, int64(n.pid)
	}
	return map[string]any{
		"id": i.ID, "name": i.Task, "args": args, "kwargs": kwargs, "type": i.Task,
		"hostname": i.Hostname, "time_start": start, "acknowledged": i.Acknowledged,
		"delivery_info": map[string]any{
			"exchange": i.Exchange, "routing_key": i.RoutingKey,
			"priority": int64(i.Properties.Priority), "redelivered": i.Redelivered,
		},
		"worker_pid": pid,
	}
}

func (n *Node) registered(a map[string]any) []any {
	items := stringList(a["taskinfoitems"])
	out := []any{}
	for _, t := range n.w.Registered() {
		s := t.Name
		for _, it := range items {
			if it == "rate_limit" && t.RateLimit != "" {
				s += " [rate_limit=" + t.RateLimit + "]"
			}
		}
		if len(items) == 0 && t.RateLimit != "" {
			s += " [rate_limit=" + t.RateLimit + "]"
		}
		out = append(out, s)
	}
	return out
}

func (n *Node) stats() map[string]any {
	w := n.w
	st := w.Stats()
	total := map[string]any{}
	for k, v := range w.TotalByTask() {
		total[k] = v
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	b := n.cfg.Broker
	return map[string]any{
		"total": total, "pid": int64(n.pid), "clock": strconv.FormatInt(n.clock.Value(), 10),
		"uptime": int64(time.Since(w.Started()).Seconds()),
		"pool": map[string]any{
			"implementation": "gocelery:goroutines", "max-concurrency": int64(w.Concurrency()),
			"processes": []any{int64(n.pid)}, "max-tasks-per-child": "N/A",
			"put-guarded-by-semaphore": false, "timeouts": []any{int64(0), int64(0)},
		},
		"broker": map[string]any{
			"hostname": b.Hostname, "userid": nil, "virtual_host": b.VHost, "port": int64(b.Port),
			"insist": false, "ssl": false, "transport": b.Transport, "connect_timeout": int64(4),
			"transport_options": map[string]any{}, "login_method": nil, "uri_prefix": nil,
			"heartbeat": 120.0, "failover_strategy": "round-robin", "alternates": []any{},
		},
		"prefetch_count": int64(st.Prefetch),
		"rusage": map[string]any{
			"utime": tv(ru.Utime), "stime": tv(ru.Stime), "maxrss": ru.Maxrss, "ixrss": ru.Ixrss,
			"idrss": ru.Idrss, "isrss": ru.Isrss, "minflt": ru.Minflt, "majflt": ru.Majflt,
			"nswap": ru.Nswap, "inblock": ru.Inblock, "oublock": ru.Oublock, "msgsnd": ru.Msgsnd,
			"msgrcv": ru.Msgrcv, "nsignals": ru.Nsignals, "nvcsw": ru.Nvcsw, "nivcsw": ru.Nivcsw,
		},
	}
}

// queueDict is kombu's Queue.as_dict(recurse=True).
func queueDict(q broker.Queue) map[string]any {
	var args any
	if len(q.Arguments) > 0 {
		args = q.Arguments
	}
	return map[string]any{
		"name": q.Name,
		"exchange": map[string]any{
			"name": q.ExchangeName(), "type": q.Kind(), "arguments": nil, "durable": !q.Transient,
			"passive": false, "auto_delete": false, "delivery_mode": nil, "no_declare": false,
		},
		"routing_key": q.Key(), "queue_arguments": args, "binding_arguments": nil,
		"consumer_arguments": nil, "durable": !q.Transient, "exclusive": q.Exclusive,
		"auto_delete": q.AutoDelete, "no_ack": false, "alias": nil, "bindings": []any{},
		"no_declare": nil, "expires": nil, "message_ttl": nil, "max_length": nil,
		"max_length_bytes": nil, "max_priority": maxPriority(q.MaxPriority),
	}
}

func maxPriority(p int) any {
	if p == 0 {
		return nil
	}
	return int64(p)
}

// queueArg reads add_consumer's arguments into a queue declaration.
func queueArg(a map[string]any) (broker.Queue, error) {
	q := broker.Queue{}
	q.Name, _ = a["queue"].(string)
	if q.Name == "" {
		return q, errors.New("add_consumer needs a queue name")
	}
	q.Exchange, _ = a["exchange"].(string)
	q.ExchangeType, _ = a["exchange_type"].(string)
	q.RoutingKey, _ = a["routing_key"].(string)
	if d, ok := a["durable"].(bool); ok && !d {
		q.Transient = true
	}
	q.AutoDelete, _ = a["auto_delete"].(bool)
	return q, nil
}

// pySet renders ids as Python's repr of a set: {'a', 'b'}.
func pySet(ids []string) string {
	if len(ids) == 0 {
		return "set()"
	}
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = protocol.Repr(id)
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func sortedIDs(m map[string]time.Time) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	// Oldest first, as Celery lists its LimitedSet.
	sort.Slice(ids, func(i, k int) bool { return m[ids[i]].Before(m[ids[k]]) })
	return ids
}

// revokedArg reads hello's revoked: a {id: timestamp} dict (Celery < 5.7
// and the request) or a list of ids (5.7's reply).
func revokedArg(v any) map[string]time.Time {
	out := map[string]time.Time{}
	now := time.Now()
	switch r := v.(type) {
	case map[string]any:
		for id, ts := range r {
			t := now
			if f, ok := protocol.AsFloat64(ts); ok && f > 0 {
				t = time.UnixMicro(int64(f * 1e6))
			}
			out[id] = t
		}
	case []any:
		for _, x := range r {
			if id, ok := x.(string); ok {
				out[id] = now
			}
		}
	}
	return out
}

func stringList(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
