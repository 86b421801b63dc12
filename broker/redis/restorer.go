package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxWarned bounds the tags the restorer remembers having warned about.
const maxWarned = 10000

// restorer is the background component that brings back messages whose
// consumer went away without settling them: kombu's restore_visible, run
// every RestoreInterval, compatible with Python consumers doing the same
// on the same keys. Under unacked_mutex (SET NX PX UnackedMutexExpire, released by
// compare-and-delete), it takes the tags of unacked_index scored at or
// before now - VisibilityTimeout and, for each, atomically removes it from
// unacked and RPUSHes the message, marked redelivered, to the front of the
// list it was routed to (restoreScript).
//
// It differs from kombu where kombu loses messages: one it cannot route
// (its binding is gone, or its entry is unreadable) stays where it is
// with a warning instead of being dropped, and this process's own
// deliveries are left to the keeper.
type restorer struct {
	b     *Broker
	every time.Duration

	warned map[string]bool // tags already warned about

	ctx      context.Context // cancelled by shutdown
	cancel   context.CancelFunc
	finished chan struct{}
}

type restorerParams struct {
	b     *Broker
	every time.Duration
}

func newRestorer(p restorerParams) *restorer {
	ctx, cancel := context.WithCancel(context.Background())
	return &restorer{
		b:        p.b,
		every:    p.every,
		warned:   make(map[string]bool),
		ctx:      ctx,
		cancel:   cancel,
		finished: make(chan struct{}),
	}
}

func (r *restorer) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(r.finished)
		tick := time.NewTicker(r.every)
		defer tick.Stop()
		for {
			// At once first, as a kombu consumer does when it starts.
			if _, err := r.run(r.ctx); err != nil && r.ctx.Err() == nil && !isConnError(err) {
				r.b.logger.Warn("redis: restoring unacknowledged messages", "error", err)
			}
			select {
			case <-r.ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

func (r *restorer) shutdown() {
	r.cancel()
	<-r.finished
}

// run does one restore_visible and returns how many messages it restored.
// It does nothing if another consumer holds the mutex.
func (r *restorer) run(ctx context.Context) (int, error) {
	b := r.b
	var t [16]byte
	_, _ = rand.Read(t[:])
	token := hex.EncodeToString(t[:])
	// As redis-py's Lock, which kombu uses: SET NX PX.
	err := b.client.Do(ctx, "SET", b.keys.mutex(), token, "NX", "PX", b.opts.UnackedMutexExpire.Milliseconds()).Err()
	if errors.Is(err, redis.Nil) {
		return 0, nil // held by someone else
	}
	if b.health.observe(err) != nil {
		return 0, err
	}
	if h := b.testHook; h != nil {
		h("restore-locked")
	}
	defer func() {
		// Released even when ctx is done: holding it would stop every
		// consumer's restores until it expires.
		rctx, cancel := opContext()
		defer cancel()
		_ = releaseScript.Run(rctx, b.client, []string{b.keys.mutex()}, token).Err()
	}()

	start := time.Now()
	ceil := score(start.Add(-b.opts.VisibilityTimeout))
	restored, skipped := 0, 0
	routes := map[[2]string][]string{}
	// A run ends well inside the mutex's lifetime, so the lock never
	// expires under a run that is still restoring.
	for time.Since(start) < b.opts.UnackedMutexExpire/2 && ctx.Err() == nil {
		tags, err := b.client.ZRangeArgs(ctx, redis.ZRangeArgs{
			Key: b.keys.unackedIdx(), Start: ceil, Stop: 0, ByScore: true, Rev: true,
			Offset: int64(skipped), Count: restoreBatch,
		}).Result()
		if b.health.observe(err) != nil {
			return restored, err
		}
		if len(tags) == 0 {
			break
		}
		var todo []string
		for _, tag := range tags {
			if b.isLiveTag(tag) {
				skipped++ // the keeper refreshes it
				continue
			}
			todo = append(todo, tag)
		}
		entries := make([]*redis.StringCmd, len(todo))
		if len(todo) > 0 {
			_, err = b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i, tag := range todo {
					entries[i] = p.HGet(ctx, b.keys.unacked(), tag)
				}
				return nil
			})
			if err != nil && !errors.Is(err, redis.Nil) {
				b.health.observe(err)
				return restored, err
			}
		}
		for i, tag := range todo {
			removed, err := r.restore(ctx, tag, entries[i], ceil, routes)
			if err != nil {
				return restored, err
			}
			switch {
			case !removed:
				skipped++
			case entries[i].Err() == nil:
				restored++
			}
		}
		if len(tags) < restoreBatch {
			break
		}
	}
	if restored > 0 {
		b.logger.Info("redis: restored unacknowledged messages past their visibility timeout",
			"count", restored, "visibility_timeout", b.opts.VisibilityTimeout)
	}
	return restored, nil
}

// restore brings back one tag; removed is false when it stays where it
// is (and so shifts the next scan's offset).
func (r *restorer) restore(ctx context.Context, tag string, entry *redis.StringCmd, ceil float64, routes map[[2]string][]string) (removed bool, err error) {
	b := r.b
	keys := []string{b.keys.unacked(), b.keys.unackedIdx()}
	raw, err := entry.Bytes()
	var payload []byte // nil: the entry is gone
	switch {
	case errors.Is(err, redis.Nil):
		// The entry is gone: only the index is left to clean, as kombu.
	case err != nil:
		return false, err
	default:
		env, exchange, routingKey, err := parseEntry(raw)
		if err == nil {
			payload, err = markRedelivered(env)
		}
		if err != nil {
			r.warn(tag, "redis: an unacknowledged message cannot be read; leaving it in place", "error", err)
			return false, nil
		}
		k := [2]string{exchange, routingKey}
		queues, ok := routes[k]
		if !ok {
			if queues, err = b.route(ctx, exchange, routingKey); b.health.observe(err) != nil {
				return false, err
			}
			routes[k] = queues
		}
		if len(queues) == 0 {
			r.warn(tag, "redis: an unacknowledged message past its visibility timeout matches no queue; leaving it in place",
				"exchange", exchange, "routing_key", routingKey)
			return false, nil
		}
		pri := envelopePriority(env)
		for _, q := range queues {
			keys = append(keys, b.keys.listFor(q, pri))
		}
	}
	n, err := restoreScript.Run(ctx, b.client, keys, tag, ceil, payload).Int64()
	if b.health.observe(err) != nil {
		return false, err
	}
	return n == 1, nil
}

// warn logs about tag once.
func (r *restorer) warn(tag, msg string, args ...any) {
	if r.warned[tag] {
		return
	}
	if len(r.warned) >= maxWarned {
		clear(r.warned)
	}
	r.warned[tag] = true
	r.b.logger.Warn(msg, append([]any{"tag", tag}, args...)...)
}
