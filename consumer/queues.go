package consumer

import (
	"context"
	"fmt"
	"sync"

	"github.com/gocelery/gocelery/broker"
)

// consumeSet is one Consume call: the queues the worker started with, or
// one queue added by add_consumer. Its deliveries are forwarded to the
// worker's merged channel until its context ends and the transport closes
// its channel.
type consumeSet struct {
	queues []broker.Queue
	cancel context.CancelFunc
}

// queueSets is the worker's consuming state.
type queueSets struct {
	mu     sync.Mutex
	ctx    context.Context // parent of every set; nil until Run
	sets   []*consumeSet
	merged chan *broker.Delivery
	fwd    sync.WaitGroup // forwarders still running
	closed bool           // Run is ending: no new set may start
}

// consume starts a set on qs; call with q.mu held.
func (w *Worker) consume(qs []broker.Queue) error {
	ctx, cancel := context.WithCancel(w.queues.ctx)
	deliveries, err := w.broker.Consume(ctx, qs, w.prefetch)
	if err != nil {
		cancel()
		return err
	}
	// Consume sets the base prefetch; held ETA tasks need their raise
	// back, or a full window of them would starve the pool.
	w.eta.reapplyPrefetch()
	set := &consumeSet{queues: qs, cancel: cancel}
	w.queues.sets = append(w.queues.sets, set)
	w.queues.fwd.Add(1)
	go func() {
		defer w.queues.fwd.Done()
		for d := range deliveries {
			w.queues.merged <- d
		}
	}()
	return nil
}

// startConsuming consumes the configured queues and returns the merged
// channel, closed once every set has ended after ctx is done.
func (w *Worker) startConsuming(ctx context.Context) (<-chan *broker.Delivery, error) {
	w.queues.mu.Lock()
	defer w.queues.mu.Unlock()
	w.queues.ctx = ctx
	w.queues.merged = make(chan *broker.Delivery)
	if err := w.consume(w.cfg.Queues); err != nil {
		return nil, err
	}
	go func() {
		<-ctx.Done()
		// After closed is set no set starts, so the wait covers them all.
		w.queues.mu.Lock()
		w.queues.closed = true
		w.queues.mu.Unlock()
		w.queues.fwd.Wait()
		close(w.queues.merged)
	}()
	return w.queues.merged, nil
}

// Queues returns the queues being consumed (inspect active_queues).
func (rc *Remote) Queues() []broker.Queue {
	w := rc.w
	w.queues.mu.Lock()
	defer w.queues.mu.Unlock()
	var out []broker.Queue
	for _, s := range w.queues.sets {
		out = append(out, s.queues...)
	}
	return out
}

// AddQueue starts consuming q, as Celery's add_consumer command does.
func (rc *Remote) AddQueue(q broker.Queue) error {
	w := rc.w
	w.queues.mu.Lock()
	defer w.queues.mu.Unlock()
	if w.queues.ctx == nil || w.queues.closed {
		return fmt.Errorf("consumer: add queue %q: worker not running", q.Name)
	}
	for _, s := range w.queues.sets {
		for _, have := range s.queues {
			if have.Name == q.Name {
				return ErrAlreadyConsume
			}
		}
	}
	return w.consume([]broker.Queue{q})
}

// CancelQueue stops consuming the named queue, as Celery's cancel_consumer
// does. Messages already received from it still run; the others of its
// set are consumed again without it.
func (rc *Remote) CancelQueue(name string) error {
	w := rc.w
	w.queues.mu.Lock()
	defer w.queues.mu.Unlock()
	for i, s := range w.queues.sets {
		var rest []broker.Queue
		found := false
		for _, q := range s.queues {
			if q.Name == name {
				found = true
				continue
			}
			rest = append(rest, q)
		}
		if !found {
			continue
		}
		s.cancel()
		w.queues.sets = append(w.queues.sets[:i:i], w.queues.sets[i+1:]...)
		if len(rest) > 0 && !w.queues.closed {
			return w.consume(rest)
		}
		return nil
	}
	return ErrUnknownQueue
}
