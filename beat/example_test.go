package beat_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/beat"
	"github.com/gocelery/gocelery/producer"
)

func ExampleParseCrontab() {
	// minute hour day-of-month month day-of-week, as crontab.from_string.
	c, err := beat.ParseCrontab("*/15 9-17 * * mon-fri", time.UTC)
	if err != nil {
		panic(err)
	}
	last := time.Date(2026, 11, 27, 17, 50, 0, 0, time.UTC) // a Friday
	fmt.Println(c.Next(last))

	_, err = beat.ParseCrontab("0 0 * * 7", time.UTC)
	fmt.Println(err)
	// Output:
	// 2026-11-30 09:00:00 +0000 UTC
	// beat: bad crontab: day_of_week "7": invalid end range: 7 > 6
}

func ExampleParseTrigger() {
	for _, s := range []string{"every 10s", "30 2 * * *", "at 2026-12-24T18:00:00Z"} {
		sched, err := beat.ParseTrigger(s, time.UTC)
		if err != nil {
			panic(err)
		}
		fmt.Println(sched.Next(time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)))
	}
	// Output:
	// 2026-11-26 08:00:10 +0000 UTC
	// 2026-11-27 02:30:00 +0000 UTC
	// 2026-12-24 18:00:00 +0000 UTC
}

func ExampleParseFile() {
	entries, err := beat.ParseFile([]byte(`
entries:
  - name: nightly-report
    task: reports.nightly
    trigger: "30 2 * * mon-fri"
    timezone: Europe/Berlin
    options: {queue: reports, expires: 3600}
  - name: heartbeat
    task: ops.ping
    trigger: every 10s
`))
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		fmt.Println(e.Name, e.Task, e.Schedule)
	}
	_, err = beat.ParseFile([]byte("entries:\n  - {name: bad, task: t, trigger: '0 0 * * 1-8'}\n"))
	fmt.Println(err)
	// Output:
	// nightly-report reports.nightly 30 2 * * mon-fri
	// heartbeat ops.ping every 10s
	// entry "bad": beat: bad crontab: day_of_week "1-8": invalid end range: 8 > 6
}

// Embedding the scheduler in every process of a web server is safe: one
// process leads and sends, the others stand by.
func ExampleNew() {
	run := func(ctx context.Context, rdb redis.UniversalClient, p *producer.Producer) {
		s := beat.New(rdb, p, beat.Config{KeyPrefix: "redbeat:", LockTTL: 5 * time.Second})
		go func() {
			if err := s.Run(ctx); err != nil {
				slog.Error("beat stopped", "err", err)
			}
		}()
		// Entries are data: add one at run time, from any process.
		sched, _ := beat.ParseTrigger("*/15 * * * mon-fri", time.UTC)
		_ = s.Store().Put(ctx, &beat.Entry{Name: "sync-crm", Task: "crm.sync", Schedule: sched, Enabled: true,
			Options: map[string]any{"queue": "crm", "expires": 600}})
	}
	_ = run
}
