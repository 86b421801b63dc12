package results

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
)

// ErrReplyQueueClosed is returned by ReplyQueue.Wait once the queue has
// stopped consuming (Close, or the broker closed) before the task was ready.
var ErrReplyQueueClosed = errors.New("results: reply queue closed")

// ReplyBroker is what a ReplyQueue needs from a transport: declaring and
// consuming its queue (broker/amqp and broker/redis provide it). Give the
// ReplyQueue a connection of its own, as Celery's result consumer has one:
// on AMQP the prefetch is one value per connection, and a worker consuming
// tasks on the same one would have it changed.
type ReplyBroker interface {
	Declare(ctx context.Context, qs ...broker.Queue) error
	Consume(ctx context.Context, queues []broker.Queue, prefetch int) (<-chan *broker.Delivery, error)
}

// ReplyQueueConfig configure a ReplyQueue.
type ReplyQueueConfig struct {
	// Name is the queue's name, the reply_to of the tasks sent with it;
	// "" means a new UUID (Celery uses the app's oid, a UUID too).
	Name string
	// Expires is result_expires, the queue's x-expires: RabbitMQ deletes
	// the queue once it has been unused that long. Zero means Celery's
	// one day; negative means no x-expires.
	Expires time.Duration
	// MaxStates bounds the tasks whose latest state is kept in memory;
	// past it the task seen first is forgotten. Zero means 8192, Celery's
	// MESSAGE_BUFFER_MAX for results nobody waits for yet.
	MaxStates int
	// Logger receives messages that are not task states; nil means
	// slog.Default().
	Logger *slog.Logger
}

// ReplyQueue is the client side of Celery's rpc:// result backend: one
// queue per client, on which workers publish every state of the tasks sent
// with the queue's name as reply_to (see [RPC]). It declares the queue as
// Celery does (durable, auto-delete, x-expires of result_expires), consumes
// it in the background and keeps each task's latest state in memory, so
// Get reads the current state (PENDING until one arrived) and Wait blocks
// until a ready one. As with Celery, states are messages read once: only
// this ReplyQueue sees them, a state that arrives while it is not
// consuming is lost, and a SUCCESS is never replaced by a later state.
//
// It provides what producer.Backend needs, and ReplyTo, which makes a
// producer send its tasks with reply_to set. It is safe for concurrent use.
type ReplyQueue struct {
	name string
	max  int
	log  *slog.Logger

	stop context.CancelFunc
	done chan struct{} // closed when the consume loop has ended

	mu      sync.Mutex
	states  map[string]*list.Element // task id -> element holding *Meta
	order   *list.List               // task ids in the order first seen
	changed chan struct{}            // closed and replaced at every new state
	closed  bool
}

// OpenReplyQueue declares the reply queue on b and starts consuming it;
// ctx bounds the declaration only. Close stops it.
func OpenReplyQueue(ctx context.Context, b ReplyBroker, opts ReplyQueueConfig) (*ReplyQueue, error) {
	if opts.Name == "" {
		opts.Name = uuid.NewString()
	}
	if opts.MaxStates <= 0 {
		opts.MaxStates = 8192
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	q := ReplyQueueDeclaration(opts.Name, opts.Expires)
	if err := b.Declare(ctx, q); err != nil {
		return nil, fmt.Errorf("results: declaring reply queue %q: %w", opts.Name, err)
	}
	consumeCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	deliveries, err := b.Consume(consumeCtx, []broker.Queue{q}, 0)
	if err != nil {
		stop()
		return nil, fmt.Errorf("results: consuming reply queue %q: %w", opts.Name, err)
	}
	rq := &ReplyQueue{
		name: opts.Name, max: opts.MaxStates, log: opts.Logger,
		stop: stop, done: make(chan struct{}),
		states: map[string]*list.Element{}, order: list.New(), changed: make(chan struct{}),
	}
	go rq.run(deliveries)
	return rq, nil
}

// ReplyQueueDeclaration is the queue Celery's RPCBackend.binding declares
// for a client: durable, auto-delete, with x-expires of result_expires
// (zero: one day; negative: none). Celery binds it to no exchange (workers
// publish on the default one); broker.Queue always has an exchange, so it
// is bound to RabbitMQ's own amq.direct, which declares nothing new and
// whose binding goes with the queue.
func ReplyQueueDeclaration(name string, expires time.Duration) broker.Queue {
	q := broker.Queue{Name: name, Exchange: "amq.direct", ExchangeType: "direct", RoutingKey: name, AutoDelete: true}
	if expires == 0 {
		expires = defaultExpires
	}
	if expires > 0 {
		q.Arguments = map[string]any{"x-expires": int(expires.Milliseconds())}
	}
	return q
}

// ReplyTo returns the queue's name, the reply_to workers publish states to.
func (q *ReplyQueue) ReplyTo() string { return q.name }

func (q *ReplyQueue) run(deliveries <-chan *broker.Delivery) {
	defer close(q.done)
	for d := range deliveries {
		q.receive(d)
		// Celery consumes with no_ack: the state is ours once received.
		if err := d.Ack(); err != nil {
			q.log.Warn("results: acking a state on the reply queue failed", "queue", q.name, "err", err)
		}
	}
	q.mu.Lock()
	q.closed = true
	close(q.changed)
	q.mu.Unlock()
}

// receive keeps the state a delivery carries, as Celery's
// ResultConsumer.on_state_change does; anything else is logged and dropped.
func (q *ReplyQueue) receive(d *broker.Delivery) {
	switch d.ContentType {
	case protocol.ContentTypeJSON, protocol.ContentTypeMsgpack, "":
	default:
		// Never pickle; Celery refuses what result_accept_content does not list.
		q.log.Warn("results: dropping a reply of an unaccepted content type", "queue", q.name,
			"content_type", d.ContentType, "correlation_id", d.Properties.CorrelationID)
		return
	}
	m, err := DecodeMeta(d.Body)
	if err != nil {
		q.log.Warn("results: dropping a reply that is not a task state", "queue", q.name,
			"correlation_id", d.Properties.CorrelationID, "err", err)
		return
	}
	// Celery reads the id from correlation_id first, the body after.
	id := d.Properties.CorrelationID
	if id == "" {
		id = m.TaskID
	}
	if id == "" {
		q.log.Warn("results: dropping a task state without a task id", "queue", q.name, "state", m.Status)
		return
	}
	if m.TaskID == "" {
		m.TaskID = id
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if e, ok := q.states[id]; ok {
		if e.Value.(*Meta).Status == Success {
			return // a duplicate delivery's late state, as the Redis backend refuses it
		}
		e.Value = m
	} else {
		q.states[id] = q.order.PushBack(m)
		for q.order.Len() > q.max {
			oldest := q.order.Front()
			q.order.Remove(oldest)
			delete(q.states, oldest.Value.(*Meta).TaskID)
		}
	}
	close(q.changed)
	q.changed = make(chan struct{})
}

// latest returns a copy of the task's latest state, or nil, and the
// channel closed at the next state.
func (q *ReplyQueue) latest(taskID string) (*Meta, <-chan struct{}, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var m *Meta
	if e, ok := q.states[taskID]; ok {
		c := *e.Value.(*Meta)
		m = &c
	}
	return m, q.changed, q.closed
}

// Get returns the latest state received for the task: PENDING
// (&Meta{TaskID: taskID, Status: Pending}) until one arrived, as Celery's
// RPCBackend.get_task_meta reads it. Exception results are *Exception.
func (q *ReplyQueue) Get(_ context.Context, taskID string) (*Meta, error) {
	if taskID == "" {
		return nil, fmt.Errorf("%w: task id", ErrEmptyID)
	}
	m, _, _ := q.latest(taskID)
	if m == nil {
		return &Meta{TaskID: taskID, Status: Pending}, nil
	}
	return m, nil
}

// Wait blocks until a ready state (SUCCESS, FAILURE, REVOKED) of the task
// has arrived and returns it; it does not turn FAILURE into an error (see
// Meta.Err). It returns ctx.Err() when ctx ends first, and an error
// wrapping ErrReplyQueueClosed when the queue stops consuming first.
func (q *ReplyQueue) Wait(ctx context.Context, taskID string) (*Meta, error) {
	if taskID == "" {
		return nil, fmt.Errorf("%w: task id", ErrEmptyID)
	}
	for {
		m, changed, closed := q.latest(taskID)
		if m != nil && m.Ready() {
			return m, nil
		}
		if closed {
			return nil, fmt.Errorf("waiting for task %q: %w", taskID, ErrReplyQueueClosed)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// Forget drops the task's state from memory, as AsyncResult.forget does
// with rpc:// (nothing is stored on the broker).
func (q *ReplyQueue) Forget(_ context.Context, taskID string) error {
	if taskID == "" {
		return fmt.Errorf("%w: task id", ErrEmptyID)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if e, ok := q.states[taskID]; ok {
		q.order.Remove(e)
		delete(q.states, taskID)
	}
	return nil
}

// Close stops consuming and waits for the background reader; states
// already received can still be read with Get. The queue itself is left to
// the broker, which deletes it (auto-delete) once nothing consumes it. It
// is idempotent.
func (q *ReplyQueue) Close() error {
	q.stop()
	<-q.done
	return nil
}
