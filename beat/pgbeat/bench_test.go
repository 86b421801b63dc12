package pgbeat

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gocelery/gocelery/beat"
)

// BenchmarkLeader10kPostgres is beat's BenchmarkLeader10k on PostgreSQL:
// 10,000 entries, each every 10 s, their phases spread over the 10 s
// (1,000 runs a second, 1 to 2 per tick), a sender that does not publish,
// 12 s of leading. It reports the send delay after the due time (p50,
// p99, max), the leader process's CPU per tick with runs due and per
// second, the PostgreSQL server's CPU per second (all its processes), and
// the sends. Run it next to beat's in one go test to compare:
//
//	go test -run '^$' -bench 'Leader10k(Postgres)?$' ./beat/ ./beat/pgbeat/
func BenchmarkLeader10kPostgres(b *testing.B) {
	for _, schema := range []Schema{SchemaPeriodicTask, SchemaDjango} {
		b.Run(string(schema), func(b *testing.B) { benchLeader(b, schema) })
	}
}

func benchLeader(b *testing.B, schema Schema) {
	const n = 10000
	every := 10 * time.Second
	st := testStore(b, schema)
	ctx := context.Background()
	start := time.Now().Add(3 * time.Second) // the first runs are due then
	names := make([]string, n)
	lasts := make([]time.Time, n)
	for i := range n {
		names[i] = fmt.Sprintf("e%05d", i)
		lasts[i] = micro(start.Add(-every + time.Duration(i)*every/n))
	}
	var err error
	if schema == SchemaPeriodicTask {
		_, err = st.pool.Exec(ctx, `INSERT INTO periodic_task (name, task, args, trigger, last_run_time)
SELECT u.name, 'bench.tick', jsonb_build_array(u.i), 'every 10s', u.last
FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS u(name, last, i)`, names, lasts)
	} else {
		_, err = st.pool.Exec(ctx, `WITH iv AS (INSERT INTO django_celery_beat_intervalschedule (every, period) VALUES (10, 'seconds') RETURNING id)
INSERT INTO django_celery_beat_periodictask (name, task, args, kwargs, enabled, last_run_at, total_run_count, date_changed,
    description, interval_id, one_off, headers)
SELECT u.name, 'bench.tick', '[' || u.i || ']', '{}', true, u.last, 0, now(), '', iv.id, false, '{}'
FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS u(name, last, i), iv`, names, lasts)
	}
	if err != nil {
		b.Fatal(err)
	}
	if time.Until(start) < time.Second {
		b.Fatal("writing the entries took too long for the schedule's start")
	}
	var mu sync.Mutex
	var delays []time.Duration
	cfg := Config{Config: beat.Config{OnSend: func(ev beat.SendEvent) {
		mu.Lock()
		delays = append(delays, ev.Sent.Sub(ev.Due))
		mu.Unlock()
	}}}
	s := New(st, &recordingSender{}, cfg)
	b.ResetTimer()
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.Run(runCtx) })
	time.Sleep(time.Until(start))
	const run = 12 * time.Second
	cpu0, pg0, ticks0 := cpuTime(), postgresCPU(), s.ticks.Load()
	mu.Lock()
	delays = delays[:0]
	mu.Unlock()
	time.Sleep(run)
	cpu, pg, ticks := cpuTime()-cpu0, postgresCPU()-pg0, s.ticks.Load()-ticks0
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
	b.ReportMetric(float64(pg.Milliseconds())/run.Seconds(), "pg-cpu-ms/s")
	b.ReportMetric(float64(len(delays))/run.Seconds(), "sends/s")
}

// cpuTime is this process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// postgresCPU is the CPU time of every process named postgres (the
// server and its backends), from /proc; 0 where that cannot be read.
func postgresCPU() time.Duration {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var ticks int64
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open || s[open+1:closing] != "postgres" {
			continue
		}
		f := strings.Fields(s[closing+2:])
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		k, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + k
	}
	return time.Duration(ticks) * (time.Second / 100) // USER_HZ
}
