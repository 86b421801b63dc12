package amqp

import (
	"slices"
	"sync"
)

// ackFrontier coalesces acks into basic.ack(multiple=true), which is most
// of what RabbitMQ spends per message at high rates. Only the frontier is
// coalesced: a delivery whose tag is the lowest one not yet settled is
// marked, and one goroutine at a time (group commit: no timer, batches form
// only under load) acks everything below the new frontier with one frame.
// A delivery above the frontier (an older one is still running or held for
// its ETA) is acked on its own at once, so a held message never delays
// other acks. Rejects are always sent on their own, before they are marked,
// so a multiple ack can never cover a message meant for rejection.
//
// Settled tags above the frontier are kept as runs, not one by one: every
// gap between two runs is a delivery still unsettled, so the memory is
// bounded by the unsettled deliveries (prefetch plus held ETA tasks), not by
// how many were settled behind one that is held for hours.
type ackFrontier struct {
	mu       sync.Mutex
	next     uint64  // lowest tag not settled; tags start at 1
	done     tagRuns // settled tags above next
	pending  uint64  // highest tag acked at the frontier, not yet sent
	acked    uint64  // multiple acks sent up to here
	flushing bool
}

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

// mark records a delivery settled by other means (a nack at shutdown).
func (f *ackFrontier) mark(tag uint64) {
	f.mu.Lock()
	f.markLocked(tag)
	f.mu.Unlock()
}
