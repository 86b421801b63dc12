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
// for prefetch credit, takes messages with popRecordScript (which records
// them in unacked in the same step), waits with waiters while every list
// is empty, and hands deliveries over on out, which stays the same Go
// channel across outages.
type consumer struct {
	b     *Broker
	order []string          // queue names, in this round's pop order
	lists map[string]string // list key -> queue name
	out   chan *broker.Delivery
	// closeOut closes out when the consumer ends; Consume replaces it when
	// a subscriber shares out.
	closeOut func()
	wait     *waiters      // started at the first idle moment
	wake     chan struct{} // credit returned or prefetch changed
	unacks   atomic.Int64  // received and not settled or given back
	// rid is the request id of the next pop, kept while a pop's reply is
	// missing: ridBase (the consumer's id, which names its record; see
	// popRecordScript) and a sequence number.
	rid     string
	ridBase string
	ridSeq  uint64
	dead    map[string]string // list key -> its queue's malformed list

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
		dead:     make(map[string]string, len(queues)*len(b.keys.steps)),
		ridBase:  uuid.NewString(),
		out:      out,
		closeOut: func() { close(out) },
		wake:     make(chan struct{}, 1),
		ctx:      ctx,
		cancel:   cancel,
		finished: make(chan struct{}),
	}
	for _, q := range queues {
		for _, l := range b.keys.lists(q) {
			c.lists[l] = q
			c.dead[l] = b.keys.list(q+".malformed", 0)
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

// keys lists the lists a pop takes from, in order: every priority step, and within a step
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

// popBatch is how many messages one pop takes at most: the free prefetch
// credit, up to this, so a worker that can take many pays one round trip
// for them (kombu pops one per BRPOP).
const popBatch = 32

// popCount is how many messages the next pop may take: the free credit,
// at least one (waitCredit has seen room for one), at most popBatch.
func (c *consumer) popCount() int {
	n := popBatch
	if p := c.b.prefetch.Load(); p > 0 {
		n = min(n, int(p-c.unacks.Load()))
	}
	return max(n, 1)
}

func (c *consumer) run() {
	defer c.endPops()
	for attempt := 0; ; {
		if !c.waitCredit() {
			return
		}
		msgs, err := c.pop(c.ctx, c.popCount())
		c.b.health.observe(err)
		if err != nil {
			if !backoff.Sleep(backoff.Delay(attempt, minBackoff, maxBackoff), c.ctx.Done()) {
				return
			}
			attempt++
			continue
		}
		attempt = 0
		if len(msgs) == 0 {
			if !c.idle() {
				return
			}
			continue
		}
		if h := c.b.testHook; h != nil {
			h("popped")
		}
		if !c.handOut(msgs) {
			return
		}
	}
}

// idle waits, after a pop found every list empty, until a waiter sees a
// message, or PollTimeout passes (the next pop is the check), or the
// consumer stops (false).
func (c *consumer) idle() bool {
	if c.wait == nil {
		c.wait = newWaiters(c.ctx, c.b, c.keys())
	}
	c.wait.arm()
	t := time.NewTimer(c.b.opts.PollTimeout)
	defer t.Stop()
	select {
	case <-c.wait.signal:
	case <-t.C:
	case <-c.ctx.Done():
		return false
	}
	return c.ctx.Err() == nil
}

// handOut delivers what one pop took, in order; false means the consumer
// stopped, and what was not handed over went back to its list.
func (c *consumer) handOut(msgs []popped) bool {
	for i, m := range msgs {
		if m.kind == 'm' {
			c.b.logger.Error("redis: a message that is not a kombu envelope was moved to the malformed queue",
				"queue", c.lists[m.list], "dead_letter", c.lists[m.list]+".malformed", "message", truncate(m.payload, 512))
			continue
		}
		queue := c.lists[m.list]
		f := c.receive(m, queue)
		if f == nil {
			continue
		}
		if c.ctx.Err() != nil {
			c.giveBackAll(f, msgs[i+1:])
			return false
		}
		c.rotate(queue)
		select {
		case c.out <- &f.d:
		case <-c.ctx.Done():
			c.giveBackAll(f, msgs[i+1:])
			return false
		}
	}
	return true
}

// giveBackAll gives back f and the rest of its pop, newest first, so the
// front of each list is in the order they were taken.
func (c *consumer) giveBackAll(f *inflight, rest []popped) {
	for i := len(rest) - 1; i >= 0; i-- {
		if rest[i].kind == 'm' {
			continue
		}
		if g := c.receive(rest[i], c.lists[rest[i].list]); g != nil {
			c.giveBack(g)
		}
	}
	c.giveBack(f)
}

// popped is one message popRecordScript took.
type popped struct {
	list    string
	payload []byte // the envelope; for kind 'm' the original message
	tag     string
	kind    byte // 'r' recorded, 'm' moved to the malformed list
	score   float64
}

// pop runs popRecordScript for up to count messages. A call whose reply
// was lost is made again with the same request id, by go-redis or by the
// next pop after an error, and returns what the first took: nothing popped
// is left recorded but unknown to this process (kombu's BRPOP loses it;
// a plain retry would leave it in unacked until the visibility timeout).
func (c *consumer) pop(ctx context.Context, count int) ([]popped, error) {
	if c.rid == "" {
		c.ridSeq++
		c.rid = c.ridBase + "." + strconv.FormatUint(c.ridSeq, 10)
	}
	keys := c.keys()
	s := score(time.Now())
	all := make([]string, 0, 3+2*len(keys))
	all = append(all, c.b.keys.unacked(), c.b.keys.unackedIdx(), c.b.keys.pop(c.ridBase))
	all = append(all, keys...)
	args := make([]any, 0, 5+len(keys))
	args = append(args, strconv.FormatFloat(s, 'f', -1, 64), c.rid, popRecordTTL(c.b.opts.VisibilityTimeout).Milliseconds(), count)
	for _, k := range keys {
		all = append(all, c.dead[k])
		args = append(args, c.lists[k])
	}
	args = append(args, len(c.order))
	res, err := popRecordScript.Run(ctx, c.b.client, all, args...).Slice()
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	if err != nil {
		return nil, err // the next pop repeats this request
	}
	c.rid = ""
	out := make([]popped, 0, len(res)/5)
	for i := 0; i+4 < len(res); i += 5 {
		list, _ := res[i].(string)
		payload, _ := res[i+1].(string)
		tag, _ := res[i+2].(string)
		kind, _ := res[i+3].(string)
		ss, _ := res[i+4].(string)
		m := popped{list: list, payload: []byte(payload), tag: tag, kind: 'r'}
		m.score, _ = strconv.ParseFloat(ss, 64)
		switch kind {
		case "m":
			m.kind = 'm'
		case "e":
			env, _, _, err := parseEntry(m.payload)
			if err != nil { // written by the script: cannot happen
				c.b.logger.Error("redis: cannot read back a popped message's unacked entry; the visibility timeout restores it",
					"tag", tag, "error", err)
				continue
			}
			m.payload = env
		}
		out = append(out, m)
	}
	return out, nil
}

// popRecordTTL is how long a consumer's record of its last pop is kept
// for a repeated call: while the visibility timeout has not passed the
// messages are still this pop's to take back. A Consume deletes it when
// it ends; one killed leaves one small key for this long.
func popRecordTTL(vt time.Duration) time.Duration {
	return max(vt, time.Minute)
}

// endPops runs when the consumer ends: a pop whose reply was lost is made
// once more to give back what it took, and the consumer's record is
// deleted.
func (c *consumer) endPops() {
	if c.wait != nil {
		c.wait.stop()
	}
	ctx, cancel := opContext()
	defer cancel()
	if c.rid != "" {
		if msgs, err := c.pop(ctx, 0); err == nil && len(msgs) > 0 {
			for i := len(msgs) - 1; i >= 0; i-- {
				if msgs[i].kind == 'm' {
					continue
				}
				if f := c.receive(msgs[i], c.lists[msgs[i].list]); f != nil {
					c.giveBack(f)
				}
			}
		}
	}
	_ = c.b.client.Del(ctx, c.b.keys.pop(c.ridBase)).Err()
}

// receive turns a recorded message into a delivery. One that is not a
// message this worker can read is moved to "<queue>.malformed" (nil).
func (c *consumer) receive(m popped, queue string) *inflight {
	f := &inflight{b: c.b, c: c, tag: m.tag, list: m.list, envelope: m.payload, scores: []float64{m.score}, confirmed: time.Now()}
	// No size limit: the message is in memory already, and refusing it
	// would lose it. protocol.Decode bounds the body.
	env, err := protocol.ParseEnvelope(m.payload, len(m.payload)+1)
	if err != nil {
		c.deadLetter(f, queue, err)
		return nil
	}
	f.d = broker.Delivery{
		Raw:         env.Raw,
		Queue:       queue,
		Exchange:    env.Exchange,
		RoutingKey:  env.RoutingKey,
		Redelivered: env.Headers["redelivered"] == true || deliveryInfoRedelivered(m.payload),
		Tag:         m.tag,
		Acker:       c.b,
		Private:     f,
	}
	c.unacks.Add(1)
	c.b.addLive(f)
	return f
}

// deadLetter moves a recorded message this worker cannot read to the list
// "<queue>.malformed", wrapped as the script wraps what it cannot record:
// its unacked entry goes in the same step. If Redis cannot be reached in
// time the entry stays, and the visibility timeout brings the message back
// to be moved again.
func (c *consumer) deadLetter(f *inflight, queue string, cause error) {
	dl := queue + ".malformed"
	env := protocol.Envelope{RoutingKey: dl, DeliveryTag: uuid.NewString()}
	env.ContentType, env.ContentEncoding = "application/octet-stream", "binary"
	env.Headers = map[string]any{"x-gocelery-reason": cause.Error(), "x-gocelery-queue": queue}
	env.Properties.DeliveryMode = 2
	env.Body = f.envelope
	payload, err := env.Marshal()
	if err == nil {
		ctx, cancel := opContext()
		defer cancel()
		args := append([]any{f.tag, payload, "LPUSH"}, scoreArgs(f.scores)...)
		err = c.b.retry(ctx, func(ctx context.Context) error {
			return requeueScript.Run(ctx, c.b.client, []string{c.b.keys.unacked(), c.b.keys.unackedIdx(), c.b.keys.list(dl, 0)}, args...).Err()
		})
	}
	if err != nil {
		c.b.logger.Error("redis: could not move a malformed message to its dead-letter queue; the visibility timeout brings it back",
			"queue", queue, "dead_letter", dl, "reason", cause, "error", err, "message", truncate(f.envelope, 512))
		return
	}
	c.b.logger.Error("redis: a message this worker cannot read was moved to the malformed queue",
		"queue", queue, "dead_letter", dl, "reason", cause, "message", truncate(f.envelope, 512))
}

// giveBack returns a message that was never handed over to the front of
// its list, unmarked (nobody saw it), atomically with the removal of its
// unacked entry. If Redis cannot be reached in time the entry stays, and
// the visibility timeout restores it.
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
		// Every message is recorded as it is taken: one no longer ours
		// (or given back by an attempt whose reply was lost) is left be.
		err := requeueScript.Run(ctx, c.b.client, []string{c.b.keys.unacked(), c.b.keys.unackedIdx(), f.list}, args...).Err()
		c.b.health.observe(err)
		switch {
		case err == nil:
			return
		case !isConnError(err) || !backoff.Sleep(backoff.Delay(attempt, minBackoff, maxBackoff), ctx.Done()):
			c.b.logger.Error("redis: could not give back a message at stop; the visibility timeout restores it",
				"queue", f.d.Queue, "tag", f.tag, "error", err, "message", truncate(f.envelope, 4096))
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
