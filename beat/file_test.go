package beat

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestParseFileErrors(t *testing.T) {
	tests := []struct {
		name, doc string
		want      error
	}{
		{"bad crontab", "entries:\n  - {name: a, task: t, trigger: '61 * * * *'}\n", ErrBadCrontab},
		{"four fields", "entries:\n  - {name: a, task: t, trigger: '* * * *'}\n", ErrBadCrontab},
		{"no task", "entries:\n  - {name: a, trigger: 'every 1s'}\n", ErrBadEntry},
		{"unknown field", "entries:\n  - {name: a, task: t, trigger: 'every 1s', schedule: 3}\n", ErrBadEntry},
		{"bad zone", "entries:\n  - {name: a, task: t, trigger: '* * * * *', timezone: Mars/Base}\n", ErrBadEntry},
		{"twice", "entries:\n  - {name: a, task: t, trigger: 'every 1s'}\n  - {name: a, task: t, trigger: 'every 2s'}\n", ErrBadEntry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseFile([]byte(tt.doc)); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestSyncFile: declared entries are written, their run state kept on
// re-sync, and an entry dropped from the file is removed; entries added at
// run time stay.
func TestSyncFile(t *testing.T) {
	rdb, prefix := testRedis(t)
	ctx := context.Background()
	st := NewStore(rdb, prefix)
	v1, err := ParseFile([]byte(`
entries:
  - {name: a, task: t.a, trigger: every 1m, start_time: 2026-01-01T00:00:00Z, log_path: /tmp/a.log}
  - {name: b, task: t.b, trigger: "0 9 * * mon-fri", timezone: Europe/Berlin, enabled: false}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Sync(ctx, v1); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, &Entry{Name: "runtime", Task: "t.r", Schedule: &Interval{Every: time.Hour}, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	a, _ := st.Get(ctx, "a")
	b, _ := st.Get(ctx, "b")
	if a == nil || b == nil || a.LogPath != "/tmp/a.log" || b.Enabled || b.Schedule.(*Crontab).Location.String() != "Europe/Berlin" {
		t.Fatalf("synced entries: %+v %+v", a, b)
	}
	last := a.LastRunAt
	v2, _ := ParseFile([]byte("entries:\n  - {name: a, task: t.a2, trigger: every 2m}\n"))
	if err := st.Sync(ctx, v2); err != nil {
		t.Fatal(err)
	}
	a, _ = st.Get(ctx, "a")
	if a.Task != "t.a2" || !a.LastRunAt.Equal(last) {
		t.Errorf("re-synced a: task %s last %v (was %v)", a.Task, a.LastRunAt, last)
	}
	if _, err := st.Get(ctx, "b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("b dropped from the file: %v", err)
	}
	if _, err := st.Get(ctx, "runtime"); err != nil {
		t.Errorf("runtime entry: %v", err)
	}
}
