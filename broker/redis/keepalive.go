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

// shutdown stops the loop, then makes a last attempt at deferred settles.
func (k *keeper) shutdown(ctx context.Context) {
	close(k.done)
	<-k.finished
	k.flush(ctx)
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
		k.refreshBatch(fs[:n])
		fs = fs[n:]
	}
}

func (k *keeper) refreshBatch(fs []*inflight) {
	now := score(time.Now())
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
		return
	}
	ctx, cancel := opContext()
	defer cancel()
	res, err := refreshScript.Run(ctx, k.b.client, []string{k.b.keys.unackedIdx()}, args...).Int64Slice()
	if k.b.health.observe(err) != nil {
		if !isConnError(err) {
			k.b.logger.Warn("redis: refreshing unsettled deliveries", "error", err)
		}
		return
	}
	for i, f := range sent {
		if i >= len(res) {
			break
		}
		f.mu.Lock()
		if res[i] == 1 {
			f.scores = []float64{now}
			f.mu.Unlock()
			continue
		}
		warn := !f.lost && (f.state == stateLive || f.state == stateDeferred)
		if warn {
			f.lost = true
		}
		f.mu.Unlock()
		if warn {
			k.b.untag(f)
			k.b.logger.Warn("redis: an unsettled delivery was restored by another consumer (its visibility timeout passed while this process could not refresh it); it may run twice",
				"queue", f.d.Queue, "tag", f.tag, "visibility_timeout", k.b.opts.VisibilityTimeout)
		}
	}
}

// flush retries deferred settles; true means none is left to retry.
func (k *keeper) flush(ctx context.Context) bool {
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
		case isConnError(err):
			return false
		default:
			k.b.logger.Error("redis: a deferred "+op.String()+" failed; the visibility timeout will redeliver the message",
				"queue", f.d.Queue, "tag", f.tag, "error", err)
			f.finish(stateDone)
		}
	}
	return true
}
