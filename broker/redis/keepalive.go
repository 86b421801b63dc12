package redis

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/gocelery/gocelery/internal/backoff"
)

// refreshBatch bounds the deliveries refreshed by one script call.
const refreshBatch = 500

// keeper is the background component that keeps this process's unsettled
// deliveries its own: every quarter of the visibility timeout it moves
// their unacked_index scores to now, in one script call per batch, so no
// consumer (Python's restore_visible included) takes a delivery whose
// worker is alive for an abandoned one. kombu never refreshes, so a task
// running, or held for its ETA, longer than the visibility timeout is run
// twice (celery#2599, #3270, #4766, #5935).
//
// It also retries the acks and rejects that could not reach Redis, so an
// outage during a settle does not turn into a redelivery.
type keeper struct {
	b     *Broker
	every time.Duration

	pokes    chan struct{}
	done     chan struct{}
	finished chan struct{}
}

type keeperParams struct {
	b     *Broker
	every time.Duration
}

func newKeeper(p keeperParams) *keeper {
	return &keeper{
		b:        p.b,
		every:    p.every,
		pokes:    make(chan struct{}, 1),
		done:     make(chan struct{}),
		finished: make(chan struct{}),
	}
}

func (k *keeper) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(k.finished)
		k.loop()
	}()
}

// poke says a settle was deferred.
func (k *keeper) poke() {
	select {
	case k.pokes <- struct{}{}:
	default:
	}
}

func (k *keeper) loop() {
	tick := time.NewTicker(k.every)
	defer tick.Stop()
	var retry *time.Timer
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	var retryC <-chan time.Time
	attempt := 0
	for {
		select {
		case <-k.done:
			return
		case <-tick.C:
			k.refresh()
		case <-k.pokes:
		case <-retryC:
			retryC = nil
			ctx, cancel := opContext()
			if k.flush(ctx) {
				attempt = 0
			} else {
				attempt++
			}
			cancel()
		}
		if retryC == nil && k.deferred() > 0 {
			retry = time.NewTimer(backoff.Delay(attempt, minBackoff, maxBackoff))
			retryC = retry.C
		}
	}
}

// shutdown stops the loop, then retries deferred settles until they land
// or ctx ends. What is still deferred then stays in unacked, and the
// visibility timeout redelivers it: an ack that cannot reach Redis before
// the process ends cannot be kept anywhere else (Celery loses such acks
// the same way).
func (k *keeper) shutdown(ctx context.Context) {
	close(k.done)
	<-k.finished
	for attempt := 0; !k.flush(ctx); attempt++ {
		if !backoff.Sleep(backoff.Delay(attempt, minBackoff, maxBackoff), ctx.Done()) {
			break
		}
	}
	if n := k.deferred(); n > 0 {
		k.b.logger.Error("redis: acks or rejects could not reach Redis before close; the visibility timeout will redeliver those messages",
			"count", n)
	}
}

func (k *keeper) deferred() int {
	n := 0
	for _, f := range k.b.liveSnapshot() {
		f.mu.Lock()
		if f.state == stateDeferred {
			n++
		}
		f.mu.Unlock()
	}
	return n
}

// refresh moves the scores of every live and deferred delivery to now.
func (k *keeper) refresh() {
	fs := k.b.liveSnapshot()
	for len(fs) > 0 {
		n := min(len(fs), refreshBatch)
		ctx, cancel := opContext()
		err := k.refreshBatch(ctx, fs[:n])
		cancel()
		if err != nil && !isConnError(err) {
			k.b.logger.Warn("redis: refreshing unsettled deliveries", "error", err)
		}
		fs = fs[n:]
	}
}

// refreshBatch refreshes fs in one script call. One found no longer this
// process's is marked lost; if it was live it becomes stale and gives its
// credit back (a deferred one is left to its settle, which finds out).
func (k *keeper) refreshBatch(ctx context.Context, fs []*inflight) error {
	at := time.Now()
	now := score(at)
	args := []any{now}
	var sent []*inflight
	for _, f := range fs {
		f.mu.Lock()
		if (f.state == stateLive || f.state == stateDeferred) && !f.lost {
			args = append(args, f.tag, len(f.scores))
			args = append(args, scoreArgs(f.scores)...)
			// From now on either score may be in Redis.
			f.addScore(now)
			sent = append(sent, f)
		}
		f.mu.Unlock()
	}
	if len(sent) == 0 {
		return nil
	}
	res, err := refreshScript.Run(ctx, k.b.client, []string{k.b.keys.unackedIdx()}, args...).Int64Slice()
	if k.b.health.observe(err) != nil {
		return err
	}
	for i, f := range sent {
		if i >= len(res) {
			break
		}
		f.mu.Lock()
		if res[i] == 1 {
			// The older scores stay candidates: a failover to a replica
			// that missed the last refreshes brings one of them back.
			f.confirmed = at
			f.mu.Unlock()
			continue
		}
		warn := !f.lost && (f.state == stateLive || f.state == stateDeferred)
		if warn {
			f.lost = true
		}
		retire := f.state == stateLive
		if retire {
			f.state = stateStale
		}
		f.mu.Unlock()
		if retire {
			f.retire()
		} else if warn {
			k.b.untag(f)
		}
		if warn {
			k.b.logger.Warn("redis: an unsettled delivery was restored by another consumer (its visibility timeout passed while this process could not refresh it); it is stale and must not run here",
				"queue", f.d.Queue, "tag", f.tag, "visibility_timeout", k.b.opts.VisibilityTimeout)
		}
	}
	return nil
}

// flush retries deferred settles; true means none is left to retry. A
// settle that fails is kept and tried again later, whatever the error:
// the delivery is finished, and dropping the settle would have it
// restored and run again.
func (k *keeper) flush(ctx context.Context) bool {
	left := false
	for _, f := range k.b.liveSnapshot() {
		f.mu.Lock()
		if f.state != stateDeferred {
			f.mu.Unlock()
			continue
		}
		op, scores := f.op, slices.Clone(f.scores)
		f.mu.Unlock()
		ours, err := k.b.apply(ctx, f, op, scores)
		switch {
		case err == nil:
			if !ours {
				k.b.logger.Warn("redis: a deferred "+op.String()+" found the delivery restored by another consumer meanwhile; it may run twice",
					"queue", f.d.Queue, "tag", f.tag)
			}
			f.finish(stateDone)
		case isConnError(err) || ctx.Err() != nil:
			return false
		default:
			f.mu.Lock()
			warn := !f.warned
			f.warned = true
			f.mu.Unlock()
			if warn {
				k.b.logger.Error("redis: a deferred "+op.String()+" failed; retrying it until it lands",
					"queue", f.d.Queue, "tag", f.tag, "error", err)
			}
			left = true
		}
	}
	return !left
}
