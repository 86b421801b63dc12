package redis

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/internal/backoff"
	"github.com/gocelery/gocelery/protocol"
)

// consumer is the background component behind one Consume call: it waits
// for prefetch credit, BRPOPs, records what it received in unacked, and
// hands it over on out, which stays the same Go channel across outages.
type consumer struct {
	b     *Broker
	order []string          // queue names, in this round's BRPOP order
	lists map[string]string // list key -> queue name
	out   chan *broker.Delivery
	// closeOut closes out when the consumer ends; Consume replaces it when
	// a subscriber shares out.
	closeOut func()
	poll     *poller
	wake     chan struct{} // credit returned or prefetch changed
	unacks   atomic.Int64  // received and not settled or given back

	// ctx is done when Consume's context is or the broker closes.
	ctx      context.Context
	cancel   context.CancelFunc
	finished chan struct{}
}

func newConsumer(ctx context.Context, b *Broker, queues []string) *consumer {
	ctx, cancel := context.WithCancel(ctx)
	out := make(chan *broker.Delivery)
	c := &consumer{
		b:        b,
		order:    queues,
		lists:    make(map[string]string, len(queues)*len(b.keys.steps)),
		out:      out,
		closeOut: func() { close(out) },
		poll:     newPoller(b.client),
		wake:     make(chan struct{}, 1),
		ctx:      ctx,
		cancel:   cancel,
		finished: make(chan struct{}),
	}
	for _, q := range queues {
		for _, l := range b.keys.lists(q) {
			c.lists[l] = q
		}
	}
	return c
}

func (c *consumer) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(c.finished)
		defer c.b.removeConsumer(c)
		// A BRPOP under way would hold a stop for up to PollTimeout. The
		// interrupt runs on its own goroutine: wait for it, so nothing
		// uses the client after the consumer has ended.
		interrupted := make(chan struct{})
		stop := context.AfterFunc(c.ctx, func() {
			defer close(interrupted)
			c.poll.interrupt()
		})
		defer func() {
			if !stop() {
				<-interrupted
			}
		}()
		defer c.poll.close()
		defer c.closeOut()
		c.run()
	}()
}

// shutdown stops consuming and waits for the goroutine to end.
func (c *consumer) shutdown() {
	c.cancel()
	<-c.finished
}

// poke wakes the consumer if it waits for credit.
func (c *consumer) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// release gives back the credit of one delivery.
func (c *consumer) release() {
	c.unacks.Add(-1)
	c.poke()
}

// waitCredit blocks while the prefetch is used up; false means stop.
func (c *consumer) waitCredit() bool {
	for {
		n := c.b.prefetch.Load()
		if n == 0 || c.unacks.Load() < n {
			return c.ctx.Err() == nil
		}
		select {
		case <-c.wake:
		case <-c.ctx.Done():
			return false
		}
	}
}

// keys lists what BRPOP waits on: every priority step, and within a step
// every queue in the current rotation (kombu's _brpop_start).
func (c *consumer) keys() []string {
	keys := make([]string, 0, len(c.order)*len(c.b.keys.steps))
	for _, s := range c.b.keys.steps {
		for _, q := range c.order {
			keys = append(keys, c.b.keys.list(q, s))
		}
	}
	return keys
}

// rotate moves the queue that just delivered to the end of the order, as
// kombu's round-robin cycle does, so a busy queue cannot starve the rest.
func (c *consumer) rotate(queue string) {
	if i := slices.Index(c.order, queue); i >= 0 && i < len(c.order)-1 {
		c.order = append(append(c.order[:i:i], c.order[i+1:]...), queue)
	}
}

func (c *consumer) run() {
	for attempt := 0; ; {
		if !c.waitCredit() {
			return
		}
		keys := c.keys()
		key, payload, recorded, err := c.popRecorded(keys)
		if err == nil && payload == nil { // all empty: wait, as kombu does
			key, payload, err = c.poll.pop(c.ctx, keys, c.b.opts.PollTimeout)
			recorded = 0
		}
		c.b.health.observe(err)
		if err != nil {
			if !backoff.Sleep(backoff.Delay(attempt, minBackoff, maxBackoff), c.ctx.Done()) {
				return
			}
			attempt++
			continue
		}
		attempt = 0
		if payload == nil {
			continue
		}
		queue, ok := c.lists[key]
		if !ok { // cannot happen: BRPOP answers with a key it was given
			c.b.logger.Error("redis: BRPOP answered with an unknown list; giving the message back", "list", key)
			c.pushBack(key, payload)
			continue
		}
		if c.ctx.Err() != nil {
			if recorded == 0 {
				c.pushBack(key, payload)
			} else if f := c.receive(key, queue, payload, recorded); f != nil {
				c.giveBack(f) // recorded by the pop: settle it as it goes back
			}
			return
		}
		c.rotate(queue)
		f := c.receive(key, queue, payload, recorded)
		if f == nil {
			continue
		}
		select {
		case c.out <- &f.d:
		case <-c.ctx.Done():
			c.giveBack(f)
			return
		}
	}
}

// popRecorded is the non-blocking, atomic pop (popRecordScript). It
// returns the list, the message and the score it was recorded with (0 when
// Go must record it), or a nil message when every list is empty.
func (c *consumer) popRecorded(keys []string) (string, []byte, float64, error) {
	s := score(time.Now())
	args := make([]any, 0, 1+len(keys))
	args = append(args, strconv.FormatFloat(s, 'f', -1, 64))
	for _, k := range keys {
		args = append(args, c.lists[k])
	}
	all := append([]string{c.b.keys.unacked(), c.b.keys.unackedIdx()}, keys...)
	res, err := popRecordScript.Run(c.ctx, c.b.client, all, args...).Slice()
	if errors.Is(err, redis.Nil) {
		return "", nil, 0, nil
	}
	if err != nil || len(res) != 3 {
		return "", nil, 0, err
	}
	key, _ := res[0].(string)
	msg, _ := res[1].(string)
	if n, _ := res[2].(int64); n != 1 {
		s = 0
	}
	return key, []byte(msg), s, nil
}

// receive turns a popped message into a delivery and records it in
// unacked and unacked_index (one MULTI, kombu's QoS.append), retrying
// while Redis is unreachable: the message exists only in this process
// until then. nil means the message was dropped or given back.
//
// recorded is the unacked_index score popRecordScript already wrote, or 0.
func (c *consumer) receive(list, queue string, payload []byte, recorded float64) *inflight {
	// No size limit: the message is in memory already, and refusing it
	// would lose it. protocol.Decode bounds the body.
	env, err := protocol.ParseEnvelope(payload, len(payload)+1)
	if err != nil {
		// kombu fails the same way on it (and loses it too); there is
		// nothing a worker could do with it.
		c.b.logger.Error("redis: dropping a message that is not a kombu envelope",
			"queue", queue, "error", err, "message", truncate(payload, 512))
		return nil
	}
	tag := env.DeliveryTag
	if tag == "" {
		tag = uuid.NewString() // not from kombu; it still needs bookkeeping
	}
	exchange, routingKey := env.Exchange, env.RoutingKey
	if exchange == "" && routingKey == "" {
		routingKey = queue // so a restore finds the queue
	}
	f := &inflight{b: c.b, c: c, tag: tag, list: list, envelope: payload}
	f.d = broker.Delivery{
		Raw:         env.Raw,
		Queue:       queue,
		Exchange:    env.Exchange,
		RoutingKey:  env.RoutingKey,
		Redelivered: env.Headers["redelivered"] == true || deliveryInfoRedelivered(payload),
		Tag:         tag,
		Acker:       c.b,
		Private:     f,
	}
	entry := unackedEntry(payload, exchange, routingKey)
	c.unacks.Add(1)
	if recorded != 0 && tag == env.DeliveryTag {
		f.addScore(recorded)
		f.scores = []float64{recorded}
		c.b.addLive(f)
		return f
	}
	// Not cancelled with the consumer: a stop waits for this round trip.
	ctx := context.WithoutCancel(c.ctx)
	for attempt := 0; ; attempt++ {
		s := score(time.Now())
		f.addScore(s) // not shared yet: no lock needed
		_, err := c.b.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.ZAdd(ctx, c.b.keys.unackedIdx(), redis.Z{Score: s, Member: tag})
			p.HSet(ctx, c.b.keys.unacked(), tag, entry)
			return nil
		})
		c.b.health.observe(err)
		if err == nil {
			f.scores = []float64{s}
			break
		}
		if !isConnError(err) || !backoff.Sleep(backoff.Delay(attempt, minBackoff, maxBackoff), c.ctx.Done()) {
			if isConnError(err) {
				err = c.ctx.Err()
			}
			c.b.logger.Warn("redis: could not record a received message in unacked; giving it back",
				"queue", queue, "tag", tag, "error", err)
			// The failed MULTI may have been applied: giveBack removes
			// such an entry, then pushes the message back either way.
			c.giveBack(f)
			return nil
		}
	}
	c.b.addLive(f)
	return f
}

// giveBack returns a message that was never handed over to the front of
// its list, unmarked (nobody saw it): atomically with the removal of its
// unacked entry if there is one, else with a plain RPUSH. If Redis cannot
// be reached in time a recorded entry stays, and the visibility timeout
// restores it.
func (c *consumer) giveBack(f *inflight) {
	f.mu.Lock()
	f.state = stateRestored
	scores := slices.Clone(f.scores)
	f.mu.Unlock()
	defer f.finish(stateRestored)
	ctx, cancel := opContext()
	defer cancel()
	args := append([]any{f.tag, f.envelope, "RPUSH"}, scoreArgs(scores)...)
	for attempt := 0; ; attempt++ {
		n, err := requeueScript.Run(ctx, c.b.client, []string{c.b.keys.unacked(), c.b.keys.unackedIdx(), f.list}, args...).Int64()
		c.b.health.observe(err)
		switch {
		case err == nil && n == 0:
			c.pushBack(f.list, f.envelope) // it was never recorded
			return
		case err == nil:
			return
		case !isConnError(err) || !backoff.Sleep(backoff.Delay(attempt, minBackoff, maxBackoff), ctx.Done()):
			c.b.logger.Error("redis: could not give back a message at stop; the visibility timeout restores it only if it was recorded",
				"queue", f.d.Queue, "tag", f.tag, "error", err, "message", truncate(f.envelope, 4096))
			return
		}
	}
}

// pushBack returns a popped message that is not in unacked to the front
// of its list, trying for a while if Redis is unreachable.
func (c *consumer) pushBack(list string, payload []byte) {
	ctx, cancel := opContext()
	defer cancel()
	for attempt := 0; ; attempt++ {
		err := c.b.health.observe(c.b.client.RPush(ctx, list, payload).Err())
		if err == nil {
			return
		}
		if !isConnError(err) || !backoff.Sleep(backoff.Delay(attempt, minBackoff, maxBackoff), ctx.Done()) {
			c.b.logger.Error("redis: lost a received message: could not give it back",
				"list", list, "error", err, "message", truncate(payload, 4096))
			return
		}
	}
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}

// poller runs BRPOP. With a *redis.Client it uses a connection of its own,
// whose CLIENT ID lets interrupt end a BRPOP at once (CLIENT UNBLOCK
// answers it as a timeout, so a message is never lost to it); otherwise,
// or on servers without CLIENT ID, a stop waits for the BRPOP timeout.
type poller struct {
	client redis.UniversalClient
	single *redis.Client

	mu      sync.Mutex
	conn    *redis.Conn
	id      int64 // CLIENT ID of conn; 0 unknown
	noID    bool  // the server has no CLIENT ID
	stopped bool
}

func newPoller(client redis.UniversalClient) *poller {
	p := &poller{client: client}
	p.single, _ = client.(*redis.Client)
	return p
}

// freshTries is how many new dedicated connections pop tries before it
// reports an outage: a new connection can be a pooled one the server
// closed meanwhile (after a restart or a network cut every idle one is),
// which go-redis retries for ordinary commands but not on a Conn.
const freshTries = 3

// pop waits up to timeout for a message on keys; a nil payload is a
// timeout (or an interrupt).
func (p *poller) pop(ctx context.Context, keys []string, timeout time.Duration) (string, []byte, error) {
	// The BRPOP itself is not cancelled with ctx: a reply carrying a
	// popped message must always be read.
	ctx = context.WithoutCancel(ctx)
	if p.single == nil {
		return brpop(ctx, p.client, keys, timeout)
	}
	for try := 1; ; try++ {
		p.mu.Lock()
		if p.stopped {
			p.mu.Unlock()
			return "", nil, nil
		}
		fresh := p.conn == nil
		if fresh {
			p.conn, p.id = p.single.Conn(), 0
		}
		conn, needID := p.conn, p.id == 0 && !p.noID
		p.mu.Unlock()
		var err error
		if needID {
			var id int64
			id, err = conn.ClientID(ctx).Result()
			p.mu.Lock()
			switch {
			case err == nil:
				p.id = id
			case !isConnError(err):
				p.noID, err = true, nil // not a Redis (miniredis), or not allowed
			}
			p.mu.Unlock()
		}
		if err == nil {
			var key string
			var payload []byte
			if key, payload, err = brpop(ctx, conn, keys, timeout); err == nil {
				return key, payload, nil
			}
		}
		if !isConnError(err) {
			return "", nil, err
		}
		p.mu.Lock()
		p.resetLocked()
		p.mu.Unlock()
		if !fresh || try >= freshTries {
			return "", nil, err
		}
	}
}

func brpop(ctx context.Context, c redis.Cmdable, keys []string, timeout time.Duration) (string, []byte, error) {
	res, err := c.BRPop(ctx, timeout, keys...).Result()
	switch {
	case err == redis.Nil:
		return "", nil, nil
	case err != nil:
		return "", nil, err
	case len(res) != 2:
		return "", nil, nil
	}
	return res[0], []byte(res[1]), nil
}

// resetLocked drops a broken dedicated connection; the next pop opens
// another (a go-redis Conn stays broken once its connection is).
func (p *poller) resetLocked() {
	if p.conn != nil {
		_ = p.conn.Close()
		p.conn, p.id = nil, 0
	}
}

// interrupt makes a BRPOP under way return at once, and the next ones
// return nothing.
func (p *poller) interrupt() {
	p.mu.Lock()
	p.stopped = true
	id := p.id
	p.mu.Unlock()
	if id == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = p.client.ClientUnblock(ctx, id).Err()
}

func (p *poller) close() {
	p.mu.Lock()
	p.resetLocked()
	p.mu.Unlock()
}
