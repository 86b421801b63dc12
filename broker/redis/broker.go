// Package redis is the Redis transport: it stores and moves messages
// exactly as kombu's Redis transport (Celery 5.7 / kombu 5.7) does, so Go
// and Python producers and workers share queues, and it closes the gaps
// where kombu loses or duplicates tasks.
//
// The layout is kombu's: a queue is a list per priority step ("celery",
// "celery\x06\x163", ...), published to with LPUSH and consumed with BRPOP;
// bindings are the sets _kombu.binding.<exchange>; fanout exchanges are
// PUB/SUB channels "/<db>.<exchange>[/<routing key>]", published to with
// PUBLISH and consumed with PSUBSCRIBE (remote control and events; see
// fanout.go); acknowledgement is emulated with the
// hash "unacked" and the sorted set "unacked_index", and a message nobody
// acknowledged within the visibility timeout is put back by whichever
// consumer (Python or Go) scans first, under the lock "unacked_mutex".
// Config.KeyPrefix is kombu's global_keyprefix.
//
// What this transport does that kombu does not:
//
//   - Keep-alive: while a delivery is unsettled (running, or held by the
//     worker for its ETA) its unacked_index score is refreshed, so no
//     consumer restores, and so runs twice, a task whose worker is alive
//     (kombu never refreshes: celery#2599, #3270, #4766, #5935).
//   - Settling is checked: a delivery restored by someone else meanwhile
//     is reported as broker.ErrStaleDelivery instead of acking the copy
//     another worker is now running (restored messages keep their tag).
//   - A message rejected with requeue or given back at shutdown goes back
//     to the queue it was consumed from, not to every queue its routing
//     key matches (kombu re-routes, duplicating it on multi-queue
//     bindings).
//   - The visibility-timeout restore leaves a message it cannot route
//     where it is, with a warning, instead of dropping it, and knows a
//     topic binding by its stored pattern even when this process never
//     declared the exchange.
//   - An ack or reject that cannot reach Redis, or that Redis refuses, is
//     retried in the background until it lands, instead of failing and
//     letting the finished message be redelivered (kombu raises).
//   - Nothing popped is ever unrecorded: messages are taken and recorded
//     in unacked by one script, and an idle consumer waits with BLMOVE,
//     which does not pop (kombu's BRPOP loses the message when the worker
//     dies or the reply is lost before it records it); a pop whose reply
//     was lost is repeated with its request id and returns the same
//     messages. A message that is not a kombu envelope is moved to
//     "<queue>.malformed" instead of being dropped.
//
// A Broker's background components, one per file, share one shape (start,
// shutdown): each Consume runs a consumer (pop and record, waiters, hand-out)
// and, for queues bound to fanout exchanges, a subscriber (PSUBSCRIBE),
// the keeper refreshes unsettled deliveries and retries deferred settles,
// and the restorer runs the visibility-timeout restore.
package redis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/internal/backoff"
	"github.com/gocelery/gocelery/internal/scriptbatch"
	"github.com/gocelery/gocelery/protocol"
)

// ErrForeignDelivery is returned by Ack and Reject for a delivery that
// another transport or Broker produced.
var ErrForeignDelivery = errors.New("redis: delivery is not from this broker")

// ErrAlreadySettled is returned by Ack and Reject for a delivery already
// acked or rejected: settling twice would remove or requeue a message
// that is no longer this delivery's.
var ErrAlreadySettled = errors.New("redis: delivery already acked or rejected")

// Config configure a Broker. The zero value gives the defaults, which are
// kombu's.
type Config struct {
	// Logger receives connection events; nil means slog.Default().
	Logger *slog.Logger
	// VisibilityTimeout is how long a delivery may stay unacknowledged
	// before any consumer sharing the database puts it back (kombu's
	// visibility_timeout, default 1h). Use the same value everywhere: it is
	// the restoring side's value that counts. This process's own unsettled
	// deliveries are kept alive, so it bounds only how long the messages
	// of a crashed consumer wait.
	VisibilityTimeout time.Duration
	// UnackedMutexExpire is how long a restore scan's lock
	// "unacked_mutex" lives if its holder dies before releasing it
	// (kombu's unacked_mutex_expire, default 300s): for that long nobody
	// restores anything. A scan gives up after half of it.
	UnackedMutexExpire time.Duration
	// KeyPrefix is kombu's global_keyprefix, prepended verbatim to every
	// key and PUB/SUB channel.
	KeyPrefix string
	// RestoreInterval is how often this process scans for deliveries past
	// their visibility timeout (default 10s; kombu's effective cadence is
	// about 100s). The scan starts with the first Consume. Negative
	// disables it.
	RestoreInterval time.Duration
	// PriorityBuckets are kombu's priority_steps, default [0, 3, 6, 9]:
	// priority p goes to the list of the largest step <= p. Lower is more
	// urgent on Redis. Every producer and consumer must agree on them.
	PriorityBuckets []int
	// PollTimeout is the timeout of an idle consumer's blocking waits
	// (default 1s, kombu's brpop_timeout), rounded up to whole seconds;
	// an idle consumer also checks its lists once per PollTimeout.
	// Messages are received as soon as they are pushed whatever it is; it
	// bounds how long a stop waits where a wait cannot be interrupted
	// (clients other than *redis.Client) and, with go-redis's margin, how
	// soon a silently dead connection is noticed.
	PollTimeout time.Duration
	// TLSConfig is used for rediss:// URLs; nil verifies the server
	// against the system roots and the URL's host name.
	TLSConfig *tls.Config
	// TransportOptions are Celery's broker_transport_options: for
	// sentinel:// URLs master_name (required), sentinel_kwargs and the
	// socket options (see Dial); visibility_timeout and
	// unacked_mutex_expire (seconds) fill the fields above left zero
	// (Dial).
	TransportOptions map[string]any
	// WaitReplicas makes Publish confirm a message only once that many
	// replicas have it (WAIT, up to WaitTimeout, default 1s; else it is
	// sent again): behind Sentinel, a master that dies or is demoted
	// then cannot take confirmed messages with it. Transport option
	// wait_replicas (gocelery's; kombu ignores it).
	WaitReplicas int
	WaitTimeout  time.Duration
}

// Defaults for Config.
const (
	DefaultVisibilityTimeout  = time.Hour
	DefaultUnackedMutexExpire = 300 * time.Second
	DefaultRestoreInterval    = 10 * time.Second
	DefaultPollTimeout        = time.Second
)

const (
	// restoreBatch bounds each scan of unacked_index.
	restoreBatch = 1000
	// opTimeout bounds one round of bookkeeping with Redis when there is
	// no caller's context (acks, Close).
	opTimeout = 10 * time.Second
	// minBackoff and maxBackoff bound the retry delays during an outage.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// errNotReplicated is a push too few replicas acknowledged; Publish
// retries it as it does a connection error.
var errNotReplicated = errors.New("redis: publish not replicated in time")

func (o *Config) defaults() {
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.VisibilityTimeout <= 0 {
		o.VisibilityTimeout = DefaultVisibilityTimeout
	}
	if o.UnackedMutexExpire <= 0 {
		o.UnackedMutexExpire = DefaultUnackedMutexExpire
	}
	if o.RestoreInterval == 0 {
		o.RestoreInterval = DefaultRestoreInterval
	}
	if o.PollTimeout <= 0 {
		o.PollTimeout = DefaultPollTimeout
	}
	// Blocking timeouts are whole seconds in go-redis.
	o.PollTimeout = max(time.Second, (o.PollTimeout+time.Second-1)/time.Second*time.Second)
}

// Broker is a kombu-compatible Redis transport. It is safe for concurrent
// use.
type Broker struct {
	opts     Config
	logger   *slog.Logger
	client   redis.UniversalClient
	owns     bool // Close closes client
	keys     keyspace
	health   health
	settles  *scriptbatch.Batcher // acks of concurrent deliveries share round trips
	patterns patternCache
	prefetch atomic.Int64
	// bindingRefresh overrides keepBindings' period (tests).
	bindingRefresh time.Duration
	// testHook, when set (tests), is called at fault-injection points:
	// "popped", after a pop's reply and before anything else;
	// "restore-locked", once a restore scan holds unacked_mutex.
	testHook func(point string)
	// waiterHooks are added to the waiters' own client (tests).
	waiterHooks []redis.Hook

	mu        sync.Mutex
	exchanges map[string]string // exchange name -> type, from Declare
	autoDel   []broker.Queue    // fanout queues to unbind at Close, as kombu does
	consumers map[*consumer]struct{}
	subs      map[*subscriber]struct{}
	live      map[*inflight]struct{}
	liveTags  map[string]int // tags of live, for the restorer to leave alone
	seq       uint64
	restorer  *restorer

	keeper *keeper

	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// Dial connects to the Redis server at url, a Celery broker URL:
// redis://[user:password@]host[:port][/db], rediss://... for TLS (with
// Celery's ssl_cert_reqs, ssl_ca_certs, ssl_certfile and ssl_keyfile query
// parameters), unix:///path?db=N, or Celery's Sentinel list
// sentinel://[:password@]host:26379[/db];sentinel://host2:26379;... with
// opts.TransportOptions["master_name"]. The database number is kombu's
// virtual host (default 0). Redis is pinged once: an unreachable server or a
// refused password is an error. Later outages are ridden out: go-redis
// redials, and the components retry with backoff until Close.
func Dial(ctx context.Context, url string, opts Config) (*Broker, error) {
	client, db, redacted, err := newClient(url, &opts)
	if err != nil {
		return nil, err
	}
	if err := client.Ping(ctx).Err(); err != nil {
		client.Close()
		return nil, fmt.Errorf("redis: dial %s: %w", redacted, err)
	}
	b := New(client, db, opts)
	b.owns = true
	return b, nil
}

// New returns a Broker using client, whose database is db (needed for the
// names of fanout channels, "/<db>.<exchange>"). The caller keeps ownership
// of client: Close does not close it. When client is a *redis.Client, an
// idle Consume waits on a small client of its own with client's options
// (one connection per list it consumes), closed to stop it; other clients
// wait on client itself, and a stop waits for the PollTimeout.
func New(client redis.UniversalClient, db int, opts Config) *Broker {
	opts.defaults()
	b := &Broker{
		opts:   opts,
		logger: opts.Logger,
		client: client,
		keys:   newKeyspace(opts.KeyPrefix, db, opts.PriorityBuckets),
		exchanges: map[string]string{
			// Celery makes these fanout on Redis whatever they are
			// elsewhere, and kombu keeps exchange types in memory only:
			// knowing them here lets events and broadcasts be published
			// without declaring a queue first.
			"celeryev":      "fanout",
			"celery.pidbox": "fanout",
		},
		consumers: make(map[*consumer]struct{}),
		subs:      make(map[*subscriber]struct{}),
		live:      make(map[*inflight]struct{}),
		liveTags:  make(map[string]int),
		closing:   make(chan struct{}),
	}
	b.health.logger = b.logger
	b.settles = scriptbatch.New(client, settleScript, 256)
	b.keeper = newKeeper(keeperParams{b: b, every: refreshInterval(opts.VisibilityTimeout)})
	b.keeper.start(&b.wg)
	return b
}

// refreshInterval is the keep-alive period: a quarter of the visibility
// timeout, so a live delivery's score is never older than that (plus one
// round trip) when another consumer scans, with room for a refresh or two
// to fail. It is at least 100ms, so a tiny timeout does not make it spin.
func refreshInterval(vt time.Duration) time.Duration {
	return max(vt/4, 100*time.Millisecond)
}

func (b *Broker) isClosed() bool {
	select {
	case <-b.closing:
		return true
	default:
		return false
	}
}

// opContext is the context for bookkeeping no caller bounds.
func opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// retry runs op until it succeeds, fails with an answer from Redis, or ctx
// ends: connection errors are retried with backoff, as a publisher or a
// declaration should wait out an outage. Each outcome feeds health.
func (b *Broker) retry(ctx context.Context, op func(context.Context) error) error {
	for attempt := 0; ; attempt++ {
		err := b.health.observe(op(ctx))
		if err == nil || !isConnError(err) {
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(backoff.Delay(attempt, minBackoff, maxBackoff))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-b.closing:
			t.Stop()
			return broker.ErrClosed
		}
	}
}

// DeclareExchange remembers the exchange's kind in this process, which is
// all kombu's virtual transport does (exchange types are not stored in
// Redis): Publish to an exchange known as fanout is a PUB/SUB PUBLISH,
// to any other a binding-table lookup. Nothing is sent to Redis, so ctx
// is unused. Durability and auto-delete mean nothing on Redis. Celery
// declares its event exchange "celeryev" as fanout on Redis (its
// events.get_exchange), so declare it with Kind "fanout" here; the
// transport does not second-guess a "topic" kind. Until they are declared,
// celeryev and celery.pidbox are taken as fanout, the kinds Celery gives
// them on Redis.
func (b *Broker) DeclareExchange(_ context.Context, ex broker.Exchange) error {
	if b.isClosed() {
		return broker.ErrClosed
	}
	if ex.Name == "" {
		return errors.New("redis: declare exchange: the default exchange cannot be declared")
	}
	if k := ex.Kind; k != "direct" && k != "topic" && k != "fanout" {
		return fmt.Errorf("redis: declare exchange %q: kind %q not supported (direct, topic, fanout)", ex.Name, k)
	}
	b.mu.Lock()
	b.exchanges[ex.Name] = ex.Kind
	b.mu.Unlock()
	return nil
}

// resolve fills in a queue's exchange type from the exchange's declared
// kind when the queue does not give one, as a kombu.Queue carries its
// Exchange object: a queue bound to "celery.pidbox" is a fanout queue
// (routing key "", PUB/SUB) even when only the exchange said so.
func (b *Broker) resolve(qs []broker.Queue) []broker.Queue {
	out := make([]broker.Queue, len(qs))
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, q := range qs {
		if q.ExchangeType == "" {
			q.ExchangeType = b.exchanges[q.ExchangeName()]
		}
		if len(q.Bindings) > 0 {
			q.Bindings = slices.Clone(q.Bindings)
			for j, bd := range q.Bindings {
				if bd.Exchange.Kind == "" {
					q.Bindings[j].Exchange.Kind = b.exchanges[bd.Exchange.Name]
				}
			}
		}
		out[i] = q
	}
	return out
}

// redisBinding is one binding as kombu's queue_bind writes it on Redis.
type redisBinding struct{ exchange, kind, key string }

// bindingsOf returns q's bindings: the one its exchange and routing key
// make, then those of q.Bindings that bind it elsewhere (kombu's
// Queue.declare calls queue_bind for each; on Redis each is a member of
// its exchange's binding set). Bindings to the default exchange need no
// member: it routes by queue name.
func bindingsOf(q broker.Queue) []redisBinding {
	out := []redisBinding{{q.ExchangeName(), q.Kind(), q.Key()}}
	for _, bd := range q.Bindings {
		if bd.Exchange.Name == "" {
			continue
		}
		kind := bd.Exchange.Kind
		if kind == "" {
			kind = "direct"
		}
		rb := redisBinding{bd.Exchange.Name, kind, bd.RoutingKey}
		if !slices.Contains(out, rb) {
			out = append(out, rb)
		}
	}
	return out
}

// Declare records each queue's bindings (its exchange's, then those of
// Bindings that bind it to other direct or topic exchanges) as kombu's
// queue_bind does:
// SADD _kombu.binding.<exchange> "<routing key>\x06\x16<pattern>\x06\x16<queue>"
// (pattern: the topic regex for a topic exchange, else empty; the routing
// key of a fanout queue defaults to "", see broker.Queue.Key) and, as
// kombu 5.7 does, the same member in _kombu.binding_permanent.<exchange>;
// for a queue with an x-expires argument, kombu 5.7's expiring binding
// instead: the member, and the exchange's deadline in
// _kombu.binding_deadlines raised to twice x-expires (at least an hour)
// from now by the server's clock, so kombu's sweep may drop the table once
// nobody refreshes it. Lists need no declaring. The exchange's type is
// remembered in this process only, as kombu does (see DeclareExchange).
// Durability, exclusivity, priorities and other arguments mean nothing
// on Redis and are ignored. During an outage Declare waits, bounded by
// ctx.
func (b *Broker) Declare(ctx context.Context, qs ...broker.Queue) error {
	if b.isClosed() {
		return broker.ErrClosed
	}
	qs = b.resolve(qs)
	for _, q := range qs {
		if q.Name == "" {
			return errors.New("redis: declare: a queue needs a name")
		}
		if k := q.Kind(); k != "direct" && k != "topic" && k != "fanout" {
			return fmt.Errorf("redis: declare queue %q: exchange type %q not supported (direct, topic, fanout)", q.Name, k)
		}
		for _, bd := range bindingsOf(q)[1:] {
			if bd.kind != "direct" && bd.kind != "topic" {
				return fmt.Errorf("redis: declare queue %q: binding to %s exchange %q: only direct and topic bindings are supported besides the queue's own exchange", q.Name, bd.kind, bd.exchange)
			}
		}
	}
	err := b.retry(ctx, func(ctx context.Context) error {
		return b.bind(ctx, qs)
	})
	if err != nil {
		return fmt.Errorf("redis: declare: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, q := range qs {
		for _, bd := range bindingsOf(q) {
			b.exchanges[bd.exchange] = bd.kind
		}
		if q.AutoDelete && q.Kind() == "fanout" && !slices.ContainsFunc(b.autoDel, func(o broker.Queue) bool {
			return o.Name == q.Name && o.ExchangeName() == q.ExchangeName() && o.Key() == q.Key()
		}) {
			b.autoDel = append(b.autoDel, q)
		}
	}
	return nil
}

// bind writes the queues' bindings in one transaction (see Declare).
func (b *Broker) bind(ctx context.Context, qs []broker.Queue) error {
	_, err := b.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, q := range qs {
			for _, bd := range bindingsOf(q) {
				pattern := ""
				if bd.kind == "topic" {
					pattern = topicPattern(bd.key)
				}
				m := bindingMember(bd.key, pattern, q.Name)
				if ms, ok := queueExpiry(q); ok {
					// Eval, not EvalSha: in a transaction a NOSCRIPT reply
					// comes too late to fall back.
					refreshBindingScript.Eval(ctx, p, []string{b.keys.binding(bd.exchange), b.keys.bindingDeadlines()},
						m, bd.exchange, bindingTTL(ms))
					continue
				}
				p.SAdd(ctx, b.keys.binding(bd.exchange), m)
				p.SAdd(ctx, b.keys.permanent(bd.exchange), m)
			}
		}
		return nil
	})
	return err
}

// bindingTTL is the lifetime in ms of an expiring binding (kombu's
// _binding_ttl).
func bindingTTL(expiresMS int64) int64 {
	return max(expiresMS*bindingExpiresFactor, minBindingTTL)
}

// keepBindings keeps the expiring bindings of the queues one Consume
// call consumes alive while it runs, as kombu's
// maybe_refresh_binding_expiry does: every third of the shortest binding
// lifetime the members are written again (recreating a table that was
// swept or lost) and the deadlines raised. Without it, any kombu process
// sweeping after the deadline (an hour at least) would delete, say, the
// reply.celery.pidbox table a long-lived Go control client still
// receives its replies through. Called with b.mu held, after the
// isClosed check, so Close waits for it.
func (b *Broker) keepBindings(ctx context.Context, qs []broker.Queue) {
	var exp []broker.Queue
	var shortest int64
	for _, q := range qs {
		if ms, ok := queueExpiry(q); ok {
			exp = append(exp, q)
			if ttl := bindingTTL(ms); shortest == 0 || ttl < shortest {
				shortest = ttl
			}
		}
	}
	if len(exp) == 0 {
		return
	}
	every := b.bindingRefresh
	if every <= 0 {
		every = time.Duration(shortest) * time.Millisecond / 3
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-b.closing:
				return
			case <-t.C:
			}
			// Bounded by the next round: a refresh that cannot reach
			// Redis now is simply the next one's job.
			rctx, cancel := context.WithTimeout(ctx, every)
			err := b.health.observe(b.bind(rctx, exp))
			cancel()
			if err != nil && ctx.Err() == nil {
				b.logger.Warn("redis: refreshing expiring bindings", "error", err)
			}
		}
	}()
}

func (b *Broker) exchangeType(name string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.exchanges[name]
}

// route returns the queues a message published to exchange with
// routingKey goes to, as kombu's _lookup: the anonymous exchange names
// the queue; otherwise the exchange's binding set decides, by routing key
// equality (direct), by the stored pattern (topic) or all of them
// (fanout, used only when restoring). An exchange this process never
// declared is matched by pattern where the binding has one and by key
// otherwise, which is kombu's direct routing for direct bindings and
// right, where kombu is not, for topic ones.
func (b *Broker) route(ctx context.Context, exchange, routingKey string) ([]string, error) {
	if exchange == "" {
		if routingKey == "" {
			return nil, nil
		}
		return []string{routingKey}, nil
	}
	kind := b.exchangeType(exchange)
	members, err := b.client.SMembers(ctx, b.keys.binding(exchange)).Result()
	if err != nil {
		return nil, err
	}
	var queues []string
	for _, m := range members {
		bd, ok := parseBinding(m)
		if !ok {
			continue
		}
		var match bool
		switch {
		case kind == "fanout":
			match = true
		case kind == "topic" || (kind == "" && bd.pattern != ""):
			match = b.patterns.match(bd.pattern, routingKey)
		default:
			match = bd.routingKey == routingKey
		}
		if match && !slices.Contains(queues, bd.queue) {
			queues = append(queues, bd.queue)
		}
	}
	slices.Sort(queues) // kombu returns a set; any order is kombu's
	return queues, nil
}

// Consume declares the queues and consumes them as a kombu worker does:
// from every priority list of every queue (step-major, so the lowest
// priority number is served first; queues rotate round-robin), only while
// fewer deliveries than the prefetch are unsettled. Each message is
// recorded in unacked/unacked_index in the same atomic step that takes it
// off its list, so a crash at any moment loses nothing.
//
// The returned Go channel survives Redis outages and is closed when ctx is
// done or the Broker closes. Messages received but not yet handed over
// then go back to the front of their list; deliveries handed over stay
// settleable until Close, and are kept alive meanwhile.
//
// Queues bound to a fanout exchange (ExchangeType "fanout", or an
// exchange DeclareExchange made fanout) are consumed as kombu does, by
// PSUBSCRIBE (see fanout.go): Consume returns once Redis has confirmed the
// subscription, so whatever is published afterwards is received; their
// deliveries need no Ack (it does nothing), the prefetch does not apply,
// and what is published while the subscription is down is lost. Both
// kinds of queue may be consumed in one call, on one Go channel.
//
// Several Consume calls may run at once; the prefetch (this call's or the
// latest SetPrefetch) is one value, applied to each call's deliveries
// separately.
func (b *Broker) Consume(ctx context.Context, queues []broker.Queue, prefetch int) (<-chan *broker.Delivery, error) {
	if len(queues) == 0 {
		return nil, errors.New("redis: consume: no queues")
	}
	if prefetch < 0 {
		return nil, fmt.Errorf("redis: prefetch %d is negative", prefetch)
	}
	queues = b.resolve(queues)
	var names []string
	var fanouts []broker.Queue
	for _, q := range queues {
		if q.Kind() == "fanout" {
			fanouts = append(fanouts, q)
			continue
		}
		if !slices.Contains(names, q.Name) {
			names = append(names, q.Name)
		}
	}
	if err := b.Declare(ctx, queues...); err != nil {
		return nil, err
	}
	if err := b.SetPrefetch(prefetch); err != nil {
		return nil, err
	}
	var s *subscriber
	if len(fanouts) > 0 {
		// Subscribed before Consume returns: a message published after
		// that reaches this consumer (PUB/SUB keeps nothing for later).
		s = newSubscriber(ctx, b, fanouts)
		if err := s.subscribe(); err != nil {
			s.cancel()
			return nil, err
		}
	}
	var c *consumer
	if len(names) > 0 {
		c = newConsumer(ctx, b, names)
	}
	// Started under mu, so Close either sees them (and stops them) or has
	// already begun, in which case they never start.
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isClosed() {
		if s != nil {
			s.abort()
		}
		if c != nil {
			c.cancel()
		}
		return nil, broker.ErrClosed
	}
	var out chan *broker.Delivery
	if s != nil && c != nil {
		// One Go channel for both, closed by whichever stops last.
		var running atomic.Int32
		running.Store(2)
		release := func() {
			if running.Add(-1) == 0 {
				close(s.out)
			}
		}
		c.out, c.closeOut, s.closeOut = s.out, release, release
	}
	b.keepBindings(ctx, queues)
	if s != nil {
		b.subs[s] = struct{}{}
		s.start(&b.wg)
		out = s.out
	}
	if c != nil {
		b.consumers[c] = struct{}{}
		c.start(&b.wg)
		out = c.out
		if b.restorer == nil && b.opts.RestoreInterval > 0 {
			b.restorer = newRestorer(restorerParams{b: b, every: b.opts.RestoreInterval})
			b.restorer.start(&b.wg)
		}
	}
	return out, nil
}

// removeConsumer forgets a consumer that has ended.
func (b *Broker) removeConsumer(c *consumer) {
	b.mu.Lock()
	delete(b.consumers, c)
	b.mu.Unlock()
	c.cancel()
}

// SetPrefetch changes how many deliveries each consumer may have
// unsettled (0 = unlimited), kombu's emulated basic_qos. Celery raises it
// by one per ETA task it holds, so calls are frequent and cheap: nothing
// is sent to Redis, waiting consumers are woken.
func (b *Broker) SetPrefetch(n int) error {
	if n < 0 {
		return fmt.Errorf("redis: prefetch %d is negative", n)
	}
	b.prefetch.Store(int64(n))
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.consumers {
		c.poke()
	}
	return nil
}

// Publish stores p as kombu's basic_publish does. The envelope is kombu's
// (protocol.Envelope: base64 body, a fresh UUID4 delivery_tag,
// delivery_info with the exchange and routing key as given). Then, by
// exchange: "" LPUSHes to the list of the queue named by the routing key
// (always routable, as kombu); a fanout exchange (declared in this
// process, or Celery's celeryev and celery.pidbox) is a PUBLISH on
// "/<db>.<exchange>[/<routing key>]" that reaches only subscribers
// connected now; any other exchange LPUSHes to every queue its binding set
// matches, in one transaction. The list is chosen by priority (clamped to
// 0..9, largest bucket <= p).
//
// With p.Mandatory a message that reaches no queue (no matching binding,
// or no subscriber on a fanout channel) is broker.ErrUnroutable; without,
// it is dropped as kombu drops it. During an outage Publish waits for
// Redis, bounded by ctx; a push whose reply was lost is sent again, so
// delivery is at least once.
func (b *Broker) Publish(ctx context.Context, p broker.Publishing) error {
	if b.isClosed() {
		return broker.ErrClosed
	}
	env := protocol.Envelope{Raw: p.Raw, Exchange: p.Exchange, RoutingKey: p.RoutingKey, DeliveryTag: uuid.NewString()}
	data, err := env.Marshal()
	if err != nil {
		return fmt.Errorf("redis: publish: %w", err)
	}
	fanout := p.Exchange != "" && b.exchangeType(p.Exchange) == "fanout"
	unroutable := false
	err = b.retry(ctx, func(ctx context.Context) error {
		unroutable = false
		if fanout {
			n, err := b.client.Publish(ctx, b.keys.fanout(p.Exchange, p.RoutingKey), data).Result()
			unroutable = err == nil && n == 0
			return err
		}
		queues, err := b.route(ctx, p.Exchange, p.RoutingKey)
		if err != nil {
			return err
		}
		switch {
		case len(queues) == 0:
			unroutable = true
			return nil
		case len(queues) == 1 && b.opts.WaitReplicas == 0:
			return b.client.LPush(ctx, b.keys.listFor(queues[0], p.Properties.Priority), data).Err()
		}
		var tx redis.Cmdable = b.client
		single, _ := b.client.(*redis.Client)
		var conn *redis.Conn
		if b.opts.WaitReplicas > 0 && single != nil {
			conn = single.Conn() // WAIT counts this connection's writes
			defer conn.Close()
			tx = conn
		}
		if len(queues) == 1 {
			err = tx.LPush(ctx, b.keys.listFor(queues[0], p.Properties.Priority), data).Err()
		} else {
			var cmds []redis.Cmder
			cmds, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				for _, q := range queues {
					pipe.LPush(ctx, b.keys.listFor(q, p.Properties.Priority), data)
				}
				return nil
			})
			for _, c := range cmds { // EXECABORT: say why, NOREPLICAS is retried
				if err != nil && isTransientReply(c.Err()) {
					err = c.Err()
				}
			}
		}
		if err == nil && conn != nil {
			var n int64
			if n, err = conn.Wait(ctx, b.opts.WaitReplicas, b.opts.WaitTimeout).Result(); err == nil && n < int64(b.opts.WaitReplicas) {
				return fmt.Errorf("%w: %d of %d replicas have it", errNotReplicated, n, b.opts.WaitReplicas)
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("redis: publish to exchange %q, routing key %q: %w", p.Exchange, p.RoutingKey, err)
	}
	if unroutable && p.Mandatory {
		return fmt.Errorf("redis: publish to exchange %q, routing key %q: %w", p.Exchange, p.RoutingKey, broker.ErrUnroutable)
	}
	return nil
}

// Connected reports whether Redis is reachable, for health checks: false
// once commands have failed to reach it for a second with no reply in
// between, true again at the next reply.
func (b *Broker) Connected() bool {
	return !b.isClosed() && b.health.up()
}

// Reconnects returns how many outages (see Connected) ended.
func (b *Broker) Reconnects() int64 {
	return b.health.reconnects.Load()
}

// Close stops consuming (the Go channels of Consume are closed), puts
// every delivery this process received and did not settle back at the
// front of its list (kombu's restore_at_shutdown), makes a last attempt at
// settles deferred by an outage, unbinds auto-delete fanout queues, stops
// the background goroutines and, if Dial created the client, closes it. A
// delivery given back this way answers Ack and Reject with
// broker.ErrStaleDelivery. Close is idempotent; afterwards Publish,
// Declare and Consume return broker.ErrClosed. If Redis is unreachable,
// what could not be given back stays in unacked, and the visibility
// timeout brings it back.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		close(b.closing)
		cs := make([]*consumer, 0, len(b.consumers))
		for c := range b.consumers {
			cs = append(cs, c)
		}
		ss := make([]*subscriber, 0, len(b.subs))
		for s := range b.subs {
			ss = append(ss, s)
		}
		r := b.restorer
		b.mu.Unlock()
		for _, c := range cs {
			c.shutdown()
		}
		for _, s := range ss {
			s.shutdown()
		}
		if r != nil {
			r.shutdown()
		}
		ctx, cancel := opContext()
		defer cancel()
		b.restoreLive(ctx)
		b.keeper.shutdown(ctx)
		b.unbindAutoDelete(ctx)
		b.wg.Wait()
		if b.owns {
			b.client.Close()
		}
	})
	return nil
}

// unbindAutoDelete removes the bindings and lists of auto-delete fanout
// queues, as kombu's channel close does.
func (b *Broker) unbindAutoDelete(ctx context.Context) {
	b.mu.Lock()
	qs := b.autoDel
	b.mu.Unlock()
	if len(qs) == 0 {
		return
	}
	_, err := b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, q := range qs {
			m := bindingMember(q.Key(), "", q.Name)
			p.SRem(ctx, b.keys.binding(q.ExchangeName()), m)
			p.SRem(ctx, b.keys.permanent(q.ExchangeName()), m)
			p.Del(ctx, b.keys.lists(q.Name)...)
		}
		return nil
	})
	if err != nil {
		b.logger.Warn("redis: removing auto-delete fanout bindings", "error", err)
	}
}
