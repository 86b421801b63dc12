package redis

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/gocelery/gocelery/broker"
)

// state is where a received message stands.
type state int

const (
	stateLive     state = iota // unsettled: kept alive
	stateSettling              // Ack or Reject in flight
	stateDeferred              // Ack or Reject to be retried once Redis answers: kept alive
	stateDone                  // settled
	stateRestored              // given back by this process (Close, a stopping consumer)
	stateStale                 // found restored by someone else: not this process's to run
)

// settleOp is what Ack or Reject asked for.
type settleOp int

const (
	opAck settleOp = iota
	opDrop
	opRequeue
)

func (op settleOp) String() string {
	return [...]string{"ack", "reject", "requeue"}[op]
}

// maxCandidates bounds the scores remembered for one delivery; see
// inflight.scores.
const maxCandidates = 16

// inflight is one received message this process is responsible for, from
// the pop that took it until it is settled or given back. It is
// Delivery.Private.
type inflight struct {
	b        *Broker
	c        *consumer
	seq      uint64 // order of receipt, for giving back in kombu's order
	tag      string
	list     string // the list it was popped from (prefixed)
	envelope []byte // as popped
	d        broker.Delivery

	mu    sync.Mutex
	state state
	// scores are the unacked_index scores this process may have left for
	// tag: the last one written, plus any whose write failed in a way
	// that does not say whether it happened. Settling and refreshing
	// accept any of them (see scripts.go).
	scores []float64
	op     settleOp // for stateDeferred
	lost   bool     // a refresh found it restored by someone else
	// confirmed is when Redis last showed the delivery to be this
	// process's: recorded, or a refresh found one of its scores.
	confirmed time.Time
	warned    bool // a deferred settle's failure was logged

	tagged bool // counted in Broker.liveTags; guarded by Broker.mu
}

// score returns the unacked_index score for t: seconds since the epoch as
// a float, as Python's time.time().
func score(t time.Time) float64 {
	return float64(t.UnixNano()) / 1e9
}

func scoreArgs(scores []float64) []any {
	out := make([]any, len(scores))
	for i, s := range scores {
		out[i] = s
	}
	return out
}

// addScore remembers a score about to be written. f.mu is held.
func (f *inflight) addScore(s float64) {
	if len(f.scores) >= maxCandidates {
		f.scores = slices.Delete(f.scores, 0, len(f.scores)-maxCandidates+1)
	}
	f.scores = append(f.scores, s)
}

// addLive registers f as received and recorded.
func (b *Broker) addLive(f *inflight) {
	b.mu.Lock()
	b.seq++
	f.seq = b.seq
	b.live[f] = struct{}{}
	b.liveTags[f.tag]++
	f.tagged = true
	b.mu.Unlock()
}

// dropLive forgets f.
func (b *Broker) dropLive(f *inflight) {
	b.mu.Lock()
	delete(b.live, f)
	b.untagLocked(f)
	b.mu.Unlock()
}

// untag stops shielding f's tag from this process's restorer: the
// message under that tag is someone else's now.
func (b *Broker) untag(f *inflight) {
	b.mu.Lock()
	b.untagLocked(f)
	b.mu.Unlock()
}

func (b *Broker) untagLocked(f *inflight) {
	if !f.tagged {
		return
	}
	f.tagged = false
	if b.liveTags[f.tag]--; b.liveTags[f.tag] <= 0 {
		delete(b.liveTags, f.tag)
	}
}

func (b *Broker) isLiveTag(tag string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.liveTags[tag] > 0
}

// liveSnapshot returns the live deliveries in order of receipt.
func (b *Broker) liveSnapshot() []*inflight {
	b.mu.Lock()
	fs := make([]*inflight, 0, len(b.live))
	for f := range b.live {
		fs = append(fs, f)
	}
	b.mu.Unlock()
	sort.Slice(fs, func(i, j int) bool { return fs[i].seq < fs[j].seq })
	return fs
}

// Ack acknowledges d: the message is removed from unacked (ZREM + HDEL,
// as kombu's ack). A delivery another consumer restored meanwhile (its
// visibility timeout passed while this process could not refresh it; see
// Stale) returns broker.ErrStaleDelivery, and the restored copy is left
// alone. If Redis cannot be reached, or answers with an error, the ack is
// kept and retried in the background until it lands (the delivery is kept
// alive meanwhile), and Ack returns nil. A delivery from a fanout (PUB/SUB) queue has nothing to acknowledge:
// Ack and Reject return nil and do nothing.
func (b *Broker) Ack(d *broker.Delivery) error {
	return b.settle(d, opAck)
}

// Reject drops d (requeue false, as kombu: there is no dead-lettering on
// Redis) or gives it back to the back of the list it came from (requeue
// true, LPUSH, as kombu's reject), marked redelivered in headers and
// delivery_info. Errors and outages are as for Ack.
func (b *Broker) Reject(d *broker.Delivery, requeue bool) error {
	if requeue {
		return b.settle(d, opRequeue)
	}
	return b.settle(d, opDrop)
}

func (b *Broker) settle(d *broker.Delivery, op settleOp) error {
	if fd, ok := d.Private.(*fanoutDelivery); ok {
		if fd.b != b {
			return ErrForeignDelivery
		}
		return nil // PUB/SUB: nothing to acknowledge (see fanout.go)
	}
	f, ok := d.Private.(*inflight)
	if !ok || f.b != b {
		return ErrForeignDelivery
	}
	f.mu.Lock()
	switch f.state {
	case stateLive:
	case stateRestored, stateStale:
		f.mu.Unlock()
		return fmt.Errorf("redis: %s delivery %s: %w", op, f.tag, broker.ErrStaleDelivery)
	default:
		f.mu.Unlock()
		return ErrAlreadySettled
	}
	f.state = stateSettling
	scores := slices.Clone(f.scores)
	f.mu.Unlock()

	ctx, cancel := opContext()
	defer cancel()
	ours, err := b.apply(ctx, f, op, scores)
	if err == nil {
		if !ours {
			f.finish(stateStale)
			return fmt.Errorf("redis: %s delivery %s: restored by another consumer meanwhile: %w", op, f.tag, broker.ErrStaleDelivery)
		}
		f.finish(stateDone)
		return nil
	}
	// Whatever stopped it (an outage, or an error reply such as NOPERM or
	// max clients), the settle is kept and retried until it lands: giving
	// the delivery back to live would have it restored, and run again, at
	// Close or after the visibility timeout. (kombu raises, Celery logs,
	// and the message is redelivered.)
	if !isConnError(err) {
		b.logger.Warn("redis: "+op.String()+" failed; retrying it until it lands", "queue", f.d.Queue, "tag", f.tag, "error", err)
	}
	f.mu.Lock()
	f.state, f.op = stateDeferred, op
	f.mu.Unlock()
	f.c.release()
	b.keeper.poke()
	return nil
}

// Stale reports whether d is no longer this process's to run: it was given
// back (Close), or a settle or the keep-alive found that another consumer
// restored it (its visibility timeout passed while this process could not
// refresh it), so running it would run it twice. A delivery not confirmed
// as this process's for half the visibility timeout (an outage stopped the
// keep-alive) is checked now; if Redis cannot tell and the visibility
// timeout has passed since, it is given up as stale and left in unacked,
// for the restore to bring back. It implements broker.Delivery.Stale.
func (b *Broker) Stale(d *broker.Delivery) bool {
	f, ok := d.Private.(*inflight)
	if !ok || f.b != b {
		return false
	}
	f.mu.Lock()
	state, lost, since := f.state, f.lost, time.Since(f.confirmed)
	f.mu.Unlock()
	switch {
	case state == stateRestored || state == stateStale || lost:
		return true
	case state != stateLive || since < b.opts.VisibilityTimeout/2:
		return false
	}
	// Bounded: the worker waits on it before running a task.
	ctx, cancel := context.WithTimeout(context.Background(), min(2*time.Second, max(b.opts.VisibilityTimeout/4, 200*time.Millisecond)))
	defer cancel()
	err := b.keeper.refreshBatch(ctx, []*inflight{f})
	f.mu.Lock()
	state, since = f.state, time.Since(f.confirmed)
	giveUp := err != nil && state == stateLive && since >= b.opts.VisibilityTimeout
	if giveUp {
		f.state, f.lost = stateStale, true
	}
	f.mu.Unlock()
	if giveUp {
		b.logger.Warn("redis: a delivery could not be confirmed as this process's for longer than the visibility timeout; not running it (the restore brings it back)",
			"queue", f.d.Queue, "tag", f.tag, "error", err)
		f.retire()
		return true
	}
	return state == stateStale || state == stateRestored
}

// finish ends f's life as a delivery of this process.
func (f *inflight) finish(s state) {
	f.mu.Lock()
	prev := f.state
	f.state = s
	f.mu.Unlock()
	f.b.dropLive(f)
	if prev != stateDeferred && prev != stateStale { // their credit was given back already
		f.c.release()
	}
}

// retire forgets f, now stale, and gives back its credit: the message is
// someone else's, or the restore's.
func (f *inflight) retire() {
	f.b.dropLive(f)
	f.c.release()
}

// apply runs op for f with the given candidate scores; ours is false when
// the delivery was proven no longer this process's (its tag has another
// score). A tag gone from the index counts as settled: most likely by an
// earlier attempt whose reply was lost and that go-redis sent again;
// calling that stale would have the worker drop an early-acked task,
// lost, where the worst the other reading costs is a task run twice.
func (b *Broker) apply(ctx context.Context, f *inflight, op settleOp, scores []float64) (ours bool, err error) {
	var n int64
	switch op {
	case opRequeue:
		n, err = b.requeue(ctx, f, "LPUSH", scores)
	default:
		args := append([]any{f.tag}, scoreArgs(scores)...)
		n, err = b.settles.Run(ctx, []string{b.keys.unacked(), b.keys.unackedIdx()}, args...).Int64()
		b.health.observe(err)
	}
	return n != 0, err
}

// requeue pushes f back on its list (push is LPUSH or RPUSH), marked
// redelivered, if it is still this process's.
func (b *Broker) requeue(ctx context.Context, f *inflight, push string, scores []float64) (int64, error) {
	payload, err := markRedelivered(f.envelope)
	if err != nil {
		payload = f.envelope // ParseEnvelope took it; push it back as it came
	}
	args := append([]any{f.tag, payload, push}, scoreArgs(scores)...)
	n, err := requeueScript.Run(ctx, b.client, []string{b.keys.unacked(), b.keys.unackedIdx(), f.list}, args...).Int64()
	b.health.observe(err)
	return n, err
}

// restoreLive gives back, at shutdown, every live delivery: RPUSH to the
// front of its list, newest first, so the oldest is consumed first again,
// as kombu's restore_unacked does.
func (b *Broker) restoreLive(ctx context.Context) {
	fs := b.liveSnapshot()
	failed := 0
	for i := len(fs) - 1; i >= 0; i-- {
		f := fs[i]
		f.mu.Lock()
		if f.state != stateLive {
			f.mu.Unlock()
			continue // settling, or deferred: the keeper's last flush
		}
		f.state = stateRestored
		scores := slices.Clone(f.scores)
		f.mu.Unlock()
		if _, err := b.requeue(ctx, f, "RPUSH", scores); err != nil {
			failed++
		}
		f.finish(stateRestored)
	}
	if failed > 0 {
		b.logger.Error("redis: could not give back unsettled deliveries at close; the visibility timeout will restore them",
			"count", failed, "visibility_timeout", b.opts.VisibilityTimeout)
	}
}

// deliveryInfoRedelivered reports properties.delivery_info.redelivered,
// which protocol.ParseEnvelope does not keep. Only envelopes that mention
// the word are decoded again.
func deliveryInfoRedelivered(envelope []byte) bool {
	if !bytes.Contains(envelope, []byte(`"redelivered"`)) {
		return false
	}
	var m struct {
		Properties struct {
			DeliveryInfo struct {
				Redelivered bool `json:"redelivered"`
			} `json:"delivery_info"`
		} `json:"properties"`
	}
	return json.Unmarshal(envelope, &m) == nil && m.Properties.DeliveryInfo.Redelivered
}
