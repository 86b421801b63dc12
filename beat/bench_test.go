package beat

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	redisbroker "github.com/gocelery/gocelery/broker/redis"
	"github.com/gocelery/gocelery/producer"
)

// BenchmarkLeader10k runs a leader over 10,000 entries in real Redis: each
// every 10 s, their phases spread over the 10 s (1,000 runs a second, 1 to
// 2 per tick), with a sender that does not publish, for 12 s. It reports
// the send delay after the due time (p50, p99, max), the leader process's
// CPU per tick with runs due and per second, and the sends. The run is
// the same whatever -benchtime says.
func BenchmarkLeader10k(b *testing.B) {
	benchLeader(b, 10*time.Second, 12*time.Second, false)
}

// BenchmarkLeader10kBurst is the worst case: the 10,000 entries (hourly)
// all due at the same instant, in one tick.
func BenchmarkLeader10kBurst(b *testing.B) {
	benchLeader(b, time.Hour, 3*time.Second, false)
}

// BenchmarkLeader10kRedisBroker is BenchmarkLeader10k publishing for real:
// a producer on the Redis broker (kombu's layout, keys under the test's
// prefix in DB 5), so the delay includes the publish.
func BenchmarkLeader10kRedisBroker(b *testing.B) {
	benchLeader(b, 10*time.Second, 12*time.Second, true)
}

func benchLeader(b *testing.B, every, run time.Duration, publish bool) {
	const n = 10000
	spread := every
	if every >= time.Hour {
		spread = 0 // all due together
	}
	rdb, prefix := testRedis(b)
	ctx := context.Background()
	st := NewStore(rdb, prefix)
	start := time.Now().Add(2 * time.Second) // the first runs are due then
	// Written in pipelines (Put is three round trips an entry).
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range n {
			last := start.Add(-every + time.Duration(i)*spread/n)
			e := &Entry{Name: fmt.Sprintf("e%05d", i), Task: "bench.tick", Args: []any{i},
				Schedule: &Interval{Every: every}, Enabled: true}
			def, ext, err := e.encodeDefinition()
			if err != nil {
				return err
			}
			p.HSet(ctx, st.Key(e.Name), "definition", def, "gocelery", ext, "meta", encodeMeta(last, 0))
			p.ZAdd(ctx, st.ScheduleKey(), redis.Z{Score: score(last.Add(every)), Member: st.Key(e.Name)})
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if time.Until(start) < time.Second {
		b.Fatal("writing the entries took too long for the schedule's start")
	}
	var mu sync.Mutex
	var delays []time.Duration
	var sender Sender = &recordingSender{}
	if publish {
		br := redisbroker.New(rdb, 5, redisbroker.Config{KeyPrefix: prefix, Logger: slog.New(slog.DiscardHandler)})
		defer br.Close()
		sender = producer.New(br, nil, producer.Config{DefaultQueue: "bench"})
	}
	s := New(rdb, sender, Config{KeyPrefix: prefix, OnSend: func(ev SendEvent) {
		mu.Lock()
		delays = append(delays, ev.Sent.Sub(ev.Due))
		mu.Unlock()
	}})
	b.ResetTimer()
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.Run(runCtx) })
	time.Sleep(time.Until(start)) // leader elected, store loaded
	cpu0, ticks0 := cpuTime(), s.ticks.Load()
	mu.Lock()
	delays = delays[:0]
	mu.Unlock()
	time.Sleep(run)
	cpu, ticks := cpuTime()-cpu0, s.ticks.Load()-ticks0
	cancel()
	wg.Wait()
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	if len(delays) < n {
		b.Fatalf("%d sends in %s, want every one of %d entries", len(delays), run, n)
	}
	slices.Sort(delays)
	pct := func(p float64) float64 {
		return float64(delays[int(p*float64(len(delays)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-delay-ms")
	b.ReportMetric(pct(0.99), "p99-delay-ms")
	b.ReportMetric(pct(1), "max-delay-ms")
	b.ReportMetric(float64(cpu.Microseconds())/float64(ticks), "cpu-µs/tick")
	b.ReportMetric(float64(cpu.Milliseconds())/run.Seconds(), "cpu-ms/s")
	if spread > 0 {
		b.ReportMetric(float64(len(delays))/run.Seconds(), "sends/s")
	}
}

// cpuTime is this process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
