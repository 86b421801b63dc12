package consumer

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// etaHeld keeps ETA/countdown tasks unacked in memory until they are due,
// as Celery's timer does, raising the broker prefetch by one per held task
// so they do not starve the pool; the raise stops at Config.ETATaskLimit,
// which bounds memory: past it the broker stops delivering.
type etaHeld struct {
	w      *Worker
	mu     sync.Mutex
	h      etaHeap
	wake   chan struct{}
	raised int       // how far prefetch is raised
	swept  time.Time // last sweep for stale messages
}

func newETAHeld(w *Worker) *etaHeld {
	return &etaHeld{w: w, wake: make(chan struct{}, 1)}
}

func (e *etaHeld) len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.h)
}

func (e *etaHeld) hold(j *job) {
	e.mu.Lock()
	heap.Push(&e.h, j)
	e.adjustPrefetch()
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// adjustPrefetch sets prefetch to base + held (capped); call with mu held.
func (e *etaHeld) adjustPrefetch() {
	if e.w.prefetch == 0 || e.w.cfg.StaticPrefetch { // unlimited already, or fixed (quorum queues)
		return
	}
	want := min(len(e.h), e.w.cfg.ETATaskLimit)
	if want == e.raised {
		return
	}
	if err := e.w.broker.SetPrefetch(e.w.prefetch + want); err != nil {
		e.w.log.Warn("raising prefetch for ETA tasks failed", "err", err)
		return
	}
	e.raised = want
}

// reapplyPrefetch sets the raised prefetch again after something set
// the base one (a new Consume: add_consumer, cancel_consumer).
func (e *etaHeld) reapplyPrefetch() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.w.prefetch == 0 || e.raised == 0 {
		return
	}
	if err := e.w.broker.SetPrefetch(e.w.prefetch + e.raised); err != nil {
		e.w.log.Warn("raising prefetch for ETA tasks failed", "err", err)
	}
}

// run moves due tasks to the pool until ctx is done.
func (e *etaHeld) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		e.mu.Lock()
		var due []*job
		now := time.Now()
		for len(e.h) > 0 && !e.h[0].req.ETA.After(now) {
			due = append(due, heap.Pop(&e.h).(*job))
		}
		swept := e.sweepLocked(now)
		next := time.Hour
		if len(e.h) > 0 {
			next = min(time.Until(e.h[0].req.ETA), sweepEvery)
		}
		e.mu.Unlock()
		for _, j := range swept {
			e.w.staleDropped(j)
		}
		if len(swept) > 0 && len(due) == 0 {
			e.mu.Lock()
			e.adjustPrefetch()
			e.mu.Unlock()
		}
		for i, j := range due {
			if e.w.dropStale(j) || e.w.expired(j) {
				continue
			}
			select {
			case e.w.jobs <- j:
			case <-ctx.Done():
				for _, rest := range due[i:] {
					e.w.requeue(rest.d, "shutdown")
				}
				return
			}
		}
		if len(due) > 0 {
			e.mu.Lock()
			e.adjustPrefetch()
			e.mu.Unlock()
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
		case <-timer.C:
		}
	}
}

// sweepEvery is how often held tasks are checked for messages the broker
// has given back (a lost connection): those are delivered again, and the
// stale copies must neither run nor keep the prefetch raised.
const sweepEvery = time.Second

// sweepLocked removes the held tasks whose message is stale, at most once
// per sweepEvery; call with mu held.
func (e *etaHeld) sweepLocked(now time.Time) []*job {
	if now.Sub(e.swept) < sweepEvery {
		return nil
	}
	e.swept = now
	var stale []*job
	kept := e.h[:0]
	for _, j := range e.h {
		if j.d.Stale() {
			stale = append(stale, j)
			continue
		}
		kept = append(kept, j)
	}
	if len(stale) == 0 {
		return nil
	}
	clear(e.h[len(kept):])
	e.h = kept
	heap.Init(&e.h)
	return stale
}

// requeueAll returns every held message to the broker (shutdown).
func (e *etaHeld) requeueAll() {
	e.mu.Lock()
	held := e.h
	e.h = nil
	e.mu.Unlock()
	for _, j := range held {
		e.w.requeue(j.d, "shutdown")
	}
}

type etaHeap []*job

func (h etaHeap) Len() int           { return len(h) }
func (h etaHeap) Less(i, j int) bool { return h[i].req.ETA.Before(h[j].req.ETA) }
func (h etaHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *etaHeap) Push(x any)        { *h = append(*h, x.(*job)) }
func (h *etaHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return j
}
