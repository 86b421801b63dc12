package amqp

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ackFrontier coalesces acks into basic.ack(multiple=true), which is most
// of what RabbitMQ and this process spend per message at high rates (a
// frame and a write each). A multiple ack names the highest acked tag
// below the frontier, the lowest tag not yet settled, and covers
// everything below it. One goroutine at a time sends (group commit: the
// acks that arrive while it writes go in its next frame).
//
// An ack sent by Ack goes out at once: at the frontier in the next
// multiple ack, above it (an older delivery is still unsettled) on its
// own. An ack sent by AckDeferred (the worker's early acks) may wait:
//   - at the frontier, until a quarter of the prefetch window has
//     gathered (so the window never runs dry; with prefetch 1 or 2, at
//     once) or the next ackDefer tick;
//   - above it, one to two ticks: concurrent tasks start a few tags out of
//     order and the older ones settle microseconds later, so the frontier
//     usually passes it and a multiple ack covers it. What is still above
//     the frontier then (behind a message held for its ETA, a running
//     late-ack task) is acked on its own, so a held message delays other
//     acks by 2*ackDefer at most.
//
// Celery's prefork worker acks as late: its parent sends the early ack
// once the child reports that the task started.
//
// Frames are sent in the order decided under mu by the one sending
// goroutine (or, for an immediate single, before its tag is marked), so a
// single ack always precedes the multiple ack that also covers it, and a
// multiple ack never names a tag already acked or rejected (RabbitMQ would
// close the channel: unknown delivery tag). Rejects are sent by their
// callers before they are marked, so no multiple ack can cover a message
// meant for rejection.
//
// Settled tags above the frontier are kept as runs, not one by one: every
// gap between two runs is a delivery still unsettled, so the memory is
// bounded by the unsettled deliveries (prefetch plus held ETA tasks), not by
// how many were settled behind one that is held for hours.
type ackFrontier struct {
	// send writes basic.ack(tag, multiple); set once before use.
	send func(tag uint64, multiple bool) error

	mu       sync.Mutex
	next     uint64   // lowest tag not settled; tags start at 1
	done     tagRuns  // settled tags above next
	deferred []uint64 // acked above next since the last tick, not sent yet
	due      []uint64 // acked above next before the last tick: sent singly at the next
	expired  bool     // a tick: send due singly
	timer    *time.Timer
	pending  uint64       // highest acked tag below next, not sent yet: the next multiple ack names it
	hold     bool         // pending holds deferred acks only: it may wait for the tick or a batch
	held     int          // deferred acks pending
	window   atomic.Int64 // the channel's prefetch (0: unlimited), which bounds held
	acked    uint64       // multiple acks sent up to here
	flushing bool         // a goroutine is sending; the others leave their acks to it
	idle     sync.Cond
}

// ackDefer is the tick of the deferral timer: an ack above the frontier
// waits one to two ticks to be covered by a multiple ack before it is sent
// on its own.
const ackDefer = 500 * time.Microsecond

// tagRun is the settled tags lo..hi, inclusive.
type tagRun struct{ lo, hi uint64 }

// tagRuns is a sorted list of disjoint, non-adjacent runs.
type tagRuns []tagRun

// add inserts tag, merging it with the runs it touches. Tags are settled
// roughly in order, so the common case extends the last run.
func (rs *tagRuns) add(tag uint64) {
	r := *rs
	if n := len(r); n > 0 {
		last := &r[n-1]
		switch {
		case tag == last.hi+1:
			last.hi = tag
			return
		case tag > last.hi+1:
			*rs = append(r, tagRun{tag, tag})
			return
		}
	}
	// i is the first run ending at or after tag-1 (so it may absorb tag).
	i, _ := slices.BinarySearchFunc(r, tag, func(x tagRun, t uint64) int {
		if x.hi+1 < t {
			return -1
		}
		return 1
	})
	if i < len(r) && r[i].lo <= tag && tag <= r[i].hi {
		return // settled already
	}
	joinsLeft := i < len(r) && r[i].hi+1 == tag
	if joinsLeft {
		r[i].hi = tag
		if i+1 < len(r) && r[i+1].lo == tag+1 {
			r[i].hi = r[i+1].hi
			r = slices.Delete(r, i+1, i+2)
		}
		*rs = r
		return
	}
	if i < len(r) && r[i].lo == tag+1 {
		r[i].lo = tag
		return
	}
	*rs = slices.Insert(r, i, tagRun{tag, tag})
}

// markLocked records tag as settled and advances the frontier.
func (f *ackFrontier) markLocked(tag uint64) {
	if f.next == 0 {
		f.next = 1
	}
	if tag < f.next {
		return
	}
	if tag != f.next {
		f.done.add(tag)
		return
	}
	f.next++
	if len(f.done) > 0 && f.done[0].lo == f.next {
		f.next = f.done[0].hi + 1
		f.done = slices.Delete(f.done, 0, 1)
	}
}

// ack records tag acked and sends what is due; an ack above the frontier
// is deferred only when deferOK (Broker.AckDeferred), else sent at once. It returns the error of a
// frame this call sent, or nil when another goroutine or a later one sends.
func (f *ackFrontier) ack(tag uint64, deferOK bool) error {
	f.mu.Lock()
	if f.next == 0 {
		f.next = 1
	}
	if tag > f.next && !deferOK {
		// Sent at once, before it is marked: until then no multiple ack
		// can cover it, so the frames cannot cross.
		f.mu.Unlock()
		if err := f.send(tag, false); err != nil {
			return err
		}
		f.mark(tag)
		return nil
	}
	if tag == f.next {
		f.markLocked(tag)
		f.hold = deferOK && (f.hold || f.pending <= f.acked)
		f.pending = tag
		if deferOK {
			f.held++
		}
	} else if tag > f.next {
		f.markLocked(tag)
		f.deferred = append(f.deferred, tag)
		f.armLocked()
	}
	err := f.drainLocked()
	f.mu.Unlock()
	return err
}

// mark records a delivery settled by other means (a reject or nack its
// caller sent), and sends the acks it may have made due.
func (f *ackFrontier) mark(tag uint64) {
	f.mu.Lock()
	f.markLocked(tag)
	_ = f.drainLocked()
	f.mu.Unlock()
}

// armLocked starts the deferral timer unless it runs.
func (f *ackFrontier) armLocked() {
	if f.timer == nil {
		f.timer = time.AfterFunc(ackDefer, f.expire)
	}
}

// expire is the deferral timer's tick: what was deferred before the last
// tick and is still above the frontier goes singly; what was deferred
// since becomes due at the next tick.
func (f *ackFrontier) expire() {
	f.mu.Lock()
	f.timer = nil
	f.expired = true
	_ = f.drainLocked()
	f.mu.Unlock()
}

// flush sends every ack recorded so far and waits until they are written:
// before the channel closes, or the broker would redeliver them.
func (f *ackFrontier) flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.timer != nil {
		f.timer.Stop()
		f.timer = nil
	}
	for f.flushing {
		f.wait()
	}
	f.due = append(f.due, f.deferred...)
	f.deferred = nil
	f.expired = true
	f.hold = false
	return f.drainLocked()
}

func (f *ackFrontier) wait() {
	if f.idle.L == nil {
		f.idle.L = &f.mu
	}
	f.idle.Wait()
}

// drainLocked sends what is due unless another goroutine is sending (it
// picks this up). Called and returns with mu held; mu is released while
// a frame is written.
func (f *ackFrontier) drainLocked() error {
	// Deferred acks the frontier has passed are below it now: the next
	// multiple ack covers them.
	f.deferred = f.promote(f.deferred)
	f.due = f.promote(f.due)
	if f.flushing {
		return nil
	}
	f.flushing = true
	var first error
	note := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	for {
		if f.expired {
			singles := f.due
			f.due, f.deferred, f.expired = f.deferred, nil, false
			f.hold = false // the tick sends the held frontier acks too
			if len(f.due) > 0 {
				f.armLocked()
			}
			f.mu.Unlock()
			for _, t := range singles {
				note(f.send(t, false))
			}
			f.mu.Lock()
			continue
		}
		upto := f.pending
		if upto <= f.acked {
			break
		}
		if f.hold && f.held < f.batch() {
			f.armLocked()
			break
		}
		f.mu.Unlock()
		err := f.send(upto, true)
		f.mu.Lock()
		note(err)
		f.acked = upto
		f.held = 0
	}
	f.flushing = false
	f.idle.Broadcast() // flush may wait; Broadcast needs no L
	return first
}

// batch is how many deferred acks a multiple ack waits for before the
// tick: a quarter of the prefetch, so the window RabbitMQ counts the
// unacked against never runs dry (1 with prefetch 1 or 2: at once).
func (f *ackFrontier) batch() int {
	w := int(f.window.Load())
	if w <= 0 {
		return 16
	}
	return max(1, w/4)
}

// promote takes out of tags those the frontier has passed: the next
// multiple ack covers them, so it names the highest.
func (f *ackFrontier) promote(tags []uint64) []uint64 {
	kept := tags[:0]
	for _, t := range tags {
		if t < f.next {
			if f.pending <= f.acked {
				f.hold = true
			}
			f.pending = max(f.pending, t)
			f.held++
		} else {
			kept = append(kept, t)
		}
	}
	return kept
}
