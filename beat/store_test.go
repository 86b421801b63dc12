package beat

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStoreRedbeatLayout writes entries and checks the keys and JSON
// against what redbeat itself writes (the captured values in the beat
// reference).
func TestStoreRedbeatLayout(t *testing.T) {
	rdb, prefix := testRedis(t)
	ctx := context.Background()
	st := NewStore(rdb, prefix)
	nightly, err := NewCrontab("30", "2", "mon-fri", "*", "*", nil)
	if err != nil {
		t.Fatal(err)
	}
	last := time.Date(2026, 11, 26, 8, 31, 25, 863379000, time.UTC)
	entries := []*Entry{
		{Name: "every-10s", Task: "rbapp.tick", Args: []any{1, 2}, Kwargs: map[string]any{"k": "v"},
			Options: map[string]any{"queue": "celery", "expires": 9}, Schedule: &Interval{Every: 10 * time.Second},
			Enabled: true, LastRunAt: last, TotalRunCount: 1},
		{Name: "nightly", Task: "rbapp.tick", Schedule: nightly, Enabled: true, Description: "the nightly job", LogPath: "/var/log/nightly.log"},
	}
	for _, e := range entries {
		if err := st.Put(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct{ key, field, want string }{
		{prefix + "every-10s", "definition", `{"name": "every-10s", "task": "rbapp.tick", "args": [1, 2], "kwargs": {"k": "v"}, "options": {"expires": 9, "queue": "celery"}, "schedule": {"__type__": "interval", "every": 10.0, "relative": false}, "enabled": true}`},
		{prefix + "every-10s", "meta", `{"last_run_at": {"__type__": "datetime", "year": 2026, "month": 11, "day": 26, "hour": 8, "minute": 31, "second": 25, "microsecond": 863379, "timezone": "UTC"}, "total_run_count": 1}`},
		{prefix + "nightly", "definition", `{"name": "nightly", "task": "rbapp.tick", "args": [], "kwargs": {}, "options": {}, "schedule": {"__type__": "crontab", "minute": "30", "hour": "2", "day_of_week": "mon-fri", "day_of_month": "*", "month_of_year": "*"}, "enabled": true}`},
	}
	for _, tt := range tests {
		got, err := rdb.HGet(ctx, tt.key, tt.field).Result()
		if err != nil {
			t.Fatal(err)
		}
		// encoding/json writes compact nested values; redbeat's spacing
		// differs only there, which JSON readers ignore.
		if strings.ReplaceAll(strings.ReplaceAll(got, ", ", ","), ": ", ":") != strings.ReplaceAll(strings.ReplaceAll(tt.want, ", ", ","), ": ", ":") {
			t.Errorf("HGET %s %s =\n%s\nwant\n%s", tt.key, tt.field, got, tt.want)
		}
	}
	sc, err := rdb.ZScore(ctx, prefix+":schedule", prefix+"every-10s").Result()
	if err != nil {
		t.Fatal(err)
	}
	if want := float64(last.Add(10*time.Second).UnixMilli()) / 1000; sc != want {
		t.Errorf("score = %f, want %f (next run)", sc, want)
	}

	got, err := st.Get(ctx, "nightly")
	if err != nil {
		t.Fatal(err)
	}
	if got.Description != "the nightly job" || got.LogPath != "/var/log/nightly.log" || got.Schedule.(*Crontab).String() != "30 2 * * mon-fri" {
		t.Errorf("read back %+v", got)
	}
	if got.LastRunAt.IsZero() || time.Since(got.LastRunAt) > time.Minute {
		t.Errorf("a new entry's last_run_at = %v, want now (Celery's)", got.LastRunAt)
	}

	if err := st.SetEnabled(ctx, "nightly", false); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Get(ctx, "nightly"); got.Enabled {
		t.Error("still enabled")
	}
	list, err := st.List(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %d entries, %v", len(list), err)
	}
	if err := st.Remove(ctx, "nightly"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, "nightly"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Remove: %v", err)
	}
	if err := st.Remove(ctx, "nightly"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove: %v", err)
	}
}

// TestStoreReadsRedbeatValues reads an entry as redbeat writes it
// (captured), including an rrule one-off and a zone-key datetime.
func TestStoreReadsRedbeatValues(t *testing.T) {
	rdb, prefix := testRedis(t)
	ctx := context.Background()
	rdb.HSet(ctx, prefix+"every-10s",
		"definition", `{"name": "every-10s", "task": "rbapp.tick", "args": [1, 2], "kwargs": {"k": "v"}, "options": {"queue": "celery", "expires": 9}, "schedule": {"__type__": "interval", "every": 10.0, "relative": false}, "enabled": true}`,
		"meta", `{"last_run_at": {"__type__": "datetime", "year": 2026, "month": 11, "day": 26, "hour": 9, "minute": 31, "second": 25, "microsecond": 863379, "timezone": "Europe/Berlin"}, "total_run_count": 3}`)
	rdb.HSet(ctx, prefix+"once",
		"definition", `{"name": "once", "task": "t", "args": null, "kwargs": {}, "options": {}, "schedule": {"__type__": "rrule", "freq": 3, "interval": 1, "wkst": null, "count": 1, "dtstart": 1795746599, "dtstart_tz": 0}, "enabled": false}`)
	rdb.ZAdd(ctx, prefix+":schedule")
	st := NewStore(rdb, prefix)
	e, err := st.Get(ctx, "every-10s")
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 11, 26, 8, 31, 25, 863379000, time.UTC); !e.LastRunAt.Equal(want) || e.TotalRunCount != 3 {
		t.Errorf("meta read as %v, %d", e.LastRunAt, e.TotalRunCount)
	}
	if iv, ok := e.Schedule.(*Interval); !ok || iv.Every != 10*time.Second {
		t.Errorf("schedule %#v", e.Schedule)
	}
	o, err := st.Get(ctx, "once")
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := o.Schedule.(*Clocked); !ok || c.At.Unix() != 1795746599 || o.Enabled {
		t.Errorf("one-off read as %#v enabled=%v", o.Schedule, o.Enabled)
	}
}

// TestClaimScript checks each guard of the claim: the caller must own the
// lock, the entry must be unchanged since it was read, still exist, and
// the due time must not be claimed yet.
func TestClaimScript(t *testing.T) {
	rdb, prefix := testRedis(t)
	ctx := context.Background()
	st := NewStore(rdb, prefix)
	if err := st.Put(ctx, &Entry{Name: "e", Task: "t", Schedule: &Interval{Every: time.Second}, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	e, _ := st.Get(ctx, "e")
	rdb.Set(ctx, st.LockKey(), "me", time.Minute)
	due := e.NextRun(e.LastRunAt)
	claimJSON := `{"due_ms":` + strconv.FormatInt(due.UnixMilli(), 10) + `,"task_id":"x","fence":1,"state":"claimed"}`
	run := func(token, oldMeta, newMeta string, dueMS int64) int64 {
		t.Helper()
		n, err := claimScript.Run(ctx, rdb, []string{st.LockKey(), st.Key("e"), st.ScheduleKey()},
			token, oldMeta, newMeta, claimJSON, "1", st.Key("e"), dueMS, "").Int64()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	newMeta := encodeMeta(time.Now(), 1)
	tests := []struct {
		name           string
		token, old     string
		due            int64
		want           int64
		metaAfterwards string
	}{
		{"not the lock owner", "someone-else", e.meta, due.UnixMilli(), claimNotOwner, e.meta},
		{"entry changed since read", "me", encodeMeta(time.Unix(0, 0), 7), due.UnixMilli(), claimStale, e.meta},
		{"claimed", "me", e.meta, due.UnixMilli(), claimOK, newMeta},
		{"same due again (a second leader with the new meta)", "me", newMeta, due.UnixMilli(), claimDup, newMeta},
		{"same due again with the old meta", "me", e.meta, due.UnixMilli(), claimStale, newMeta},
	}
	for _, tt := range tests {
		if got := run(tt.token, tt.old, newMeta, tt.due); got != tt.want {
			t.Errorf("%s: claim = %d, want %d", tt.name, got, tt.want)
		}
		if m, _ := rdb.HGet(ctx, st.Key("e"), "meta").Result(); m != tt.metaAfterwards {
			t.Errorf("%s: meta %s, want %s", tt.name, m, tt.metaAfterwards)
		}
	}
	rdb.Del(ctx, st.Key("e"))
	if got := run("me", "", newMeta, due.UnixMilli()+1000); got != claimGone {
		t.Errorf("removed entry: claim = %d, want %d", got, claimGone)
	}
}
