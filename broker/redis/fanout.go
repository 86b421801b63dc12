package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/internal/backoff"
	"github.com/gocelery/gocelery/protocol"
)

// A fanout exchange on Redis is PUB/SUB, as kombu does it: Publish is a
// PUBLISH of the envelope on "/{db}.<exchange>[/<routing key>]", and a
// queue bound to the exchange is a PSUBSCRIBE on the channel its binding
// key names (kombu's _get_subscribe_topic): "/{db}.<exchange>" for the
// key "", "/{db}.<exchange>/<key with '#' made '*'>" otherwise, so a
// monitor bound with "#" subscribes to "/{db}.celeryev/*". Nothing is
// stored: a message reaches the subscribers connected when it is
// published, and none that connect later. There is nothing to
// acknowledge, so Ack and Reject of a fanout delivery do nothing (Celery
// consumes its pidbox and event queues with no_ack=True), and the prefetch
// does not apply: a consumer that does not take its deliveries leaves them
// in Redis's output buffer for the connection, which Redis cuts past
// client-output-buffer-limit pubsub (after which the subscriber
// resubscribes, having lost what was in it).

// fanoutHealthEvery is how long a subscription may stay silent before it
// is pinged: a connection cut without a reset (a dead peer, a network
// partition) is noticed within twice this.
const fanoutHealthEvery = 15 * time.Second

// fanoutDelivery is Delivery.Private for a message received by PUB/SUB.
type fanoutDelivery struct{ b *Broker }

// subscriber is the background component behind the fanout queues of one
// Consume call: one PUB/SUB connection subscribed to their patterns,
// resubscribed after a loss, handing each message over on out.
type subscriber struct {
	b        *Broker
	patterns []string            // prefixed, as sent to PSUBSCRIBE
	routes   map[string][]string // pattern -> queue names
	out      chan *broker.Delivery
	closeOut func()

	mu sync.Mutex
	ps *redis.PubSub // current subscription; nil while resubscribing

	// ctx is done when Consume's context is or the broker closes.
	ctx      context.Context
	cancel   context.CancelFunc
	finished chan struct{}
}

// fanoutTopic is the PSUBSCRIBE pattern of a queue bound to a fanout
// exchange, kombu's _get_subscribe_topic: the binding key with '#'
// replaced by '*' (kombu's _queue_bind does that for fanout exchanges), in
// the publish topic's place. Other glob characters pass through as kombu
// passes them.
func (k keyspace) fanoutTopic(q broker.Queue) string {
	return k.fanout(q.ExchangeName(), strings.ReplaceAll(q.Key(), "#", "*"))
}

func newSubscriber(ctx context.Context, b *Broker, queues []broker.Queue) *subscriber {
	ctx, cancel := context.WithCancel(ctx)
	out := make(chan *broker.Delivery)
	s := &subscriber{
		b:        b,
		routes:   make(map[string][]string),
		out:      out,
		closeOut: func() { close(out) },
		ctx:      ctx,
		cancel:   cancel,
		finished: make(chan struct{}),
	}
	for _, q := range queues {
		p := b.keys.fanoutTopic(q)
		if _, ok := s.routes[p]; !ok {
			s.patterns = append(s.patterns, p)
		}
		if !containsString(s.routes[p], q.Name) {
			s.routes[p] = append(s.routes[p], q.Name)
		}
	}
	return s
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// subscribe makes the subscription and waits until Redis has confirmed
// every pattern, so that whatever is published afterwards is received.
// During an outage it retries, bounded by the consumer's context.
func (s *subscriber) subscribe() error {
	err := s.b.retry(s.ctx, func(ctx context.Context) error {
		ps, err := s.open(ctx)
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.ps = ps
		s.mu.Unlock()
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis: subscribe to %s: %w", strings.Join(s.patterns, ", "), err)
	}
	return nil
}

// open makes one subscription and waits for its confirmations.
func (s *subscriber) open(ctx context.Context) (*redis.PubSub, error) {
	ps := s.b.client.PSubscribe(ctx)
	fail := func(err error) (*redis.PubSub, error) {
		_ = ps.Close()
		return nil, err
	}
	if err := ps.PSubscribe(ctx, s.patterns...); err != nil {
		return fail(err)
	}
	// The confirmations come in order, before any message: what a later
	// PUBLISH sends is certain to reach this connection.
	confirmed := 0
	for confirmed < len(s.patterns) {
		m, err := ps.ReceiveTimeout(ctx, 10*time.Second)
		if err != nil {
			return fail(err)
		}
		if sub, ok := m.(*redis.Subscription); ok && sub.Kind == "psubscribe" {
			confirmed++
		}
	}
	return ps, nil
}

func (s *subscriber) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(s.finished)
		defer s.b.removeSubscriber(s)
		// A receive under way is ended by closing the subscription; wait
		// for that, so nothing uses the client after the goroutine ends.
		interrupted := make(chan struct{})
		stop := context.AfterFunc(s.ctx, func() {
			defer close(interrupted)
			s.closeSub()
		})
		defer func() {
			if !stop() {
				<-interrupted
			}
		}()
		defer s.closeSub()
		defer s.closeOut()
		s.run()
	}()
}

// abort releases a subscription made by subscribe that never started.
func (s *subscriber) abort() {
	s.cancel()
	s.closeSub()
}

// shutdown stops consuming and waits for the goroutine to end.
func (s *subscriber) shutdown() {
	s.cancel()
	<-s.finished
}

func (s *subscriber) closeSub() {
	s.mu.Lock()
	ps := s.ps
	s.ps = nil
	s.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
}

func (s *subscriber) current() *redis.PubSub {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ps
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// run receives until the context ends. A lost connection is replaced by a
// new subscription: what was published meanwhile is lost, as with kombu.
func (s *subscriber) run() {
	pinged := false
	for {
		ps := s.current()
		if ps == nil {
			return // closed by the stop
		}
		m, err := ps.ReceiveTimeout(s.ctx, fanoutHealthEvery)
		if s.ctx.Err() != nil {
			return
		}
		if err == nil {
			s.b.health.observe(nil)
			pinged = false
			if msg, ok := m.(*redis.Message); ok {
				if !s.deliver(msg) {
					return
				}
			}
			continue
		}
		if isTimeout(err) && !pinged {
			// Silence may be just that; a PING tells a live connection
			// (its pong is received as a message) from a dead one.
			pinged = true
			if err = ps.Ping(s.ctx); err == nil {
				continue
			}
		}
		s.b.health.observe(err)
		s.b.logger.Warn("redis: fanout subscription lost, resubscribing (messages published meanwhile are lost)",
			"patterns", s.patterns, "error", err)
		s.closeSub()
		if !s.resubscribe() {
			return
		}
		pinged = false
	}
}

// resubscribe replaces a lost subscription, with backoff; false means
// stopped.
func (s *subscriber) resubscribe() bool {
	for attempt := 0; ; attempt++ {
		if !backoff.Sleep(backoff.Delay(attempt, minBackoff, maxBackoff), s.ctx.Done()) {
			return false
		}
		ps, err := s.open(s.ctx)
		s.b.health.observe(err)
		if err == nil {
			s.mu.Lock()
			stopped := s.ctx.Err() != nil
			if !stopped {
				s.ps = ps
			}
			s.mu.Unlock()
			if stopped { // the stop's close ran before this was set
				_ = ps.Close()
				return false
			}
			return true
		}
		if s.ctx.Err() != nil {
			return false
		}
		s.b.logger.Warn("redis: resubscribing failed", "attempt", attempt+1, "error", err)
	}
}

// deliver hands one message over to each queue its pattern stands for;
// false means stopped.
func (s *subscriber) deliver(msg *redis.Message) bool {
	queues := s.routes[msg.Pattern]
	if len(queues) == 0 {
		return true // not one of ours (cannot happen)
	}
	payload := []byte(msg.Payload)
	// Each queue gets its own delivery, parsed afresh so that none shares
	// headers with another, as each AMQP queue bound to a fanout exchange
	// gets its own copy. kombu delivers a message once per matching
	// pattern to a single queue per exchange; two queues of one exchange
	// in one Consume get one copy each here.
	for _, q := range queues {
		env, err := protocol.ParseEnvelope(payload, len(payload)+1)
		if err != nil {
			// kombu logs "Cannot process event on channel" and goes on.
			s.b.logger.Error("redis: dropping a fanout message that is not a kombu envelope",
				"channel", msg.Channel, "error", err, "message", truncate(payload, 512))
			return true
		}
		d := &broker.Delivery{
			Raw:        env.Raw,
			Queue:      q,
			Exchange:   env.Exchange,
			RoutingKey: env.RoutingKey,
			Tag:        env.DeliveryTag,
			Acker:      s.b,
			Private:    &fanoutDelivery{b: s.b},
		}
		select {
		case s.out <- d:
		case <-s.ctx.Done():
			return false
		}
	}
	return true
}

// removeSubscriber forgets a subscriber that has ended.
func (b *Broker) removeSubscriber(s *subscriber) {
	b.mu.Lock()
	delete(b.subs, s)
	b.mu.Unlock()
	s.cancel()
}
