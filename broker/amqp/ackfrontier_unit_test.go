package amqp

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// The runs agree with a plain set of settled tags, whatever the order.
func TestAckFrontierRuns(t *testing.T) {
	for _, tc := range []struct {
		name  string
		order func(n int, r *rand.Rand) []uint64
	}{
		{"in order", func(n int, _ *rand.Rand) []uint64 { return seq(n) }},
		{"reversed", func(n int, _ *rand.Rand) []uint64 {
			s := seq(n)
			for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
				s[i], s[j] = s[j], s[i]
			}
			return s
		}},
		{"shuffled", func(n int, r *rand.Rand) []uint64 {
			s := seq(n)
			r.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
			return s
		}},
		{"nearly in order", func(n int, r *rand.Rand) []uint64 {
			s := seq(n)
			for i := range s { // concurrency 8: each finishes within 8 of its turn
				j := min(len(s)-1, i+r.IntN(8))
				s[i], s[j] = s[j], s[i]
			}
			return s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			const n = 2000
			order := tc.order(n, r)
			var f ackFrontier
			settled := map[uint64]bool{}
			for i, tag := range order {
				f.markLocked(tag)
				if i%7 == 3 {
					f.markLocked(tag) // settling twice changes nothing
				}
				settled[tag] = true
				want := uint64(1)
				for settled[want] {
					want++
				}
				if f.next != want {
					t.Fatalf("after %d marks: next %d, want %d", i+1, f.next, want)
				}
				for k, run := range f.done {
					if run.lo <= f.next || run.lo > run.hi || (k > 0 && f.done[k-1].hi+1 >= run.lo) {
						t.Fatalf("after %d marks: bad runs %v (next %d)", i+1, f.done, f.next)
					}
					for x := run.lo; x <= run.hi; x++ {
						if !settled[x] {
							t.Fatalf("run %v holds unsettled %d", run, x)
						}
					}
				}
			}
			if f.next != n+1 || len(f.done) != 0 {
				t.Fatalf("end: next %d, runs %v", f.next, f.done)
			}
		})
	}
}

func seq(n int) []uint64 {
	s := make([]uint64, n)
	for i := range s {
		s[i] = uint64(i + 1)
	}
	return s
}

// Memory stays flat behind one held tag: 2 million settled deliveries
// after tag 1 (an ETA task held for hours) are one run, not 2 million
// entries (a map of them was about 70 MB).
func TestAckFrontierHeldTagMemory(t *testing.T) {
	var f ackFrontier
	const n = 2_000_000
	before := heapInUse()
	for tag := uint64(2); tag <= n+1; tag++ {
		f.markLocked(tag)
	}
	growth := heapInUse() - before
	if f.next != 1 || len(f.done) != 1 {
		t.Fatalf("next %d, %d runs", f.next, len(f.done))
	}
	if growth > 5<<20 {
		t.Fatalf("heap grew %d bytes for %d settled tags behind a held one", growth, n)
	}
	f.markLocked(1)
	if f.next != n+2 || len(f.done) != 0 {
		t.Fatalf("after the held tag: next %d, %d runs", f.next, len(f.done))
	}
}

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// BenchmarkAckFrontierHeld marks tags behind one held tag, eight at a time
// out of order, as a worker of concurrency 8 settles them; it reports the
// heap growth per million settled.
func BenchmarkAckFrontierHeld(b *testing.B) {
	var f ackFrontier
	r := rand.New(rand.NewPCG(3, 4))
	before := heapInUse()
	batch := make([]uint64, 8)
	tag := uint64(2)
	b.ResetTimer()
	for i := 0; i < b.N; i += len(batch) {
		for k := range batch {
			batch[k] = tag + uint64(k)
		}
		r.Shuffle(len(batch), func(x, y int) { batch[x], batch[y] = batch[y], batch[x] })
		for _, t := range batch {
			f.markLocked(t)
		}
		tag += uint64(len(batch))
	}
	b.StopTimer()
	b.ReportMetric(float64(heapInUse()-before)/float64(b.N)*1e6/(1<<20), "MB/1M-acks")
	b.ReportMetric(float64(len(f.done)), "runs")
}

// ackModel is RabbitMQ's side of one channel's acks: the unacked tags, and
// the rule that a frame naming a tag no longer unacked closes the channel.
type ackModel struct {
	t        *testing.T
	mu       sync.Mutex
	unacked  map[uint64]bool
	frames   int
	multiple int
}

func newAckModel(t *testing.T, n int) *ackModel {
	m := &ackModel{t: t, unacked: map[uint64]bool{}}
	for tag := uint64(1); tag <= uint64(n); tag++ {
		m.unacked[tag] = true
	}
	return m
}

func (m *ackModel) send(tag uint64, multiple bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.frames++
	if !m.unacked[tag] {
		m.t.Errorf("basic.ack(%d, multiple=%v): unknown delivery tag, the channel would close", tag, multiple)
		return nil
	}
	if !multiple {
		delete(m.unacked, tag)
		return nil
	}
	m.multiple++
	for u := range m.unacked {
		if u <= tag {
			delete(m.unacked, u)
		}
	}
	return nil
}

func (m *ackModel) reject(tag uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.unacked[tag] {
		m.t.Errorf("basic.reject(%d): unknown delivery tag", tag)
	}
	delete(m.unacked, tag)
}

func (m *ackModel) left() []uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var l []uint64
	for u := range m.unacked {
		l = append(l, u)
	}
	slices.Sort(l)
	return l
}

// Concurrent acks and rejects, a few tags out of order as concurrent tasks
// start them, never break RabbitMQ's rule and all land; deferred ones
// mostly go in multiple acks, and a held tag delays them by about ackDefer
// only.
func TestAckFrontierFrames(t *testing.T) {
	const n = 4000
	for _, tc := range []struct {
		name       string
		workers    int
		held       bool // tag 1 is held until the end, as an ETA task
		rejectEach int  // every rejectEach-th tag is rejected; 0: none
		now        int  // every now-th tag is acked by Ack, the others by AckDeferred; 1: all by Ack
		maxFrames  int  // acks must coalesce at least this well
	}{
		{name: "one goroutine, nearly in order", workers: 1, maxFrames: n / 3},
		{name: "8 goroutines", workers: 8, maxFrames: n / 2},
		{name: "8 goroutines, rejects", workers: 8, rejectEach: 13, maxFrames: n / 2},
		{name: "8 goroutines, held first tag", workers: 8, held: true, maxFrames: n},
		{name: "8 goroutines, Ack only, rejects", workers: 8, rejectEach: 13, now: 1, maxFrames: n},
		{name: "8 goroutines, Ack and AckDeferred, rejects", workers: 8, rejectEach: 13, now: 3, maxFrames: n},
		{name: "8 goroutines, Ack and AckDeferred, held first tag", workers: 8, held: true, now: 2, maxFrames: n},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newAckModel(t, n)
			f := &ackFrontier{send: m.send}
			r := rand.New(rand.NewPCG(3, 4))
			order := seq(n)
			for i := range order { // each within 8 of its turn
				j := min(len(order)-1, i+r.IntN(8))
				order[i], order[j] = order[j], order[i]
			}
			if tc.held {
				order = slices.DeleteFunc(order, func(tag uint64) bool { return tag == 1 })
			}
			work := make(chan uint64)
			var wg sync.WaitGroup
			for range tc.workers {
				wg.Go(func() {
					for tag := range work {
						if tc.rejectEach > 0 && tag%uint64(tc.rejectEach) == 0 {
							m.reject(tag) // sent by the caller, then marked
							f.mark(tag)
							continue
						}
						_ = f.ack(tag, tc.now == 0 || tag%uint64(tc.now) != 0)
					}
				})
			}
			for _, tag := range order {
				work <- tag
			}
			close(work)
			wg.Wait()
			if tc.held {
				// Without flush: the deferred acks go out on their own soon.
				deadline := time.Now().Add(2 * time.Second)
				for len(m.left()) > 1 && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				if l := m.left(); len(l) != 1 || l[0] != 1 {
					t.Fatalf("behind a held tag, %d unacked after 2s, want only tag 1", len(l))
				}
				_ = f.ack(1, false)
			}
			if err := f.flush(); err != nil {
				t.Fatal(err)
			}
			if l := m.left(); len(l) != 0 {
				t.Fatalf("%d tags never acked, first %v", len(l), l[:min(5, len(l))])
			}
			if m.frames > tc.maxFrames {
				t.Errorf("%d frames for %d tags, want at most %d", m.frames, n, tc.maxFrames)
			}
			t.Logf("%d frames (%d multiple) for %d tags", m.frames, m.multiple, n)
		})
	}
}

// Deferred frontier acks wait for a quarter of the prefetch window or the
// tick: with prefetch 1 each goes at once (the broker sends nothing more
// until it arrives); with prefetch 32 a few go together after the tick,
// with no flush.
func TestAckFrontierDeferredWindow(t *testing.T) {
	m := newAckModel(t, 100)
	f := &ackFrontier{send: m.send}
	f.window.Store(1)
	for tag := uint64(1); tag <= 50; tag++ {
		_ = f.ack(tag, true)
		if l := m.left(); len(l) > 0 && l[0] <= tag {
			t.Fatalf("prefetch 1: tag %d still unacked after its ack", tag)
		}
	}
	f.window.Store(32)
	frames := m.frames
	for tag := uint64(51); tag <= 55; tag++ {
		_ = f.ack(tag, true)
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(m.left()) > 45 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if l := m.left(); len(l) != 45 || l[0] != 56 {
		t.Fatalf("prefetch 32: after the tick %d unacked (first %v), want 56..100", len(l), l[:min(1, len(l))])
	}
	if m.frames-frames != 1 {
		t.Errorf("prefetch 32: 5 deferred acks went in %d frames, want 1", m.frames-frames)
	}
}
