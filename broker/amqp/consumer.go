package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/internal/backoff"
)

// consumeChannel is one generation of a consumer's channel. Every
// delivery points to the generation it came from, because AMQP delivery
// tags are numbers local to a channel: tag 7 of a lost channel is another
// message (or none) on its successor, and acking it there would settle the
// wrong message or make RabbitMQ close the channel.
type consumeChannel struct {
	b      *Broker
	ch     *amqp.Channel
	closed chan *amqp.Error

	stale       atomic.Bool  // retired: acks fail with ErrStaleDelivery
	outstanding atomic.Int64 // handed out, not settled
	settled     chan struct{}

	applied int // prefetch in force on ch; guarded by Broker.qosMu

	acks ackFrontier
}

// reject sends basic.reject for tag, then marks it settled.
func (cc *consumeChannel) reject(tag uint64, requeue bool) error {
	if err := cc.ch.Reject(tag, requeue); err != nil {
		return err
	}
	cc.acks.mark(tag)
	return nil
}

// deliveryRef is Delivery.Private: the generation and tag to settle with.
type deliveryRef struct {
	cc      *consumeChannel
	tag     uint64
	settled atomic.Bool
}

// settle is called once per delivery handed out.
func (cc *consumeChannel) settle() {
	cc.outstanding.Add(-1)
	select {
	case cc.settled <- struct{}{}:
	default:
	}
}

// subscription is one basic.consume on a consumeChannel.
type subscription struct {
	queue      string
	tag        string
	deliveries <-chan amqp.Delivery
}

// consumer is the background component behind one Consume call. It keeps
// a channel consuming its queues across reconnects and forwards the
// deliveries to out, which stays the same Go channel throughout.
type consumer struct {
	logger *slog.Logger
	b      *Broker
	queues []broker.Queue
	out    chan *broker.Delivery

	// ctx is done when Consume's context is or the broker closes.
	ctx      context.Context
	cancel   context.CancelFunc
	finished chan struct{}
}

func newConsumer(ctx context.Context, b *Broker, queues []broker.Queue) *consumer {
	ctx, cancel := context.WithCancel(ctx)
	return &consumer{
		logger:   b.logger,
		b:        b,
		queues:   queues,
		out:      make(chan *broker.Delivery),
		ctx:      ctx,
		cancel:   cancel,
		finished: make(chan struct{}),
	}
}

// setup opens a channel on the current connection, declares the queues
// (unless Consume just did), applies the prefetch and subscribes to every
// queue.
func (c *consumer) setup(ctx context.Context, declare bool) (*consumeChannel, []subscription, error) {
	s, err := c.b.conn.wait(ctx)
	if err != nil {
		return nil, nil, err
	}
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, nil, fmt.Errorf("amqp: open consuming channel: %w", err)
	}
	cc := &consumeChannel{
		b:       c.b,
		ch:      ch,
		closed:  ch.NotifyClose(make(chan *amqp.Error, 1)),
		settled: make(chan struct{}, 1),
	}
	cc.acks.send = func(tag uint64, multiple bool) error { return ch.Ack(tag, multiple) }
	fail := func(err error) (*consumeChannel, []subscription, error) {
		c.b.retire(cc)
		return nil, nil, err
	}
	// Declared on every (re)subscription: a queue deleted under a live
	// connection (which cancels its consumers) comes back, as with kombu.
	if declare {
		for _, q := range c.queues {
			if err := declareOn(ch, q, c.b.exchangeOf(q)); err != nil {
				return fail(err)
			}
		}
	}
	if err := c.b.applyPrefetch(cc); err != nil {
		return fail(err)
	}
	subs := make([]subscription, 0, len(c.queues))
	for _, q := range c.queues {
		tag := c.b.consumerTag()
		ds, err := ch.Consume(q.Name, tag, false, false, false, false, nil)
		if err != nil {
			return fail(fmt.Errorf("amqp: consume %q: %w", q.Name, err))
		}
		subs = append(subs, subscription{queue: q.Name, tag: tag, deliveries: ds})
	}
	return cc, subs, nil
}

func (c *consumer) start(wg *sync.WaitGroup, cc *consumeChannel, subs []subscription) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(c.finished)
		defer c.b.removeConsumer(c)
		for {
			if c.pump(cc, subs) {
				c.stop(cc, subs)
				return
			}
			c.b.retire(cc)
			if !c.b.isClosed() {
				c.logger.Warn("amqp: consuming channel lost, resubscribing", "queues", len(c.queues))
			}
			var ok bool
			if cc, subs, ok = c.resume(); !ok {
				close(c.out)
				return
			}
		}
	}()
}

// shutdown stops consuming and waits for the goroutines to end.
func (c *consumer) shutdown() {
	c.cancel()
	<-c.finished
}

// pump forwards deliveries until ctx is done (true) or the channel or
// one of its subscriptions is lost (false).
func (c *consumer) pump(cc *consumeChannel, subs []subscription) bool {
	stop := make(chan struct{})
	lost := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Go(func() {
			defer once.Do(func() { close(lost) })
			c.forward(cc, s, stop)
		})
	}
	stopped := false
	select {
	case <-c.ctx.Done():
		stopped = true
	case <-lost:
	}
	close(stop)
	wg.Wait()
	return stopped
}

func (c *consumer) forward(cc *consumeChannel, s subscription, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case d, ok := <-s.deliveries:
			if !ok {
				return
			}
			if cc.ch.IsClosed() {
				return // stale already; the broker requeued it
			}
			bd := newDelivery(cc, s.queue, &d)
			cc.outstanding.Add(1)
			select {
			case c.out <- bd:
			case <-stop:
				// Never handed over: give it back now rather than at close.
				cc.outstanding.Add(-1)
				_ = cc.ch.Nack(d.DeliveryTag, false, true)
				cc.acks.mark(d.DeliveryTag)
				return
			}
		}
	}
}

// stop ends consuming after Consume's context is done. Deliveries already
// handed out stay settleable: the channel stays open until they all are
// acked or rejected, or the broker closes, so a worker shutting down warm
// can ack the tasks it finishes instead of having them redelivered.
func (c *consumer) stop(cc *consumeChannel, subs []subscription) {
	if !c.b.isClosed() {
		for _, s := range subs {
			if err := cc.ch.Cancel(s.tag, false); err != nil {
				continue
			}
			// After basic.cancel-ok amqp091 flushes what it buffered and
			// closes the Go channel: requeue those at once.
			for d := range s.deliveries {
				_ = cc.ch.Nack(d.DeliveryTag, false, true)
				cc.acks.mark(d.DeliveryTag)
			}
		}
	}
	close(c.out)
	for cc.outstanding.Load() > 0 {
		select {
		case <-cc.settled:
		case <-cc.closed:
			cc.closed = nil
			cc.outstanding.Store(0)
		case <-c.b.closing:
			cc.outstanding.Store(0)
		}
	}
	// Deferred acks go out before the channel closes, or the broker would
	// redeliver tasks that ran.
	_ = cc.acks.flush()
	c.b.retire(cc)
}

// resume resubscribes after a loss, with backoff; false means stopped.
func (c *consumer) resume() (*consumeChannel, []subscription, bool) {
	for attempt := 0; ; attempt++ {
		if !backoff.Sleep(c.b.backoff(attempt), c.ctx.Done()) {
			return nil, nil, false
		}
		cc, subs, err := c.setup(c.ctx, true)
		if err == nil {
			return cc, subs, true
		}
		if c.ctx.Err() != nil || errors.Is(err, broker.ErrClosed) {
			return nil, nil, false
		}
		c.logger.Warn("amqp: resubscribing failed", "attempt", attempt+1, "error", err)
	}
}

// deliveryBox allocates a Delivery and its settle state together.
type deliveryBox struct {
	d   broker.Delivery
	ref deliveryRef
}

func newDelivery(cc *consumeChannel, queue string, d *amqp.Delivery) *broker.Delivery {
	box := &deliveryBox{ref: deliveryRef{cc: cc, tag: d.DeliveryTag}}
	box.d = broker.Delivery{
		Raw:         rawOf(d),
		Queue:       queue,
		Exchange:    d.Exchange,
		RoutingKey:  d.RoutingKey,
		Redelivered: d.Redelivered,
		Tag:         strconv.FormatUint(d.DeliveryTag, 10),
		Acker:       cc.b,
		Private:     &box.ref,
	}
	return &box.d
}
