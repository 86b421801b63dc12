package pgbeat

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/gocelery/gocelery/beat"
)

func TestMigrateIsIdempotent(t *testing.T) {
	st := testStore(t, SchemaPeriodicTask)
	ctx := context.Background()
	for range 2 {
		if err := Migrate(ctx, st.pool, SchemaPeriodicTask); err != nil {
			t.Fatal(err)
		}
	}
	var cols []string
	rows, err := st.pool.Query(ctx, `SELECT column_name FROM information_schema.columns WHERE table_name = 'periodic_task' ORDER BY ordinal_position`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var c string
		_ = rows.Scan(&c)
		cols = append(cols, c)
	}
	// The seed's columns are all there.
	for _, want := range []string{"name", "description", "args", "last_run_time", "trigger", "status", "enabled", "job_id", "result", "log_path",
		"kwargs", "options", "timezone", "start_time", "end_time", "next_run_at", "total_run_count", "updated_at"} {
		found := false
		for _, c := range cols {
			found = found || c == want
		}
		if !found {
			t.Errorf("periodic_task has no column %q (has %v)", want, cols)
		}
	}
}

func TestMissingTables(t *testing.T) {
	pool := testDB(t)
	for _, schema := range []Schema{SchemaPeriodicTask, SchemaDjango} {
		st, _ := NewStore(pool, schema)
		if err := st.Check(context.Background()); !errors.Is(err, ErrNoTables) {
			t.Errorf("%s: Check = %v, want ErrNoTables", schema, err)
		}
	}
	// Django's tables are never created by Migrate.
	if err := Migrate(context.Background(), pool, SchemaDjango); !errors.Is(err, ErrNoTables) {
		t.Errorf("Migrate(django) without Django's tables = %v, want ErrNoTables", err)
	}
	if _, err := ParseSchema("redbeat"); err == nil {
		t.Error("ParseSchema accepted redbeat")
	}
}

// TestStoreCRUD runs the CLI's operations on both schemas.
func TestStoreCRUD(t *testing.T) {
	for _, schema := range []Schema{SchemaPeriodicTask, SchemaDjango} {
		t.Run(string(schema), func(t *testing.T) {
			st := testStore(t, schema)
			ctx := context.Background()
			berlin, _ := time.LoadLocation("Europe/Berlin")
			cron, _ := beat.NewCrontab("30", "2", "mon-fri", "*", "*", berlin)
			entries := []*beat.Entry{
				{Name: "every", Task: "app.tick", Args: []any{json.Number("1"), "x"}, Kwargs: map[string]any{"k": "v"},
					Options: map[string]any{"queue": "q1", "priority": json.Number("5")}, Schedule: &beat.Interval{Every: 10 * time.Second}, Enabled: true},
				{Name: "cron", Task: "app.nightly", Schedule: cron, Enabled: true, Description: "nightly"},
				{Name: "once", Task: "app.once", Schedule: &beat.Clocked{At: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}, Enabled: true},
			}
			before := time.Now().Add(-time.Second)
			for _, e := range entries {
				if err := st.Put(ctx, e); err != nil {
					t.Fatal(err)
				}
			}
			got, err := st.Get(ctx, "every")
			if err != nil {
				t.Fatal(err)
			}
			if got.Task != "app.tick" || len(got.Args) != 2 || got.Kwargs["k"] != "v" || got.Options["queue"] != "q1" {
				t.Errorf("every = %+v", got)
			}
			if iv, ok := got.Schedule.(*beat.Interval); !ok || iv.Every != 10*time.Second {
				t.Errorf("every's schedule = %v", got.Schedule)
			}
			if got.LastRunAt.Before(before) || got.TotalRunCount != 0 {
				t.Errorf("a new entry's last run = %v (count %d), want now", got.LastRunAt, got.TotalRunCount)
			}
			c, err := st.Get(ctx, "cron")
			if err != nil {
				t.Fatal(err)
			}
			if cs, ok := c.Schedule.(*beat.Crontab); !ok || cs.String() != "30 2 * * mon-fri" || cs.Location.String() != "Europe/Berlin" {
				t.Errorf("cron's schedule = %v", c.Schedule)
			}
			if schema == SchemaDjango {
				if h, _ := got.Options["headers"].(map[string]any); h["periodic_task_name"] != "every" {
					t.Errorf("django options = %v, want headers.periodic_task_name", got.Options)
				}
			}
			all, err := st.List(ctx)
			if err != nil || len(all) != 3 {
				t.Fatalf("List = %d entries, %v", len(all), err)
			}
			if err := st.SetEnabled(ctx, "every", false); err != nil {
				t.Fatal(err)
			}
			if got, _ := st.Get(ctx, "every"); got.Enabled {
				t.Error("still enabled")
			}
			if err := st.RunNow(ctx, "cron"); err != nil {
				t.Fatal(err)
			}
			if got, _ := st.Get(ctx, "cron"); got.RunNow.IsZero() || time.Until(got.NextRun(got.LastRunAt)) > time.Second {
				t.Errorf("run-now not recorded: %v", got.RunNow)
			}
			if err := st.Remove(ctx, "once"); err != nil {
				t.Fatal(err)
			}
			for _, op := range []func() error{
				func() error { _, err := st.Get(ctx, "once"); return err },
				func() error { return st.Remove(ctx, "once") },
				func() error { return st.SetEnabled(ctx, "nope", true) },
				func() error { return st.RunNow(ctx, "nope") },
			} {
				if err := op(); !errors.Is(err, beat.ErrNotFound) {
					t.Errorf("got %v, want ErrNotFound", err)
				}
			}
		})
	}
}

// TestDjangoRowsAsDjangoWritesThem reads rows written the way Django's ORM
// writes them (NULL last_run_at, text JSON, schedule foreign keys).
func TestDjangoRowsAsDjangoWritesThem(t *testing.T) {
	st := testStore(t, SchemaDjango)
	ctx := context.Background()
	exec(t, st, `INSERT INTO django_celery_beat_intervalschedule (id, every, period) VALUES (1, 2, 'minutes')`)
	exec(t, st, `INSERT INTO django_celery_beat_crontabschedule (id, minute, hour, day_of_week, day_of_month, month_of_year, timezone)
VALUES (1, '*/5', '*', '*', '*', '*', 'America/New_York')`)
	exec(t, st, `INSERT INTO django_celery_beat_solarschedule (id, event, latitude, longitude) VALUES (1, 'sunset', 52.5, 13.4)`)
	exec(t, st, `INSERT INTO django_celery_beat_clockedschedule (id, clocked_time) VALUES (1, '2031-05-06 07:08:09+00')`)
	const ins = `INSERT INTO django_celery_beat_periodictask (name, task, args, kwargs, queue, exchange, routing_key, expires,
    enabled, last_run_at, total_run_count, date_changed, description, crontab_id, interval_id, solar_id, one_off,
    start_time, priority, headers, clocked_id, expire_seconds)
VALUES ($1, 'app.t', '[1, "a"]', '{"x": 2}', $2, NULL, NULL, NULL, true, NULL, 0, '2026-01-01 00:00:00+00', '', $3, $4, $5, $6,
    NULL, $7, '{"h": "v"}', $8, $9)`
	exec(t, st, ins, "iv", "q", nil, 1, nil, false, 3, nil, 60)
	exec(t, st, ins, "cr", nil, 1, nil, nil, false, nil, nil, nil)
	exec(t, st, ins, "sun", nil, nil, nil, 1, false, nil, nil, nil)
	exec(t, st, ins, "clk", nil, nil, nil, nil, true, nil, 1, nil)
	all, err := st.List(ctx)
	if !errors.Is(err, beat.ErrUnsupportedSchedule) {
		t.Errorf("List error = %v, want the solar task refused (ErrUnsupportedSchedule)", err)
	}
	by := map[string]*beat.Entry{}
	for _, e := range all {
		by[e.Name] = e
	}
	if len(by) != 3 || by["sun"] != nil {
		t.Fatalf("entries %v, want iv, cr, clk", by)
	}
	changed := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	iv := by["iv"]
	if iv.Schedule.(*beat.Interval).Every != 2*time.Minute || !iv.LastRunAt.Equal(changed) ||
		!iv.NextRun(iv.LastRunAt).Equal(changed.Add(2*time.Minute)) {
		t.Errorf("iv: %v last %v", iv.Schedule, iv.LastRunAt)
	}
	if iv.Options["queue"] != "q" || iv.Options["priority"] != 3 || iv.Options["expires"] != 60 {
		t.Errorf("iv options %v", iv.Options)
	}
	if h := iv.Options["headers"].(map[string]any); h["h"] != "v" || h["periodic_task_name"] != "iv" {
		t.Errorf("iv headers %v", h)
	}
	if c := by["cr"].Schedule.(*beat.Crontab); c.Minute != "*/5" || c.Location.String() != "America/New_York" {
		t.Errorf("cr: %v", c)
	}
	if k := by["clk"].Schedule.(*beat.Clocked); !k.At.Equal(time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)) {
		t.Errorf("clk: %v", k)
	}
}

func TestRecordOutcomePeriodicTask(t *testing.T) {
	st := testStore(t, SchemaPeriodicTask)
	ctx := context.Background()
	if err := st.Put(ctx, mustEntry(t, "job", "every 10s")); err != nil {
		t.Fatal(err)
	}
	due := time.Now()
	steps := []struct {
		o          beat.Outcome
		wantStatus string
		wantID     string
	}{
		{beat.Outcome{TaskID: "b", Due: due, Status: "SUCCESS", Result: map[string]any{"n": 2}}, "SUCCESS", "b"},
		// An older run's outcome does not replace a newer one's final state.
		{beat.Outcome{TaskID: "a", Due: due.Add(-time.Second), Status: "FAILURE", Error: "ValueError: x"}, "SUCCESS", "b"},
		{beat.Outcome{TaskID: "c", Due: due.Add(time.Second), Status: "FAILURE", Error: "ValueError: y"}, "FAILURE", "c"},
	}
	for i, s := range steps {
		if err := st.RecordOutcome(ctx, "job", s.o); err != nil {
			t.Fatal(err)
		}
		var status, id string
		var errText *string
		var result []byte
		if err := st.pool.QueryRow(ctx, "SELECT status, job_id, error, result FROM periodic_task WHERE name = 'job'").Scan(&status, &id, &errText, &result); err != nil {
			t.Fatal(err)
		}
		if status != s.wantStatus || id != s.wantID {
			t.Errorf("step %d: status %s job_id %s, want %s %s", i, status, id, s.wantStatus, s.wantID)
		}
		if i == 0 && string(result) != `{"n": 2}` {
			t.Errorf("result %s", result)
		}
		if i == 2 && (errText == nil || *errText != "ValueError: y" || result != nil) {
			t.Errorf("error %v result %s", errText, result)
		}
	}
	e, _ := st.Get(ctx, "job")
	if e.Last.Status != "FAILURE" || e.Last.TaskID != "c" || e.Last.Error != "ValueError: y" {
		t.Errorf("Last = %+v", e.Last)
	}
}
