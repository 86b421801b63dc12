package amqp

import (
	"math/rand/v2"
	"runtime"
	"testing"
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
