package pgbeat

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gocelery/gocelery/beat"
	"github.com/gocelery/gocelery/results"
)

// sendLog collects SendEvents.
type sendLog struct {
	mu  sync.Mutex
	evs []beat.SendEvent
}

func (l *sendLog) add(ev beat.SendEvent) { l.mu.Lock(); l.evs = append(l.evs, ev); l.mu.Unlock() }
func (l *sendLog) all() []beat.SendEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]beat.SendEvent(nil), l.evs...)
}
func (l *sendLog) of(entry string) []beat.SendEvent {
	var out []beat.SendEvent
	for _, ev := range l.all() {
		if ev.Entry == entry {
			out = append(out, ev)
		}
	}
	return out
}

func testConfig(log *sendLog) Config {
	var lg *slog.Logger
	if os.Getenv("PGBEAT_TEST_LOG") != "" {
		lg = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return Config{Config: beat.Config{LockTTL: 600 * time.Millisecond, MaxSleep: 100 * time.Millisecond, OnSend: log.add, Logger: lg},
		PollInterval: 100 * time.Millisecond}
}

// checkOnce fails when a due time or task id of entry was sent twice.
func checkOnce(t *testing.T, evs []beat.SendEvent) {
	t.Helper()
	dues, ids := map[int64]bool{}, map[string]bool{}
	for _, ev := range evs {
		if dues[ev.Due.UnixMilli()] || ids[ev.TaskID] {
			t.Errorf("%s due %s (task %s) sent twice", ev.Entry, ev.Due.Format(time.StampMilli), ev.TaskID)
		}
		dues[ev.Due.UnixMilli()], ids[ev.TaskID] = true, true
	}
}

// TestReplicasSendEachRunOnce runs three schedulers on one store and stops
// the leader mid-run: each due run is sent once, by one leader at a time,
// and the stored count is the number of sends.
func TestReplicasSendEachRunOnce(t *testing.T) {
	for _, schema := range []Schema{SchemaPeriodicTask, SchemaDjango} {
		t.Run(string(schema), func(t *testing.T) {
			st := testStore(t, schema)
			ctx := context.Background()
			if err := st.Put(ctx, mustEntry(t, "tick", "every 100ms")); err != nil {
				t.Fatal(err)
			}
			var log sendLog
			snd := &recordingSender{}
			cancels := make([]context.CancelFunc, 3)
			scheds := make([]*Scheduler, 3)
			fenceOf := map[int64]int{}
			for i := range cancels {
				scheds[i] = New(st, snd, testConfig(&log))
				cancels[i] = runScheduler(t, scheds[i])
			}
			waitFor(t, 5*time.Second, "10 sends", func() bool { return len(log.all()) >= 10 })
			// Stop the leader.
			stopped := false
			for i, s := range scheds {
				if s.fence.Load() != 0 {
					cancels[i]()
					stopped = true
					break
				}
			}
			if !stopped {
				t.Fatal("no scheduler leads")
			}
			n := len(log.all())
			waitFor(t, 5*time.Second, "sends by a new leader", func() bool { return len(log.all()) >= n+10 })
			for _, c := range cancels {
				c()
			}
			time.Sleep(200 * time.Millisecond)
			evs := log.all()
			checkOnce(t, evs)
			for _, ev := range evs {
				fenceOf[ev.Fence]++
			}
			if len(fenceOf) < 2 {
				t.Errorf("sends by fences %v, want a takeover", fenceOf)
			}
			e, err := st.Get(ctx, "tick")
			if err != nil {
				t.Fatal(err)
			}
			if e.TotalRunCount != len(evs) || len(snd.all()) != len(evs) {
				t.Errorf("total_run_count %d, %d published, %d sends", e.TotalRunCount, len(snd.all()), len(evs))
			}
		})
	}
}

// TestLeaderThatLostItsSessionCannotSend ends the leader's lock session
// from the server (as a network partition or a DBA would): the runs the
// leader claims after that are none, and the next term's are new ones.
func TestLeaderThatLostItsSessionCannotSend(t *testing.T) {
	st := testStore(t, SchemaPeriodicTask)
	ctx := context.Background()
	if err := st.Put(ctx, mustEntry(t, "tick", "every 100ms")); err != nil {
		t.Fatal(err)
	}
	var log sendLog
	runScheduler(t, New(st, &recordingSender{}, testConfig(&log)))
	waitFor(t, 5*time.Second, "5 sends", func() bool { return len(log.all()) >= 5 })
	first := log.all()[0].Fence
	var killed bool
	if err := st.pool.QueryRow(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&killed); err != nil || !killed {
		t.Fatalf("terminating the leader's session: %v %v", killed, err)
	}
	at := time.Now()
	waitFor(t, 5*time.Second, "sends of a new term", func() bool {
		evs := log.all()
		return evs[len(evs)-1].Fence > first && len(evs) > 10
	})
	evs := log.all()
	checkOnce(t, evs)
	for _, ev := range evs {
		if ev.Fence == first && ev.Sent.After(at.Add(50*time.Millisecond)) {
			t.Errorf("fence %d sent due %s at %s, after its session ended at %s", ev.Fence, ev.Due.Format(time.StampMilli),
				ev.Sent.Format(time.StampMilli), at.Format(time.StampMilli))
		}
	}
}

// TestClaimChecksTheFencingToken: a leader whose token is no longer the
// current one claims nothing, sends nothing and ends its term.
func TestClaimChecksTheFencingToken(t *testing.T) {
	st := testStore(t, SchemaPeriodicTask)
	ctx := context.Background()
	if err := st.Put(ctx, mustEntry(t, "tick", "every 1h")); err != nil {
		t.Fatal(err)
	}
	snd := &recordingSender{}
	s := New(st, snd, testConfig(&sendLog{}))
	ls, err := s.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.release()
	// The lock's session has keepalives, so the server frees the lock of a
	// leader it cannot reach.
	var keepalives string
	if err := ls.withConn(func(c *pgx.Conn) error {
		return c.QueryRow(ctx, "SHOW tcp_keepalives_count").Scan(&keepalives)
	}); err != nil || keepalives != "3" {
		t.Errorf("lock session tcp_keepalives_count = %q (%v), want 3", keepalives, err)
	}
	ld := &leader{Scheduler: s, ls: ls, byName: map[string]*item{}}
	if err := ld.reload(ctx); err != nil {
		t.Fatal(err)
	}
	exec(t, st, "UPDATE gocelery_beat_leader SET fence = fence + 1 WHERE name = 'periodic_task'")
	it := ld.byName["tick"]
	err = ld.fire(ctx, []*item{it}, time.Now())
	if !errors.Is(err, beat.ErrLockLost) {
		t.Fatalf("fire = %v, want ErrLockLost", err)
	}
	e, _ := st.Get(ctx, "tick")
	if len(snd.all()) != 0 || e.TotalRunCount != 0 {
		t.Errorf("%d sent, count %d, want nothing", len(snd.all()), e.TotalRunCount)
	}
}

// TestPeriodicTaskPlainSQL: rows inserted and changed by plain SQL (a
// Flask app's) are seen at once through the triggers' NOTIFY, and each
// run's outcome fills status, job_id and result.
func TestPeriodicTaskPlainSQL(t *testing.T) {
	st := testStore(t, SchemaPeriodicTask)
	var log sendLog
	cfg := testConfig(&log)
	cfg.SyncInterval = time.Hour // only NOTIFY can tell the leader
	cfg.Results = staticResults{meta: results.Meta{Status: "SUCCESS", Result: float64(42)}}
	cfg.ResultPoll = 50 * time.Millisecond
	snd := &recordingSender{}
	runScheduler(t, New(st, snd, cfg))
	time.Sleep(300 * time.Millisecond) // leading, nothing to run
	exec(t, st, `INSERT INTO periodic_task (name, task, args, kwargs, options, trigger)
VALUES ('report', 'app.report', '[1, 2]', '{"k": "v"}', '{"queue": "reports", "priority": 3}', 'every 200ms')`)
	waitFor(t, 3*time.Second, "report sent", func() bool { return len(log.of("report")) >= 2 })
	c := snd.all()[0]
	if c.Task != "app.report" || len(c.Args) != 2 || c.Kwargs["k"] != "v" || c.Opts.Queue != "reports" || c.Opts.Priority == nil || *c.Opts.Priority != 3 {
		t.Errorf("sent %+v", c)
	}
	waitFor(t, 3*time.Second, "status SUCCESS", func() bool {
		var status, jobID *string
		_ = st.pool.QueryRow(context.Background(), "SELECT status, job_id FROM periodic_task WHERE name = 'report'").Scan(&status, &jobID)
		return status != nil && *status == "SUCCESS" && jobID != nil && *jobID != ""
	})
	exec(t, st, `UPDATE periodic_task SET enabled = false WHERE name = 'report'`)
	time.Sleep(100 * time.Millisecond)
	n := len(log.of("report"))
	time.Sleep(500 * time.Millisecond)
	if m := len(log.of("report")); m != n {
		t.Errorf("%d sends after the UPDATE disabled it", m-n)
	}
	var last time.Time
	var count int
	var next *time.Time
	_ = st.pool.QueryRow(context.Background(), "SELECT last_run_time, total_run_count, next_run_at FROM periodic_task WHERE name = 'report'").Scan(&last, &count, &next)
	if count != n || last.IsZero() || next != nil {
		t.Errorf("count %d (sends %d), last_run_time %v, next_run_at %v (want NULL: disabled)", count, n, last, next)
	}
	checkOnce(t, log.of("report"))
}

// TestDjangoSemantics: a one-off runs once and is disabled as Django
// disables it; counts and last_run_at are Django's; a QuerySet.update()
// (no change marker) is noticed by the checksum poll.
func TestDjangoSemantics(t *testing.T) {
	st := testStore(t, SchemaDjango)
	ctx := context.Background()
	if err := st.Put(ctx, &beat.Entry{Name: "fast", Task: "app.fast", Schedule: &beat.Interval{Every: 200 * time.Millisecond}, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, &beat.Entry{Name: "once", Task: "app.once", Schedule: &beat.Clocked{At: time.Now().Add(300 * time.Millisecond)}, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	var log sendLog
	cfg := testConfig(&log)
	cfg.SyncInterval = time.Hour
	runScheduler(t, New(st, &recordingSender{}, cfg))
	waitFor(t, 3*time.Second, "once sent", func() bool { return len(log.of("once")) == 1 })
	waitFor(t, 3*time.Second, "5 fast sends", func() bool { return len(log.of("fast")) >= 5 })
	var enabled bool
	var count int
	var last *time.Time
	if err := st.pool.QueryRow(ctx, "SELECT enabled, total_run_count, last_run_at FROM django_celery_beat_periodictask WHERE name = 'once'").Scan(&enabled, &count, &last); err != nil {
		t.Fatal(err)
	}
	if enabled || count != 0 || last != nil {
		t.Errorf("one-off after its run: enabled %v count %d last_run_at %v, want Django's false 0 NULL", enabled, count, last)
	}
	// A bulk update of the schedule row: Django's marker is not bumped.
	exec(t, st, "UPDATE django_celery_beat_intervalschedule SET every = 1, period = 'days'")
	time.Sleep(400 * time.Millisecond)
	n := len(log.of("fast"))
	time.Sleep(600 * time.Millisecond)
	if m := len(log.of("fast")); m != n {
		t.Errorf("%d sends after the interval became a day", m-n)
	}
	if err := st.pool.QueryRow(ctx, "SELECT total_run_count, last_run_at FROM django_celery_beat_periodictask WHERE name = 'fast'").Scan(&count, &last); err != nil {
		t.Fatal(err)
	}
	fast := log.of("fast")
	if count != len(fast) || last == nil || last.Sub(fast[len(fast)-1].Sent).Abs() > 50*time.Millisecond {
		t.Errorf("fast: total_run_count %d for %d sends, last_run_at %v (last send %v)", count, len(fast), last, fast[len(fast)-1].Sent)
	}
	if len(log.of("once")) != 1 {
		t.Errorf("one-off sent %d times", len(log.of("once")))
	}
	checkOnce(t, fast)
}

// staticResults answers every Get with the same state.
type staticResults struct{ meta results.Meta }

func (s staticResults) Get(ctx context.Context, id string) (*results.Meta, error) {
	m := s.meta
	m.TaskID = id
	return &m, nil
}

// TestClaimsOfATickCommitTogether: the claims of one tick are one
// transaction; when its last statement fails, none of them is kept and
// nothing is sent.
func TestClaimsOfATickCommitTogether(t *testing.T) {
	st := testStore(t, SchemaDjango)
	ctx := context.Background()
	if err := st.Put(ctx, mustEntry(t, "plain", "every 1h")); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, &beat.Entry{Name: "once", Task: "t.once", Schedule: &beat.Clocked{At: time.Now()}, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	snd := &recordingSender{}
	s := New(st, snd, testConfig(&sendLog{}))
	ls, err := s.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.release()
	ld := &leader{Scheduler: s, ls: ls, byName: map[string]*item{}}
	if err := ld.reload(ctx); err != nil {
		t.Fatal(err)
	}
	// The one-off's claim ends with a write of Django's change marker: make
	// that fail.
	exec(t, st, "ALTER TABLE django_celery_beat_periodictasks RENAME TO gone")
	due := []*item{ld.byName["plain"], ld.byName["once"]}
	ld.heap = ld.heap[:0] // popped, as the loop pops due entries
	if err := ld.fire(ctx, due, time.Now().Add(2*time.Hour)); err != nil {
		t.Fatalf("fire: %v", err)
	}
	if n := len(snd.all()); n != 0 {
		t.Errorf("%d sent", n)
	}
	for _, name := range []string{"plain", "once"} {
		e, _ := st.Get(ctx, name)
		if e.TotalRunCount != 0 || !e.Enabled {
			t.Errorf("%s: count %d enabled %v after a failed tick, want it untouched", name, e.TotalRunCount, e.Enabled)
		}
	}
	if len(ld.heap) != 2 {
		t.Errorf("%d entries back in the heap, want both", len(ld.heap))
	}
}

// TestRunNowRunsOnce: a run-now request is seen at once (NOTIFY), sent
// once, and the schedule goes on from it.
func TestRunNowRunsOnce(t *testing.T) {
	for _, schema := range []Schema{SchemaPeriodicTask, SchemaDjango} {
		t.Run(string(schema), func(t *testing.T) {
			st := testStore(t, schema)
			ctx := context.Background()
			if err := st.Put(ctx, mustEntry(t, "hourly", "every 1h")); err != nil {
				t.Fatal(err)
			}
			var log sendLog
			cfg := testConfig(&log)
			cfg.SyncInterval = time.Hour
			cfg.PollInterval = time.Hour // only NOTIFY can tell the leader
			runScheduler(t, New(st, &recordingSender{}, cfg))
			time.Sleep(300 * time.Millisecond)
			if err := st.RunNow(ctx, "hourly"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 2*time.Second, "the run-now send", func() bool { return len(log.all()) == 1 })
			time.Sleep(500 * time.Millisecond)
			if n := len(log.all()); n != 1 {
				t.Errorf("%d sends, want 1", n)
			}
			e, _ := st.Get(ctx, "hourly")
			if !e.RunNow.IsZero() || e.TotalRunCount != 1 || time.Until(e.NextRun(e.LastRunAt)) < 59*time.Minute {
				t.Errorf("after run-now: request %v, count %d, next %v", e.RunNow, e.TotalRunCount, e.NextRun(e.LastRunAt))
			}
		})
	}
}
