package pgbeat

import (
	"reflect"
	"testing"
	"time"
)

// fakeRow scans fixed values into a row's destinations (nil: NULL).
type fakeRow []any

func (r fakeRow) Scan(dest ...any) error {
	for i, d := range dest {
		v := reflect.ValueOf(d).Elem()
		if r[i] == nil {
			v.SetZero()
			continue
		}
		x := reflect.ValueOf(r[i])
		if v.Kind() == reflect.Pointer && x.Kind() != reflect.Pointer {
			p := reflect.New(v.Type().Elem())
			p.Elem().Set(x)
			x = p
		}
		v.Set(x)
	}
	return nil
}

// FuzzDjangoRow decodes django_celery_beat_periodictask rows with any text
// in the columns Django stores as text: never a panic, and an entry
// returned without error can be scheduled.
func FuzzDjangoRow(f *testing.F) {
	f.Add(`[1, "a"]`, `{"x": 2}`, `{"h": "v"}`, "seconds", int64(10), "*/5", "*", "mon-fri", "America/New_York", 0)
	f.Add(`[]`, `{}`, ``, "microseconds", int64(1), "0", "4", "*", "UTC", 1)
	f.Add(`[`, `{"a":`, `[1]`, "fortnights", int64(-1), "61", "x", "8", "Nowhere/City", 2)
	f.Add(`null`, `null`, `null`, "days", int64(1), "", "", "", "", 3)
	f.Fuzz(func(t *testing.T, args, kwargs, headers, period string, every int64, minute, hour, dow, tz string, kind int) {
		now := time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC)
		var intervalID, crontabID, clockedID, solarID any
		switch kind % 4 {
		case 0:
			intervalID = int64(1)
		case 1:
			crontabID = int64(1)
		case 2:
			clockedID = int64(1)
		default:
			solarID = int64(1)
		}
		ev := int(every)
		row := fakeRow{int64(1), "task", "", "app.t", args, kwargs, nil, nil,
			nil, nil, headers, nil, nil, false, nil,
			true, nil, 0, now,
			intervalID, ev, period, crontabID, minute, hour, dow, "*",
			"*", tz, clockedID, now, solarID,
			nil, nil, nil, nil, nil, []byte(nil)}
		e, err := scanDjango(row, now)
		if err != nil {
			return
		}
		if e.Schedule == nil {
			t.Fatal("no schedule and no error")
		}
		_ = e.NextRun(e.LastRunAt)
		_ = sendOptions(e.Options, "id", now)
	})
}

// FuzzPeriodicTaskRow decodes periodic_task rows with any jsonb and
// trigger text.
func FuzzPeriodicTaskRow(f *testing.F) {
	f.Add([]byte(`[1]`), []byte(`{"k": "v"}`), []byte(`{"queue": "q", "priority": 3, "expires": 60}`), "every 10s", "UTC", []byte(`{"task_id": "x", "status": "SENT"}`))
	f.Add([]byte(`[`), []byte(`{}`), []byte(`{"expires": "2030-01-01T00:00:00Z", "headers": {"a": 1}}`), "30 2 * * mon-fri", "Europe/Berlin", []byte(`{`))
	f.Add([]byte(`[]`), []byte(`[]`), []byte(`null`), "at 2026-12-24T18:00:00Z", "Bad/Zone", []byte(nil))
	f.Fuzz(func(t *testing.T, args, kwargs, opts []byte, trigger, tz string, outcome []byte) {
		now := time.Date(2026, 10, 25, 0, 59, 0, 0, time.UTC)
		row := fakeRow{int64(1), "job", "", "app.t", args, kwargs, opts, trigger,
			tz, true, nil, nil, nil, 0, "", now, now,
			nil, nil, []byte(nil), nil,
			nil, nil, nil, nil, nil, outcome}
		e, err := scanPT(row)
		if err != nil {
			return
		}
		if e.Schedule == nil {
			t.Fatal("no schedule and no error")
		}
		_ = e.NextRun(e.LastRunAt)
		_ = sendOptions(e.Options, "id", now)
	})
}
