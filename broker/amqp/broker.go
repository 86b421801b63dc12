// Package amqp is the RabbitMQ (AMQP 0-9-1) transport: it declares
// Celery's topology, consumes with manual acknowledgement and prefetch,
// and publishes with publisher confirms, surviving connection loss.
//
// A Broker owns one connection. Background components, one per file,
// keep it useful: the connector reconnects with backoff and redeclares
// what was declared; each Consume runs a consumer that resubscribes on a
// new channel and keeps delivering on the same Go channel; the publisher
// reopens its confirm-mode channel and resends what an outage interrupted.
//
// Header values cross the wire as AMQP field-table types and arrive as the
// Go types package protocol decodes; see Broker.Publish for the mapping.
// The transport also repairs, on the fly, the 64-bit integer type py-amqp
// writes ('L'), which amqp091-go cannot read (see fixConn).
package amqp

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/internal/backoff"
)

// ErrForeignDelivery is returned by Ack and Reject for a delivery that
// another transport or Broker produced.
var ErrForeignDelivery = errors.New("amqp: delivery is not from this broker")

// ErrAlreadySettled is returned by Ack and Reject for a delivery already
// acked or rejected: RabbitMQ answers a second ack by closing the channel
// (PRECONDITION_FAILED, unknown delivery tag), which would requeue every
// other delivery in flight.
var ErrAlreadySettled = errors.New("amqp: delivery already acked or rejected")

// Config configure a Broker. The zero value gives the defaults.
type Config struct {
	// Logger receives connection events; nil means slog.Default().
	Logger *slog.Logger
	// Reconnect backoff: the first delay and the longest (defaults 100ms
	// and 5s); each delay doubles the last, with jitter.
	MinBackoff, MaxBackoff time.Duration
	// Heartbeat is the AMQP heartbeat interval (default 60s); a
	// "heartbeat" query parameter in the URL takes precedence.
	Heartbeat time.Duration
	// GlobalQoS applies the prefetch per channel (basic.qos global=true),
	// as Celery does on RabbitMQ >= 3.3 with classic queues; false applies
	// it per consumer, which quorum queues require. RabbitMQ fixes a
	// per-consumer limit when the consumer starts, so with false a
	// SetPrefetch takes effect at the next resubscription (reconnect), not
	// at once: that is also what Celery gets with quorum queues.
	GlobalQoS bool
	// Name is shown as the connection name in RabbitMQ's management UI
	// and rabbitmqctl list_connections client_properties.
	Name string
	// TLSConfig is used for amqps:// URLs; nil verifies the server
	// against the system roots and the URL's host name.
	TLSConfig *tls.Config
	// StaticPrefetch keeps the prefetch of the first Consume: later
	// SetPrefetch calls change nothing. Celery's worker runs quorum
	// queues so (per-consumer QoS, "Prefetch count is now static"), and
	// with GlobalQoS false a raise would otherwise take effect at the
	// next reconnect only.
	StaticPrefetch bool
	// FailoverStrategy orders a URL list (amqp://h1//;amqp://h2//):
	// RoundRobin (default) or Shuffle, Celery's broker_failover_strategy.
	FailoverStrategy string
}

func (o *Config) defaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.Heartbeat <= 0 {
		o.Heartbeat = 60 * time.Second
	}
}

// Broker is a connection to RabbitMQ that reconnects by itself. It is safe
// for concurrent use.
type Broker struct {
	opts     Config
	logger   *slog.Logger
	target   target // the first of the list, for messages
	failover *failover
	tagID    string // consumer tag prefix, unique per Broker

	conn *connector
	pub  *publisher

	// declMu orders Declare against the redeclaration after a reconnect.
	declMu    sync.Mutex
	mu        sync.Mutex
	topology  []broker.Queue    // redeclared after every reconnect
	exchanges []broker.Exchange // from DeclareExchange; redeclared first
	consumers map[*consumer]struct{}
	tags      atomic.Uint64

	// qosMu serializes basic.qos so the value left in force on every
	// consuming channel is the last one asked for.
	qosMu       sync.Mutex
	prefetch    int
	prefetchSet bool // for StaticPrefetch
	channels    map[*consumeChannel]struct{}

	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// Dial connects to the broker at url, a Celery broker URL:
// amqp://user:pass@host:5672//, where "//" (or "/" or nothing) is the
// vhost "/"; pyamqp:// is amqp://; amqps:// uses TLS. The first connection
// is made here, once: an unreachable host or a refused login is an error,
// and retrying is the caller's choice. Later losses are repaired in the
// background until Close. A ";"-separated list (amqp://h1//;amqp://h2//,
// Celery's broker_url list) names the nodes of one cluster: each dial
// tries them in turn, a reconnect starting with the node after the one
// that was lost, in opts.FailoverStrategy's order; the topology is
// declared again on the node reached.
func Dial(ctx context.Context, url string, opts Config) (*Broker, error) {
	opts.defaults()
	ts, err := parseURLs(url)
	if err != nil {
		return nil, err
	}
	fo, err := newFailover(ts, opts.FailoverStrategy)
	if err != nil {
		return nil, err
	}
	t := ts[0]
	var id [6]byte
	_, _ = rand.Read(id[:])
	b := &Broker{
		opts:      opts,
		logger:    opts.Logger,
		target:    t,
		failover:  fo,
		tagID:     hex.EncodeToString(id[:]),
		consumers: make(map[*consumer]struct{}),
		channels:  make(map[*consumeChannel]struct{}),
		closing:   make(chan struct{}),
	}
	b.conn = newConnector(connectorParams{
		logger:     b.logger,
		dial:       b.dial,
		redeclare:  b.redeclare,
		minBackoff: opts.MinBackoff,
		maxBackoff: opts.MaxBackoff,
	})
	b.pub = newPublisher(publisherParams{
		logger: b.logger,
		conn:   b.conn,
		retry:  b.backoff,
	})
	if err := b.conn.connect(ctx); err != nil {
		b.conn.cancel()
		return nil, fmt.Errorf("amqp: dial %s: %w", t.redacted, err)
	}
	b.conn.start(&b.wg)
	return b, nil
}

// dialTarget makes one connection to t. TLS is done here rather than by
// amqp091 so that fixConn sees plaintext frames.
func (b *Broker) dialTarget(ctx context.Context, t target) (*amqp.Connection, error) {
	const handshakeTimeout = 30 * time.Second
	props := amqp.NewConnectionProperties()
	if b.opts.Name != "" {
		props.SetClientConnectionName(b.opts.Name)
	}
	var stops []func() bool
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	cfg := amqp.Config{
		Vhost:      t.vhost,
		Heartbeat:  b.opts.Heartbeat,
		Properties: props,
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: handshakeTimeout}
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Cancelling ctx aborts the handshake too; amqp091 clears the
			// deadline once the connection is open.
			stops = append(stops, context.AfterFunc(ctx, func() { conn.Close() }))
			if err := conn.SetDeadline(time.Now().Add(handshakeTimeout)); err != nil {
				conn.Close()
				return nil, err
			}
			if t.tls {
				cfg := &tls.Config{}
				if b.opts.TLSConfig != nil {
					cfg = b.opts.TLSConfig.Clone()
				}
				if cfg.ServerName == "" {
					cfg.ServerName = t.host
				}
				tc := tls.Client(conn, cfg)
				if err := tc.HandshakeContext(ctx); err != nil {
					conn.Close()
					return nil, err
				}
				conn = tc
			}
			return &fixConn{Conn: conn}, nil
		},
	}
	return amqp.DialConfig(t.dialURL, cfg)
}

func (b *Broker) backoff(attempt int) time.Duration {
	return backoff.Delay(attempt, b.opts.MinBackoff, b.opts.MaxBackoff)
}

func (b *Broker) isClosed() bool {
	select {
	case <-b.closing:
		return true
	default:
		return false
	}
}

func (b *Broker) consumerTag() string {
	return fmt.Sprintf("gocelery-%s-%d", b.tagID, b.tags.Add(1))
}

// DeclareExchange declares an exchange on its own (exchange.declare:
// durable unless Transient, auto-delete as given; an amq.* name is
// RabbitMQ's own and only checked), as kombu's Exchange.declare does before
// remote-control and event publishes. Declare it exactly as Celery does
// (see broker.Exchange): RabbitMQ refuses a redeclaration with other
// arguments (PRECONDITION_FAILED). The exchange is remembered: it is
// declared again after every reconnect (a transient one does not survive
// a RabbitMQ restart), and a queue bound to it later is bound to it as
// declared here rather than as the queue's Transient implies. The context
// bounds the wait for a connection.
func (b *Broker) DeclareExchange(ctx context.Context, ex broker.Exchange) error {
	if b.isClosed() {
		return broker.ErrClosed
	}
	if ex.Name == "" {
		return errors.New("amqp: declare exchange: the default exchange cannot be declared")
	}
	switch ex.Kind {
	case "direct", "topic", "fanout", "headers":
	default:
		return fmt.Errorf("amqp: declare exchange %q: unknown kind %q", ex.Name, ex.Kind)
	}
	for {
		s, err := b.conn.wait(ctx)
		if err != nil {
			return err
		}
		b.declMu.Lock()
		err = func() error {
			ch, err := s.conn.Channel()
			if err != nil {
				return fmt.Errorf("amqp: declare exchange %q: %w", ex.Name, err)
			}
			defer ch.Close()
			return declareExchangeOn(ch, ex)
		}()
		if err == nil {
			b.rememberExchange(ex)
		}
		b.declMu.Unlock()
		if err == nil || !s.conn.IsClosed() {
			return err
		}
	}
}

// declareExchangeOn declares ex on ch; amq.* names are only checked, since
// RabbitMQ refuses to declare them.
func declareExchangeOn(ch *amqp.Channel, ex broker.Exchange) error {
	var err error
	if strings.HasPrefix(ex.Name, "amq.") {
		err = ch.ExchangeDeclarePassive(ex.Name, ex.Kind, true, false, false, false, nil)
	} else {
		err = ch.ExchangeDeclare(ex.Name, ex.Kind, !ex.Transient, ex.AutoDelete, false, false, nil)
	}
	if err != nil {
		if m := mismatchOf(err); m != nil {
			err = m // a *MismatchError in the chain, for the worker's hint
		}
		if e := (*amqp.Error)(nil); errors.As(err, &e) && e.Code == amqp.PreconditionFailed {
			return fmt.Errorf("amqp: declare exchange %q (%s, durable=%t, auto-delete=%t) differently from its existing declaration; "+
				"declare it as Celery does, with DeclareExchange before the queues bound to it: %w",
				ex.Name, ex.Kind, !ex.Transient, ex.AutoDelete, err)
		}
		return fmt.Errorf("amqp: declare exchange %q: %w", ex.Name, err)
	}
	return nil
}

func (b *Broker) rememberExchange(ex broker.Exchange) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, old := range b.exchanges {
		if old.Name == ex.Name {
			b.exchanges[i] = ex
			return
		}
	}
	b.exchanges = append(b.exchanges, ex)
}

// exchangeOf is the exchange q's declaration declares: the one given to
// DeclareExchange when there was one (so a durable event exchange is not
// redeclared transient for a transient queue), else kombu's default for a
// queue, the queue's type with the queue's durability, not auto-delete.
func (b *Broker) exchangeOf(q broker.Queue) broker.Exchange {
	name := q.ExchangeName()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ex := range b.exchanges {
		if ex.Name == name {
			return ex
		}
	}
	return broker.Exchange{Name: name, Kind: q.Kind(), Transient: q.Transient}
}

// Declare declares each queue as kombu does: its exchange (see exchangeOf:
// as given to DeclareExchange, else durable unless Transient; exchanges
// named amq.* are RabbitMQ's own and only checked), the queue (durable
// unless Transient, AutoDelete, Exclusive, x-max-priority, x-queue-type
// quorum, Arguments such as x-expires and x-message-ttl) and the binding
// with q.Key() (ignored by a fanout exchange). The queues are remembered
// and declared again after every reconnect: an exclusive queue, which
// RabbitMQ deletes with the connection that declared it, comes back with
// the new one. The context bounds the wait for a connection; a
// declaration under way is not interrupted.
func (b *Broker) Declare(ctx context.Context, qs ...broker.Queue) error {
	if b.isClosed() {
		return broker.ErrClosed
	}
	for _, q := range qs {
		if q.Name == "" {
			return errors.New("amqp: declare: a queue needs a name (server-named queues cannot be redeclared)")
		}
	}
	for {
		s, err := b.conn.wait(ctx)
		if err != nil {
			return err
		}
		// Under declMu, as the reconnect's redeclare is: either that one
		// sees these queues remembered, or this one fails on the lost
		// connection and is done again on the new one.
		b.declMu.Lock()
		err = b.declareAll(ctx, s.conn, qs)
		if err == nil {
			b.remember(qs)
		}
		b.declMu.Unlock()
		if err == nil || !s.conn.IsClosed() {
			return err
		}
	}
}

func (b *Broker) declareAll(ctx context.Context, conn *amqp.Connection, qs []broker.Queue) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("amqp: declare: %w", err)
	}
	defer ch.Close()
	for _, q := range qs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := declareOn(ch, q, b.exchangeOf(q)); err != nil {
			return err
		}
	}
	return nil
}

// sameBinding reports whether two declarations are the same queue, exchange
// and binding, the unit a redeclaration replaces.
func sameBinding(a, b broker.Queue) bool {
	return a.Name == b.Name && a.ExchangeName() == b.ExchangeName() && a.Key() == b.Key()
}

func (b *Broker) remember(qs []broker.Queue) {
	b.mu.Lock()
	defer b.mu.Unlock()
next:
	for _, q := range qs {
		for i, old := range b.topology {
			if sameBinding(old, q) {
				b.topology[i] = q
				continue next
			}
		}
		b.topology = append(b.topology, q)
	}
}

// redeclare restores the remembered topology on a new connection. A queue
// the broker now refuses (declared differently meanwhile) is logged and
// skipped, so the rest still works; a lost connection is an error.
func (b *Broker) redeclare(conn *amqp.Connection) error {
	b.declMu.Lock()
	defer b.declMu.Unlock()
	b.mu.Lock()
	qs := append([]broker.Queue(nil), b.topology...)
	exs := append([]broker.Exchange(nil), b.exchanges...)
	b.mu.Unlock()
	var ch *amqp.Channel
	defer func() {
		if ch != nil {
			ch.Close()
		}
	}()
	open := func() error {
		if ch == nil || ch.IsClosed() {
			var err error
			if ch, err = conn.Channel(); err != nil {
				return fmt.Errorf("amqp: redeclare: %w", err)
			}
		}
		return nil
	}
	// Exchanges first: a queue bound to one needs it to exist.
	for _, ex := range exs {
		if err := open(); err != nil {
			return err
		}
		if err := declareExchangeOn(ch, ex); err != nil {
			if conn.IsClosed() {
				return err
			}
			b.logger.Error("amqp: redeclaring an exchange after reconnect failed", "exchange", ex.Name, "error", err)
		}
	}
	for _, q := range qs {
		if err := open(); err != nil {
			return err
		}
		if err := declareOn(ch, q, b.exchangeOf(q)); err != nil {
			if conn.IsClosed() {
				return err
			}
			b.logger.Error("amqp: redeclaring a queue after reconnect failed", "queue", q.Name, "error", err)
		}
	}
	return nil
}

// declareOn declares q's exchange (ex, from exchangeOf), the queue and the
// binding on ch.
func declareOn(ch *amqp.Channel, q broker.Queue, ex broker.Exchange) error {
	args := make(map[string]any, len(q.Arguments)+2)
	for k, v := range q.Arguments {
		args[k] = v
	}
	if q.MaxPriority > 0 {
		args["x-max-priority"] = q.MaxPriority
	}
	if q.Quorum {
		args["x-queue-type"] = "quorum"
	}
	table, err := toTable(args)
	if err != nil {
		return fmt.Errorf("amqp: declare queue %q: %w", q.Name, err)
	}
	if len(q.Bindings) > 0 {
		return declareBindingsOn(ch, q, table)
	}
	if ex.Name != "" {
		if err := declareExchangeOn(ch, ex); err != nil {
			return err
		}
	}
	if _, err := ch.QueueDeclare(q.Name, !q.Transient, q.AutoDelete, q.Exclusive, false, table); err != nil {
		return queueError(q.Name, err)
	}
	if ex.Name != "" {
		// A fanout exchange ignores the key; kombu binds with "" there.
		if err := ch.QueueBind(q.Name, q.Key(), ex.Name, false, nil); err != nil {
			return fmt.Errorf("amqp: bind queue %q to %q (key %q): %w", q.Name, ex.Name, q.Key(), err)
		}
	}
	return nil
}

// Consume declares the queues, then on one channel sets the prefetch and
// subscribes to every queue with manual acknowledgement. The returned Go
// channel survives reconnects: after a loss the consumer resubscribes on a
// new channel and keeps delivering on it. It is closed when ctx is done or
// the Broker closes. After ctx is done, deliveries already received can
// still be acked until the Broker closes; those not received yet go back
// to the queue at once.
//
// Several Consume calls may run at once, each on its own channel; the
// prefetch (this call's, or the latest SetPrefetch) is one value applied
// to every consuming channel.
func (b *Broker) Consume(ctx context.Context, queues []broker.Queue, prefetch int) (<-chan *broker.Delivery, error) {
	if len(queues) == 0 {
		return nil, errors.New("amqp: consume: no queues")
	}
	if err := checkPrefetch(prefetch); err != nil {
		return nil, err
	}
	if err := b.Declare(ctx, queues...); err != nil {
		return nil, err
	}
	if err := b.SetPrefetch(prefetch); err != nil {
		return nil, err
	}
	c := newConsumer(ctx, b, append([]broker.Queue(nil), queues...))
	cc, subs, err := c.setup(ctx, false)
	if err != nil {
		c.cancel()
		return nil, err
	}
	// Started under mu, so Close either sees it (and stops it) or has
	// already begun, in which case it never starts.
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isClosed() {
		b.retire(cc)
		c.cancel()
		return nil, broker.ErrClosed
	}
	b.consumers[c] = struct{}{}
	c.start(&b.wg, cc, subs)
	return c.out, nil
}

// removeConsumer forgets a consumer that has ended.
func (b *Broker) removeConsumer(c *consumer) {
	b.mu.Lock()
	delete(b.consumers, c)
	b.mu.Unlock()
	c.cancel()
}

func checkPrefetch(n int) error {
	if n < 0 || n > math.MaxUint16 {
		return fmt.Errorf("amqp: prefetch %d out of range 0..65535", n)
	}
	return nil
}

// SetPrefetch changes the prefetch count (0 = unlimited) of every
// consuming channel, now and after reconnects. Celery raises it by one per
// ETA task it holds, so calls are frequent: a call that changes nothing
// sends nothing, and concurrent calls leave the last value in force. See
// Config.GlobalQoS for when RabbitMQ applies it.
func (b *Broker) SetPrefetch(n int) error {
	if err := checkPrefetch(n); err != nil {
		return err
	}
	b.qosMu.Lock()
	defer b.qosMu.Unlock()
	if b.opts.StaticPrefetch && b.prefetchSet {
		return nil
	}
	b.prefetch, b.prefetchSet = n, true
	var errs []error
	for cc := range b.channels {
		if cc.applied == n {
			continue
		}
		if err := cc.ch.Qos(n, 0, b.opts.GlobalQoS); err != nil {
			if cc.ch.IsClosed() {
				continue // the resubscription applies the new value
			}
			errs = append(errs, err)
			continue
		}
		cc.applied = n
		cc.acks.window.Store(int64(n))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("amqp: set prefetch %d: %w", n, err)
	}
	return nil
}

// applyPrefetch sets the current prefetch on a new consuming channel and
// registers it for later SetPrefetch calls, in one step so none is missed.
func (b *Broker) applyPrefetch(cc *consumeChannel) error {
	b.qosMu.Lock()
	defer b.qosMu.Unlock()
	if err := cc.ch.Qos(b.prefetch, 0, b.opts.GlobalQoS); err != nil {
		return fmt.Errorf("amqp: basic.qos %d: %w", b.prefetch, err)
	}
	cc.applied = b.prefetch
	cc.acks.window.Store(int64(b.prefetch))
	b.channels[cc] = struct{}{}
	return nil
}

// retire marks a consuming channel stale and closes it; the broker
// requeues what it had not been told about.
func (b *Broker) retire(cc *consumeChannel) {
	cc.stale.Store(true)
	b.qosMu.Lock()
	delete(b.channels, cc)
	b.qosMu.Unlock()
	if !cc.ch.IsClosed() {
		_ = cc.ch.Close()
	}
}

// flushAcks sends the acks the consuming channels still defer (see
// ackFrontier), waiting at most limit: a broker that stopped reading
// cannot hold Close.
func (b *Broker) flushAcks(limit time.Duration) {
	b.qosMu.Lock()
	ccs := make([]*consumeChannel, 0, len(b.channels))
	for cc := range b.channels {
		ccs = append(ccs, cc)
	}
	b.qosMu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, cc := range ccs {
			_ = cc.acks.flush()
		}
	}()
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// Ack acknowledges d: the broker forgets the message. A delivery from a
// channel that has since been lost returns broker.ErrStaleDelivery: the
// broker has requeued it and will deliver it again.
func (b *Broker) Ack(d *broker.Delivery) error {
	return b.settle(d, func(cc *consumeChannel, tag uint64) error { return cc.acks.ack(tag, false) })
}

// AckDeferred acknowledges d like Ack, except that the ack may wait up to
// 2*ackDefer (1 ms) to be coalesced with others into one multiple ack
// (see ackFrontier). Close sends it first.
func (b *Broker) AckDeferred(d *broker.Delivery) error {
	return b.settle(d, func(cc *consumeChannel, tag uint64) error { return cc.acks.ack(tag, true) })
}

// Reject gives d back to the queue (requeue) or drops it, to the queue's
// dead-letter exchange when it has one. Errors are as for Ack.
func (b *Broker) Reject(d *broker.Delivery, requeue bool) error {
	return b.settle(d, func(cc *consumeChannel, tag uint64) error { return cc.reject(tag, requeue) })
}

// Stale reports whether d came on a channel that is gone: RabbitMQ has
// requeued it and delivers it again, so running this copy would run it
// twice (the worker drops it, as Celery drops its reserved requests and
// timer on connection loss).
func (b *Broker) Stale(d *broker.Delivery) bool {
	ref, ok := d.Private.(*deliveryRef)
	return ok && (ref.cc.stale.Load() || ref.cc.ch.IsClosed())
}

func (b *Broker) settle(d *broker.Delivery, op func(*consumeChannel, uint64) error) error {
	ref, ok := d.Private.(*deliveryRef)
	if !ok || ref.cc.b != b {
		return ErrForeignDelivery
	}
	// A closed channel's deliveries are requeued by the broker. Checked
	// here, not left to the frame's error: a deferred ack sends no frame
	// now, and the caller must still learn that the task is not its to run.
	if ref.cc.stale.Load() || ref.cc.ch.IsClosed() {
		return broker.ErrStaleDelivery
	}
	if !ref.settled.CompareAndSwap(false, true) {
		return ErrAlreadySettled
	}
	defer ref.cc.settle()
	if err := op(ref.cc, ref.tag); err != nil {
		if errors.Is(err, amqp.ErrClosed) {
			return broker.ErrStaleDelivery
		}
		return fmt.Errorf("amqp: settle delivery %d: %w", ref.tag, err)
	}
	return nil
}

// Publish sends p on a confirm-mode channel and returns once the broker
// has taken responsibility for it (basic.ack), or fails: a basic.nack is
// ErrNacked, and with p.Mandatory a message no queue took is
// broker.ErrUnroutable. During an outage Publish waits for the reconnect,
// bounded by ctx, and a message whose confirm was lost with the connection
// is sent again (at least once). Mandatory publishes are serialized, since
// a basic.return does not say which message it returns.
//
// Headers are converted to AMQP field-table types as toTable documents:
// int becomes a 32-bit field when it fits (else 64-bit), *big.Int beyond
// int64 and protocol.Decimal beyond the AMQP decimal (32-bit unscaled
// value) are errors wrapping ErrHeaderValue rather than silently changed
// types, time.Time loses its fraction of a second. Of Properties.Extra,
// message_id, type, user_id, app_id and timestamp are sent; other keys
// have no AMQP property and are dropped, as py-amqp drops them.
func (b *Broker) Publish(ctx context.Context, p broker.Publishing) error {
	if b.isClosed() {
		return broker.ErrClosed
	}
	m, err := publishingOf(&p)
	if err != nil {
		return fmt.Errorf("amqp: publish: %w", err)
	}
	return b.pub.publish(ctx, p.Exchange, p.RoutingKey, p.Mandatory, &m)
}

// PublishAsync writes p and returns without waiting for the broker's
// confirm, so one goroutine can keep many publishes in flight (the bulk
// path of producer.SendTaskAsync). wait waits for the confirm and returns
// what Publish would have: nil, ErrNacked, broker.ErrUnroutable for a
// mandatory message no queue took, or ErrUnconfirmed when wait's context
// ends first. A message whose connection drops before its confirm is sent
// again by wait, so delivery is at least once only if wait is called; a
// publish never waited on is as Celery's default, unconfirmed.
func (b *Broker) PublishAsync(ctx context.Context, p broker.Publishing) (wait func(context.Context) error, err error) {
	if b.isClosed() {
		return nil, broker.ErrClosed
	}
	m, err := publishingOf(&p)
	if err != nil {
		return nil, fmt.Errorf("amqp: publish: %w", err)
	}
	return b.pub.publishAsync(ctx, p.Exchange, p.RoutingKey, p.Mandatory, &m)
}

// Connected reports whether the connection is up, for health checks.
func (b *Broker) Connected() bool {
	return !b.isClosed() && b.conn.current() != nil
}

// Reconnects returns how many times the connection was re-established.
func (b *Broker) Reconnects() int64 {
	return b.conn.reconnects.Load()
}

// Close stops consuming (the Go channels of Consume are closed), closes
// the connection, which closes its channels and makes the broker requeue
// unacknowledged deliveries, and waits for the background goroutines. It
// is idempotent; afterwards Publish, Declare and Consume return
// broker.ErrClosed.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		close(b.closing)
		cs := make([]*consumer, 0, len(b.consumers))
		for c := range b.consumers {
			cs = append(cs, c)
		}
		b.mu.Unlock()
		b.flushAcks(time.Second)
		// The connection goes first: nothing can then block on a broker
		// that stopped answering.
		b.conn.shutdown()
		for _, c := range cs {
			c.shutdown()
		}
		b.pub.shutdown()
		b.wg.Wait()
	})
	return nil
}
