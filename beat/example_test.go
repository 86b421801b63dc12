package beat_test

import (
	"fmt"
	"time"

	"github.com/gocelery/gocelery/beat"
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
