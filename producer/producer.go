// Package producer sends tasks that Celery workers (Python or Go) run,
// with apply_async's options, and reads their results back (AsyncResult).
package producer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// Broker is what the producer needs from a transport.
type Broker interface {
	Declare(ctx context.Context, qs ...broker.Queue) error
	Publish(ctx context.Context, p broker.Publishing) error
}

// Backend is what AsyncResult needs from the result backend;
// *results.Redis and *results.ReplyQueue (rpc://) provide it.
type Backend interface {
	Get(ctx context.Context, taskID string) (*results.Meta, error)
	Wait(ctx context.Context, taskID string) (*results.Meta, error)
	Forget(ctx context.Context, taskID string) error
}

// Route sends tasks whose name matches to a destination, as an entry of
// Celery's task_routes does. Pattern is an exact name or a glob ("proj.*");
// Regexp, when set, is used instead.
type Route struct {
	Pattern    string
	Regexp     *regexp.Regexp
	Queue      string
	Exchange   string
	RoutingKey string
	Priority   *int
}

func (r Route) matches(name string) bool {
	if r.Regexp != nil {
		return r.Regexp.MatchString(name)
	}
	if r.Pattern == name {
		return true
	}
	ok, _ := path.Match(r.Pattern, name)
	return ok
}

// Config configures a Producer.
type Config struct {
	// DefaultQueue is task_default_queue; "" means Celery's "celery".
	DefaultQueue string
	// Routes are tried in order, as task_routes; explicit options win.
	Routes []Route
	// Serializer ("json" or "msgpack") and Compression as task_serializer
	// and task_compression.
	Serializer, Compression string
	// Origin is the "origin" header; "" means "gen<pid>@<host>", as
	// Celery's producers outside a worker write.
	Origin string
	// Revoker sends revoke commands for AsyncResult.Revoke;
	// *control.Client provides it.
	Revoker Revoker
	// Queues are task_queues as the Python app declares them
	// (config.Topology.Declared gives them from a config file): a queue
	// the producer declares before sending to it is declared so, and with
	// a quorum queue among them, countdowns and ETAs go through RabbitMQ's
	// native delayed delivery as Celery >= 5.5 sends them.
	Queues []broker.Queue
}

// Revoker revokes tasks on the workers, as app.control.revoke does.
type Revoker interface {
	Revoke(ctx context.Context, ids []string, terminate bool) error
}

// ErrNoRevoker is returned by AsyncResult.Revoke without a Revoker.
var ErrNoRevoker = errors.New("producer: no Revoker configured (set Config.Revoker to a control.Client)")

// Producer publishes task messages. It is safe for concurrent use.
type Producer struct {
	broker   Broker
	backend  Backend
	cfg      Config
	declared sync.Map // queue names declared already, as kombu caches them
	enc      protocol.Encoder
	quorum   bool // a quorum queue among cfg.Queues: native delayed delivery
}

// New returns a producer; backend may be nil when no result is read.
func New(b Broker, backend Backend, cfg Config) *Producer {
	if cfg.DefaultQueue == "" {
		cfg.DefaultQueue = "celery"
	}
	if cfg.Origin == "" {
		host, _ := os.Hostname()
		cfg.Origin = "gen" + strconv.Itoa(os.Getpid()) + "@" + host
	}
	return &Producer{broker: b, backend: backend, cfg: cfg,
		enc:    protocol.Encoder{Serializer: cfg.Serializer, Compression: cfg.Compression},
		quorum: slices.ContainsFunc(cfg.Queues, broker.Queue.IsQuorum)}
}

// Options are apply_async's options. Build them with the Option functions.
type Options struct {
	TaskID                      string
	Queue, Exchange, RoutingKey string
	ETA                         time.Time
	Expires                     time.Time
	Priority                    *int
	Retries                     int
	TimeLimit                   protocol.TimeLimit
	Headers                     map[string]any
	IgnoreResult                bool
	Link, LinkError             []protocol.Signature
	Shadow                      string
	RootID, ParentID            string
	ReplyTo                     string
	// Canvas fields a worker sets when it continues a workflow; Apply
	// sets them for chains, groups and chords.
	Chain      []protocol.Signature // the steps after this one, reversed
	Chord      *protocol.Signature  // the body, for a chord header task
	GroupID    string
	GroupIndex *int
	// Transient sends with delivery_mode 1: RabbitMQ keeps the message in
	// memory only (lost if the broker restarts), for several times the
	// publish rate of persistent messages.
	Transient bool
	// ReplacedTaskNesting is the replaced_task_nesting header: how many
	// times the task's predecessors were replaced (Task.replace).
	ReplacedTaskNesting int
}

func deliveryMode(o *Options) int {
	if o.Transient {
		return 1
	}
	return 2
}

// Transient is apply_async(delivery_mode=1): the broker does not write
// the message to disk.
func Transient() Option { return func(o *Options) { o.Transient = true } }

// Option sets one apply_async option.
type Option func(*Options)

// TaskID sets the task id (default: a new UUID4).
func TaskID(id string) Option { return func(o *Options) { o.TaskID = id } }

// Queue routes to a queue (published on the default exchange, as Celery does).
func Queue(q string) Option { return func(o *Options) { o.Queue = q } }

// Exchange publishes to a named exchange with a routing key.
func Exchange(exchange, routingKey string) Option {
	return func(o *Options) { o.Exchange, o.RoutingKey = exchange, routingKey }
}

// Countdown delays execution by d (eta = now + d).
func Countdown(d time.Duration) Option { return func(o *Options) { o.ETA = time.Now().Add(d).UTC() } }

// ETA sets the earliest execution time.
func ETA(t time.Time) Option { return func(o *Options) { o.ETA = t } }

// Expires sets the time after which the task is not run.
func Expires(t time.Time) Option { return func(o *Options) { o.Expires = t } }

// ExpiresIn sets expiry d from now.
func ExpiresIn(d time.Duration) Option {
	return func(o *Options) { o.Expires = time.Now().Add(d).UTC() }
}

// Priority sets the message priority (RabbitMQ: higher first; Redis: 0 first).
func Priority(p int) Option { return func(o *Options) { o.Priority = &p } }

// Retries sets the retries count the task starts with.
func Retries(n int) Option { return func(o *Options) { o.Retries = n } }

// TimeLimit sets the hard and soft limits ("timelimit" header, [hard, soft]).
func TimeLimit(hard, soft time.Duration) Option {
	return func(o *Options) { o.TimeLimit = protocol.TimeLimit{Hard: hard, Soft: soft} }
}

// Headers adds custom headers (apply_async(headers=...)).
func Headers(h map[string]any) Option { return func(o *Options) { o.Headers = h } }

// IgnoreResult asks the worker not to store the result.
func IgnoreResult() Option { return func(o *Options) { o.IgnoreResult = true } }

// Link runs sigs with the result on success (link=).
func Link(sigs ...protocol.Signature) Option {
	return func(o *Options) { o.Link = append(o.Link, sigs...) }
}

// LinkError runs sigs with the task id on failure (link_error=).
func LinkError(sigs ...protocol.Signature) Option {
	return func(o *Options) { o.LinkError = append(o.LinkError, sigs...) }
}

// Shadow sets the name shown in logs and monitors.
func Shadow(name string) Option { return func(o *Options) { o.Shadow = name } }

// Parent sets root and parent ids, for a task sent from inside another.
func Parent(rootID, parentID string) Option {
	return func(o *Options) { o.RootID, o.ParentID = rootID, parentID }
}

// ReplyTo sets the reply_to property, the queue Celery's rpc:// result
// backend answers on (Celery sets it to the sending app's id).
func ReplyTo(queue string) Option { return func(o *Options) { o.ReplyTo = queue } }

// InGroup makes the task member index of group id (group_id,
// group_index).
func InGroup(id string, index int) Option {
	return func(o *Options) { o.GroupID, o.GroupIndex = id, &index }
}

// ChainSteps sets the steps that follow the task in a chain, in Celery's
// order: reversed, the next step last.
func ChainSteps(rest ...protocol.Signature) Option {
	return func(o *Options) { o.Chain = rest }
}

// ChordBody makes the task a chord header member whose completion counts
// towards body.
func ChordBody(body protocol.Signature) Option {
	return func(o *Options) { o.Chord = &body }
}

// ErrNoBackend is returned by AsyncResult methods of a producer without one.
var ErrNoBackend = errors.New("producer: no result backend configured")

// SendTask publishes task name with args and kwargs, as Celery's
// send_task/apply_async does, and returns its AsyncResult.
func (p *Producer) SendTask(ctx context.Context, name string, args []any, kwargs map[string]any, opts ...Option) (*AsyncResult, error) {
	var o Options
	for _, f := range opts {
		f(&o)
	}
	return p.send(ctx, name, args, kwargs, &o)
}

func (p *Producer) send(ctx context.Context, name string, args []any, kwargs map[string]any, o *Options) (*AsyncResult, error) {
	return p.sendAsync(ctx, name, args, kwargs, o, false)
}

// sendAsync builds and publishes the message; with async, on a broker
// that can, without waiting for the confirm (AsyncResult.Sent waits).
func (p *Producer) sendAsync(ctx context.Context, name string, args []any, kwargs map[string]any, o *Options, async bool) (*AsyncResult, error) {
	if o.TaskID == "" {
		o.TaskID = uuid.NewString()
	}
	if o.RootID == "" && o.ParentID == "" {
		// Sent from inside a task: that task is the parent, as in Celery.
		if cur := protocol.MessageFrom(ctx); cur != nil {
			o.ParentID, o.RootID = cur.ID, cur.RootID
			if o.RootID == "" {
				o.RootID = cur.ID
			}
		}
	}
	exchange, key, priority := p.route(name, o)
	m := &protocol.Message{
		ID: o.TaskID, Task: name, Args: args, Kwargs: kwargs,
		ETA: o.ETA, Expires: o.Expires, Retries: o.Retries, TimeLimit: o.TimeLimit,
		RootID: o.RootID, ParentID: o.ParentID, Shadow: o.Shadow, IgnoreResult: o.IgnoreResult,
		Origin: p.cfg.Origin, Headers: o.Headers, Callbacks: o.Link, Errbacks: o.LinkError,
		Chain: o.Chain, Chord: o.Chord, Group: o.GroupID, GroupIndex: o.GroupIndex, ReplacedTaskNesting: o.ReplacedTaskNesting,
		Properties: protocol.Properties{ReplyTo: p.replyTo(o), DeliveryMode: deliveryMode(o), Priority: priority},
	}
	if !o.Expires.IsZero() {
		// kombu turns expires into the per-message TTL RabbitMQ enforces.
		ms := max(time.Until(o.Expires).Milliseconds(), 0)
		m.Properties.Expiration = strconv.FormatInt(ms, 10)
	}
	raw, err := p.enc.Encode(m)
	if err != nil {
		return nil, err
	}
	if exchange == "" {
		// Celery declares the target queue before publishing, so a queue
		// no worker declared yet still keeps the message.
		if _, ok := p.declared.Load(key); !ok {
			q, ok := p.queueNamed(key)
			if !ok {
				q = broker.Queue{Name: key}
			}
			if err := p.broker.Declare(ctx, q); err != nil {
				return nil, fmt.Errorf("producer: declare queue %q: %w", key, err)
			}
			p.declared.Store(key, true)
		}
	}
	exchange, key = p.nativeDelay(exchange, key, o.ETA)
	pub := broker.Publishing{Raw: *raw, Exchange: exchange, RoutingKey: key, Mandatory: true}
	r := &AsyncResult{ID: o.TaskID, backend: p.backend, revoker: p.cfg.Revoker}
	if ap, ok := p.broker.(asyncPublisher); ok && async {
		wait, err := ap.PublishAsync(ctx, pub)
		if err != nil {
			return nil, fmt.Errorf("producer: send %s[%s]: %w", name, o.TaskID, err)
		}
		var mu sync.Mutex
		done, final := false, error(nil)
		r.sent = func(ctx context.Context) error {
			// The outcome is kept once known, so a second Sent does not
			// send a dropped message again.
			mu.Lock()
			defer mu.Unlock()
			if done {
				return final
			}
			err := wait(ctx)
			if err != nil {
				err = fmt.Errorf("producer: send %s[%s]: %w", name, r.ID, err)
			}
			if ctx.Err() == nil {
				done, final = true, err
			}
			return err
		}
		return r, nil
	}
	if err := p.broker.Publish(ctx, pub); err != nil {
		return nil, fmt.Errorf("producer: send %s[%s]: %w", name, o.TaskID, err)
	}
	return r, nil
}

// asyncPublisher is a broker that can write a message and report its
// confirm later (*amqp.Broker).
type asyncPublisher interface {
	PublishAsync(ctx context.Context, p broker.Publishing) (wait func(context.Context) error, err error)
}

// SendTaskAsync is SendTask without waiting for the broker's confirm: it
// returns once the message is written, so one goroutine keeps many
// publishes in flight (about 10x SendTask's rate on RabbitMQ). The
// result's Sent waits for the confirm and returns the error SendTask would
// have; until Sent returns nil the task may not have reached the broker,
// and one whose connection dropped is sent again only by Sent. On a
// broker whose publish is a single round trip anyway (Redis) it is
// SendTask.
func (p *Producer) SendTaskAsync(ctx context.Context, name string, args []any, kwargs map[string]any, opts ...Option) (*AsyncResult, error) {
	var o Options
	for _, f := range opts {
		f(&o)
	}
	return p.sendAsync(ctx, name, args, kwargs, &o, true)
}

// Call is one task of a SendTasks batch.
type Call struct {
	Name    string
	Args    []any
	Kwargs  map[string]any
	Options []Option
}

// SendTasks sends every call with its confirms in flight together and
// returns when all are confirmed: the bulk path, at the broker's publish
// rate rather than one round trip per task. The results are in the
// calls' order; a call that failed has a nil result and its error is in
// the joined error.
func (p *Producer) SendTasks(ctx context.Context, calls []Call) ([]*AsyncResult, error) {
	rs := make([]*AsyncResult, len(calls))
	var errs []error
	for i, c := range calls {
		r, err := p.SendTaskAsync(ctx, c.Name, c.Args, c.Kwargs, c.Options...)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rs[i] = r
	}
	for i, r := range rs {
		if r == nil {
			continue
		}
		if err := r.Sent(ctx); err != nil {
			errs = append(errs, err)
			rs[i] = nil
		}
	}
	return rs, errors.Join(errs...)
}

// route resolves the destination as Celery's Router does: explicit options,
// then the first matching route, then the default queue. Tasks to a queue
// go on the default exchange with the queue as routing key.
func (p *Producer) route(name string, o *Options) (exchange, key string, priority int) {
	if o.Priority != nil {
		priority = *o.Priority
	}
	if o.Exchange != "" {
		return o.Exchange, o.RoutingKey, priority
	}
	if o.Queue != "" {
		return "", o.Queue, priority
	}
	for _, r := range p.cfg.Routes {
		if !r.matches(name) {
			continue
		}
		if o.Priority == nil && r.Priority != nil {
			priority = *r.Priority
		}
		if r.Exchange != "" {
			return r.Exchange, r.RoutingKey, priority
		}
		return "", r.Queue, priority
	}
	return "", p.cfg.DefaultQueue, priority
}

// AsyncResult reads a task's state from the result backend, as Celery's
// AsyncResult does.
type AsyncResult struct {
	ID string
	// Children are a group's member results (Celery's GroupResult).
	Children []*AsyncResult
	backend  Backend
	revoker  Revoker
	sent     func(context.Context) error // SendTaskAsync's confirm; nil once sent
}

// Sent waits until the broker has confirmed the task's message and
// returns the error SendTask would have returned. It is nil at once for a
// result of SendTask, or of SendTaskAsync on a broker without confirms
// to wait for. It is what sends the message again if the connection
// dropped before the confirm; the outcome, once known, is kept.
func (r *AsyncResult) Sent(ctx context.Context) error {
	if r.sent == nil {
		return nil
	}
	return r.sent(ctx)
}

// NewAsyncResult returns the result handle of a task id.
func NewAsyncResult(id string, backend Backend) *AsyncResult {
	return &AsyncResult{ID: id, backend: backend}
}

// AsyncResult returns the result handle of a task id sent earlier, with
// this producer's backend and revoker.
func (p *Producer) AsyncResult(id string) *AsyncResult {
	return &AsyncResult{ID: id, backend: p.backend, revoker: p.cfg.Revoker}
}

// State returns the task's state now (PENDING when nothing is stored).
func (r *AsyncResult) State(ctx context.Context) (string, error) {
	m, err := r.meta(ctx)
	if err != nil {
		return "", err
	}
	return m.Status, nil
}

// Info returns the stored result or meta of the current state (the
// PROGRESS meta, the exception of a FAILURE), as AsyncResult.info.
func (r *AsyncResult) Info(ctx context.Context) (any, error) {
	m, err := r.meta(ctx)
	if err != nil {
		return nil, err
	}
	return m.Result, nil
}

// Get waits for a ready state and returns the result. A FAILURE or
// REVOKED task returns its *results.Exception as the error, carrying the
// Python exception type, message and (in Traceback) the traceback.
func (r *AsyncResult) Get(ctx context.Context) (any, error) {
	if r.backend == nil {
		return nil, ErrNoBackend
	}
	m, err := r.backend.Wait(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	if err := m.Err(); err != nil {
		return nil, &TaskError{Exception: results.ExceptionFrom(err), TaskID: r.ID, State: m.Status, Traceback: m.Traceback}
	}
	return m.Result, nil
}

// Revoke revokes the task (and a group's members) on every worker:
// a queued one is discarded, and with terminate a running one has its
// context cancelled (Go) or its process signalled (Python).
func (r *AsyncResult) Revoke(ctx context.Context, terminate bool) error {
	if r.revoker == nil {
		return ErrNoRevoker
	}
	ids := []string{r.ID}
	for _, c := range r.Children {
		ids = append(ids, c.ID)
	}
	return r.revoker.Revoke(ctx, ids, terminate)
}

// groupSaver is the part of the backend GroupResult.save needs.
type groupSaver interface {
	SaveGroup(ctx context.Context, groupID string, childIDs []string) error
}

// Save stores a group's member ids under celery-taskset-meta-<id>, as
// GroupResult.save() does, so GroupResult.restore(id) finds them in Python.
func (r *AsyncResult) Save(ctx context.Context) error {
	gs, ok := r.backend.(groupSaver)
	if !ok {
		return ErrNoBackend
	}
	ids := make([]string, len(r.Children))
	for i, c := range r.Children {
		ids[i] = c.ID
	}
	return gs.SaveGroup(ctx, r.ID, ids)
}

// Forget deletes the stored result.
func (r *AsyncResult) Forget(ctx context.Context) error {
	if r.backend == nil {
		return ErrNoBackend
	}
	return r.backend.Forget(ctx, r.ID)
}

func (r *AsyncResult) meta(ctx context.Context) (*results.Meta, error) {
	if r.backend == nil {
		return nil, ErrNoBackend
	}
	return r.backend.Get(ctx, r.ID)
}

// TaskError is the error Get returns for a failed or revoked task.
type TaskError struct {
	*results.Exception
	TaskID    string
	State     string
	Traceback string
}

func (e *TaskError) Error() string { return e.Exception.Error() }

// Unwrap returns the Python exception, for errors.As.
func (e *TaskError) Unwrap() error { return e.Exception }
