package redis

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/internal/backoff"
)

// waiters tell an idle consumer that one of its lists has a message,
// without taking it: one goroutine per list blocks in BLMOVE list list
// RIGHT RIGHT, which returns as soon as the list is not empty and leaves
// the element where it was (a move to the same end of the same list). The
// consumer then takes it with popRecordScript, which records it in unacked
// in the same atomic step. kombu waits with BRPOP, which pops: a worker
// killed, or a reply lost, between the pop and the bookkeeping loses the
// message. Nothing a waiter does can lose one, so a waiter is stopped by
// closing its connection under it.
//
// BLMOVE watches one key, so a Consume of q queues holds q x priority
// steps idle connections while it waits, on a client of their own (the
// shared pool keeps its connections for settles and publishes). Redis
// older than 6.2 has no BLMOVE: BRPOPLPUSH list list is used instead, just
// as safe, but a list that already holds several messages when it is
// called has its oldest moved to the back.
type waiters struct {
	b       *Broker
	client  redis.UniversalClient
	own     *redis.Client // closed by stop; nil when client is the broker's
	keys    []string
	timeout time.Duration

	arms   []chan struct{} // one per key: wait until the list is not empty
	signal chan struct{}   // a list is not empty
	old    atomic.Bool     // no BLMOVE on this server

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newWaiters(ctx context.Context, b *Broker, keys []string) *waiters {
	ctx, cancel := context.WithCancel(ctx)
	w := &waiters{
		b:       b,
		client:  b.client,
		keys:    keys,
		timeout: b.opts.PollTimeout,
		arms:    make([]chan struct{}, len(keys)),
		signal:  make(chan struct{}, 1),
		ctx:     ctx,
		cancel:  cancel,
	}
	if single, ok := b.client.(*redis.Client); ok {
		o := *single.Options()
		o.PoolSize, o.MaxIdleConns, o.MinIdleConns = len(keys), len(keys), 0
		o.MaxActiveConns = len(keys)
		w.own = redis.NewClient(&o)
		for _, h := range b.waiterHooks {
			w.own.AddHook(h)
		}
		w.client = w.own
	}
	for i := range keys {
		w.arms[i] = make(chan struct{}, 1)
		w.wg.Add(1)
		go w.loop(i)
	}
	return w
}

// arm makes every waiter not already waiting wait for its list.
func (w *waiters) arm() {
	for _, a := range w.arms {
		select {
		case a <- struct{}{}:
		default:
		}
	}
}

// stop ends the waiters; none uses the client afterwards.
func (w *waiters) stop() {
	w.cancel()
	if w.own != nil {
		_ = w.own.Close() // ends the BLMOVEs under way
	}
	w.wg.Wait()
}

func (w *waiters) loop(i int) {
	defer w.wg.Done()
	key := w.keys[i]
	for {
		select {
		case <-w.arms[i]:
		case <-w.ctx.Done():
			return
		}
		for attempt := 0; ; {
			found, err := w.wait(key)
			if w.ctx.Err() != nil {
				return
			}
			if err != nil {
				// The consumer's next pop observes the outage and
				// backs off; this only waits to try again.
				if !backoff.Sleep(backoff.Delay(attempt, minBackoff, maxBackoff), w.ctx.Done()) {
					return
				}
				attempt++
				continue
			}
			if found {
				select {
				case w.signal <- struct{}{}:
				default:
				}
				break // armed again when the consumer next finds nothing
			}
			attempt = 0 // a timeout: keep waiting
		}
	}
}

// wait blocks until key holds an element (true) or the timeout passes.
func (w *waiters) wait(key string) (bool, error) {
	var err error
	if !w.old.Load() {
		err = w.client.BLMove(w.ctx, key, key, "RIGHT", "RIGHT", w.timeout).Err()
		if err != nil && isUnknownCommand(err) {
			w.old.Store(true)
		}
	}
	if w.old.Load() {
		err = w.client.BRPopLPush(w.ctx, key, key, w.timeout).Err()
	}
	switch {
	case err == nil:
		return true, nil
	case err == redis.Nil:
		return false, nil
	}
	return false, err
}

func isUnknownCommand(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "unknown command") || strings.Contains(s, "unknown or disabled command")
}
