package beat

import (
	"testing"
	"time"
)

// FuzzParseCrontab: any string is a crontab or an error, and a parsed one
// answers Next (a date that never comes, such as 31 February, included).
func FuzzParseCrontab(f *testing.F) {
	for _, s := range []string{"*/15 * * * *", "0 0 * * mon-fri", "0 0 29 2 *", "0 0 31 2 *", "5 4 1-7 * 0",
		"* * * * *", "0,30 9-17/2 * jan-mar sun", "60 * * * *", "*/0 * * * *"} {
		f.Add(s)
	}
	last := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCrontab(s, time.UTC)
		if err != nil {
			return
		}
		next := c.Next(last)
		if !next.IsZero() && !next.After(last) {
			t.Fatalf("%q: next %v is not after %v", s, next, last)
		}
	})
}

// FuzzDecodeEntry: an entry's hash in Redis may be written by redbeat, by
// hand or by anything; reading it returns an entry or an error.
func FuzzDecodeEntry(f *testing.F) {
	f.Add(`{"name": "e", "task": "t", "schedule": {"__type__": "interval", "every": 5.0, "relative": false}, "args": [], "kwargs": {}, "options": {}, "enabled": true}`,
		`{"last_run_at": {"__type__": "datetime", "year": 2026, "month": 11, "day": 26, "hour": 12, "minute": 0, "second": 0, "microsecond": 0, "timezone": "UTC"}, "total_run_count": 3}`,
		`{"timezone": "Europe/Berlin"}`)
	f.Add(`{"name": "c", "task": "t", "schedule": {"__type__": "crontab", "minute": "*/5", "hour": "*", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"}}`, ``, ``)
	f.Fuzz(func(t *testing.T, def, meta, ext string) {
		e, err := decodeEntry(map[string]string{"definition": def, "meta": meta, "gocelery": ext})
		if err == nil && e.Schedule != nil {
			_ = e.NextRun(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
		}
	})
}
