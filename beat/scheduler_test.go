package beat

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gocelery/gocelery/results"
)

func TestLockElectsOneAndFences(t *testing.T) {
	rdb, prefix := testRedis(t)
	ctx := context.Background()
	a := NewLock(rdb, prefix+":lock", prefix+":fence", time.Second, nil)
	b := NewLock(rdb, prefix+":lock", prefix+":fence", time.Second, nil)
	la, err := a.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// b waits while a renews (well past the TTL).
	bctx, cancel := context.WithTimeout(ctx, 2500*time.Millisecond)
	defer cancel()
	if _, err := b.Acquire(bctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Acquire while held: %v", err)
	}
	if !la.Valid() {
		t.Fatal("the holder's lease is not valid after renewals")
	}
	// Another owner takes the key (as after an expiry): a notices at its
	// next renewal and its lease ends.
	rdb.Set(ctx, prefix+":lock", "someone-else", time.Second)
	select {
	case <-la.Context().Done():
	case <-time.After(2 * time.Second):
		t.Fatal("lease not ended after the lock changed hands")
	}
	if la.Valid() || !errors.Is(context.Cause(la.Context()), ErrLockLost) {
		t.Fatalf("lost lease: valid=%v cause=%v", la.Valid(), context.Cause(la.Context()))
	}
	start := time.Now()
	lb, err := b.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited > 1500*time.Millisecond {
		t.Errorf("took %s to take over an expiring 1 s lock", waited)
	}
	if lb.Fence <= la.Fence {
		t.Errorf("fence %d after %d: fencing tokens must grow", lb.Fence, la.Fence)
	}
	if err := lb.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.Exists(ctx, prefix+":lock").Result(); n != 0 {
		t.Error("Release left the lock")
	}
}

// runScheduler runs s until the test ends or stop is called; stop
// returns once Run has, so what s was doing (a send and its OnSend) is
// over when the test reads it.
func runScheduler(t *testing.T, s *Scheduler) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	stop = func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	return stop
}

// TestReplicasSendEachRunOnce runs three schedulers on one store with a
// 100 ms interval entry and a short lock TTL, stops the leader abruptly
// (its lease is abandoned, not released) and checks every run was sent
// once, with distinct due times, and runs went on after takeover.
func TestReplicasSendEachRunOnce(t *testing.T) {
	rdb, prefix := testRedis(t)
	ctx := context.Background()
	st := NewStore(rdb, prefix)
	if err := st.Put(ctx, &Entry{Name: "fast", Task: "t.fast", Schedule: &Interval{Every: 100 * time.Millisecond}, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var events []SendEvent
	sender := &recordingSender{}
	cancels := make([]func(), 3)
	for i := range cancels {
		s := New(rdb, sender, Config{KeyPrefix: prefix, LockTTL: 600 * time.Millisecond,
			OnSend: func(ev SendEvent) { mu.Lock(); events = append(events, ev); mu.Unlock() }})
		cancels[i] = runScheduler(t, s)
	}
	waitFor(t, 5*time.Second, "10 sends", func() bool { return len(sender.all()) >= 10 })
	mu.Lock()
	fence := events[len(events)-1].Fence
	mu.Unlock()
	// The leader loses its lock to a dead owner (as after a pause longer
	// than the TTL): it must stop, and a replica must take over when that
	// owner's TTL runs out.
	rdb.Set(ctx, prefix+":lock", "gone", 300*time.Millisecond)
	waitFor(t, 5*time.Second, "sends by a new leader", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return events[len(events)-1].Fence > fence
	})
	n := len(sender.all())
	waitFor(t, 5*time.Second, "10 more sends", func() bool { return len(sender.all()) >= n+10 })
	for _, c := range cancels {
		c()
	}
	mu.Lock()
	defer mu.Unlock()
	seen := map[int64]bool{}
	ids := map[string]bool{}
	for _, ev := range events {
		if seen[ev.Due.UnixMilli()] {
			t.Errorf("due %s sent twice", ev.Due.Format(time.RFC3339Nano))
		}
		seen[ev.Due.UnixMilli()] = true
		ids[ev.TaskID] = true
	}
	if len(ids) != len(events) || len(sender.all()) != len(events) {
		t.Errorf("%d events, %d task ids, %d sends", len(events), len(ids), len(sender.all()))
	}
	e, err := st.Get(ctx, "fast")
	if err != nil {
		t.Fatal(err)
	}
	if e.TotalRunCount != len(events) {
		t.Errorf("total_run_count %d, sends %d", e.TotalRunCount, len(events))
	}
}

// TestMissedRunsOnce: an entry whose last run is an hour old (downtime, or
// a clock jump) runs once, not once per missed tick; with MissedSkip it
// does not run and is recorded as skipped.
func TestMissedRunsOnce(t *testing.T) {
	for _, tt := range []struct {
		name   string
		missed Missed
		sends  int
	}{
		{"once", MissedRunOnce, 1},
		{"skip", MissedSkip, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rdb, prefix := testRedis(t)
			ctx := context.Background()
			st := NewStore(rdb, prefix)
			last := time.Now().Add(-time.Hour)
			if err := st.Put(ctx, &Entry{Name: "e", Task: "t.e", Schedule: &Interval{Every: 10 * time.Second}, Enabled: true, LastRunAt: last}); err != nil {
				t.Fatal(err)
			}
			sender := &recordingSender{}
			s := New(rdb, sender, Config{KeyPrefix: prefix, Missed: tt.missed})
			runScheduler(t, s)
			waitFor(t, 3*time.Second, "the late run handled", func() bool {
				e, err := st.Get(ctx, "e")
				return err == nil && e.LastRunAt.After(last)
			})
			time.Sleep(300 * time.Millisecond) // a storm would show by now
			if got := len(sender.all()); got != tt.sends {
				t.Fatalf("%d sends after an hour's downtime of a 10 s entry, want %d", got, tt.sends)
			}
			e, _ := st.Get(ctx, "e")
			if next := e.NextRun(e.LastRunAt); next.Before(time.Now()) {
				t.Errorf("next run %s is not in the future", next)
			}
			if tt.missed == MissedSkip && e.Last.Status != "SKIPPED" {
				t.Errorf("outcome %+v, want SKIPPED", e.Last)
			}
		})
	}
}

// TestStaleLeaderNeverSends: once the lock belongs to someone else, the
// claim script refuses every run, whatever the old leader believes.
func TestStaleLeaderNeverSends(t *testing.T) {
	rdb, prefix := testRedis(t)
	ctx := context.Background()
	st := NewStore(rdb, prefix)
	if err := st.Put(ctx, &Entry{Name: "e", Task: "t.e", Schedule: &Interval{Every: 50 * time.Millisecond}, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	lock := NewLock(rdb, st.LockKey(), st.fenceKey(), 10*time.Second, nil)
	lease, err := lock.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release(ctx)
	if err := claimScript.Load(ctx, rdb).Err(); err != nil {
		t.Fatal(err)
	}
	sender := &recordingSender{}
	ld := &leader{Scheduler: New(rdb, sender, Config{KeyPrefix: prefix}), lease: lease, byKey: map[string]*item{}}
	if err := ld.reload(ctx); err != nil {
		t.Fatal(err)
	}
	// The lease still looks valid locally, but the key changed hands.
	rdb.Set(ctx, st.LockKey(), "new-leader", 10*time.Second)
	time.Sleep(60 * time.Millisecond)
	err = ld.fire(ctx, []*item{ld.heap[0]}, time.Now())
	if !errors.Is(err, ErrLockLost) {
		t.Fatalf("fire with a lost lock: %v", err)
	}
	if n := len(sender.all()); n != 0 {
		t.Fatalf("a stale leader sent %d tasks", n)
	}
}

// TestResendAfterCrashBetweenClaimAndSend: a claim a crashed leader did not
// mark sent is re-sent by the next leader with the same task id.
func TestResendAfterCrashBetweenClaimAndSend(t *testing.T) {
	rdb, prefix := testRedis(t)
	ctx := context.Background()
	st := NewStore(rdb, prefix)
	if err := st.Put(ctx, &Entry{Name: "e", Task: "t.e", Schedule: &Interval{Every: time.Hour}, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	due := time.Now().Add(-time.Second).Truncate(time.Millisecond)
	c, _ := json.Marshal(claim{DueMS: due.UnixMilli(), TaskID: TaskID("e", due), Fence: 0, State: "claimed"})
	rdb.HSet(ctx, st.Key("e"), "claim", c)
	sender := &recordingSender{}
	var resent []SendEvent
	var mu sync.Mutex
	runScheduler(t, New(rdb, sender, Config{KeyPrefix: prefix, OnSend: func(ev SendEvent) {
		mu.Lock()
		resent = append(resent, ev)
		mu.Unlock()
	}}))
	waitFor(t, 3*time.Second, "the re-send", func() bool { return len(sender.all()) == 1 })
	got := sender.all()[0]
	if got.Opts.TaskID != TaskID("e", due) {
		t.Errorf("re-sent with task id %s, want the claimed %s", got.Opts.TaskID, TaskID("e", due))
	}
	mu.Lock()
	if !resent[0].Resend {
		t.Error("not reported as a re-send")
	}
	mu.Unlock()
	waitFor(t, 2*time.Second, "claim marked sent", func() bool {
		e, _ := st.Get(ctx, "e")
		return e.claim.State == "sent"
	})
	time.Sleep(200 * time.Millisecond)
	if n := len(sender.all()); n != 1 {
		t.Errorf("%d sends, want the one re-send", n)
	}
}

// TestOutcomeRecorded: the result backend's state of the last run lands on
// the entry; run-now, options and disabling work through the store.
func TestOutcomeRecordedAndRunNow(t *testing.T) {
	rdb, prefix := testRedis(t)
	ctx := context.Background()
	st := NewStore(rdb, prefix)
	if err := st.Put(ctx, &Entry{Name: "e", Task: "t.e", Args: []any{1}, Schedule: &Interval{Every: time.Hour}, Enabled: true,
		Options: map[string]any{"queue": "q1", "priority": 3, "expires": 30, "headers": map[string]any{"h": "v"}}}); err != nil {
		t.Fatal(err)
	}
	sender := &recordingSender{}
	runScheduler(t, New(rdb, sender, Config{KeyPrefix: prefix, ResultPoll: 50 * time.Millisecond,
		Results: staticResults{results.Meta{Status: "SUCCESS", Result: int64(42)}}}))
	time.Sleep(200 * time.Millisecond)
	if n := len(sender.all()); n != 0 {
		t.Fatalf("%d sends before the first hour", n)
	}
	if err := st.RunNow(ctx, "e"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "the run-now send", func() bool { return len(sender.all()) == 1 })
	got := sender.all()[0]
	if got.Opts.Queue != "q1" || got.Opts.Priority == nil || *got.Opts.Priority != 3 || got.Opts.Headers["h"] != "v" ||
		got.Opts.Expires.Sub(got.At) < 29*time.Second || got.Opts.Expires.Sub(got.At) > 31*time.Second {
		t.Errorf("options %+v", got.Opts)
	}
	waitFor(t, 3*time.Second, "the outcome", func() bool {
		e, _ := st.Get(ctx, "e")
		return e.Last.Status == "SUCCESS"
	})
	e, _ := st.Get(ctx, "e")
	if e.Last.TaskID != got.Opts.TaskID || e.Last.Result != json.Number("42") || e.TotalRunCount != 1 {
		t.Errorf("outcome %+v count %d", e.Last, e.TotalRunCount)
	}
	if err := st.SetEnabled(ctx, "e", false); err != nil {
		t.Fatal(err)
	}
	if err := st.RunNow(ctx, "e"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(sender.all()); n != 1 {
		t.Errorf("a disabled entry ran: %d sends", n)
	}
}

// TestClockJumpNoStorm: the wall clock jumps an hour ahead under a running
// leader; each 1 s entry runs once for the jump, not 3,600 times.
func TestClockJumpNoStorm(t *testing.T) {
	rdb, prefix := testRedis(t)
	ctx := context.Background()
	st := NewStore(rdb, prefix)
	for _, name := range []string{"a", "b", "c"} {
		if err := st.Put(ctx, &Entry{Name: name, Task: "t." + name, Schedule: &Interval{Every: time.Second}, Enabled: true}); err != nil {
			t.Fatal(err)
		}
	}
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	var mu sync.Mutex
	perEntry := map[string]int{}
	runScheduler(t, New(rdb, &recordingSender{}, Config{KeyPrefix: prefix, Now: now, OnSend: func(ev SendEvent) {
		mu.Lock()
		perEntry[ev.Entry]++
		mu.Unlock()
	}}))
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return perEntry["a"] + perEntry["b"] + perEntry["c"]
	}
	waitFor(t, 3*time.Second, "first runs", func() bool { return count() >= 3 })
	before := count()
	offset.Store(int64(time.Hour))
	time.Sleep(1500 * time.Millisecond)
	// At most the jump's run plus one or two regular ticks per entry.
	if got := count() - before; got < 3 || got > 9 {
		t.Fatalf("%d sends in 1.5 s after a one-hour jump of three 1 s entries, want 3 to 9", got)
	}
}

func TestNextRunBounds(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	hourly, _ := ParseCrontab("0 * * * *", nil)
	tests := []struct {
		name string
		e    Entry
		last time.Time
		want time.Time
	}{
		{"interval", Entry{Schedule: &Interval{Every: time.Minute}}, t0, t0.Add(time.Minute)},
		{"never ran", Entry{Schedule: &Interval{Every: time.Minute}}, time.Time{}, time.Unix(0, 0)},
		{"interval before start", Entry{Schedule: &Interval{Every: time.Minute}, StartTime: t0.Add(time.Hour)}, t0, t0.Add(time.Hour)},
		{"crontab before start", Entry{Schedule: hourly, StartTime: t0.Add(90 * time.Minute)}, t0, t0.Add(2 * time.Hour)},
		{"after end", Entry{Schedule: hourly, EndTime: t0.Add(30 * time.Minute)}, t0, time.Time{}},
		{"at end", Entry{Schedule: hourly, EndTime: t0.Add(time.Hour)}, t0, t0.Add(time.Hour)},
		{"one-off pending", Entry{Schedule: &Clocked{At: t0.Add(time.Hour)}}, t0, t0.Add(time.Hour)},
		{"one-off done", Entry{Schedule: &Clocked{At: t0.Add(time.Hour)}}, t0.Add(time.Hour + time.Millisecond), time.Time{}},
		{"run now", Entry{Schedule: hourly, RunNow: t0.Add(time.Minute)}, t0, t0.Add(time.Minute)},
		{"run now after end", Entry{Schedule: hourly, EndTime: t0, RunNow: t0.Add(time.Minute)}, t0, t0.Add(time.Minute)},
	}
	for _, tt := range tests {
		if got := tt.e.NextRun(tt.last); !got.Equal(tt.want) {
			t.Errorf("%s: NextRun = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestFailedSendRetried: a publish that fails (broker down) is retried
// with the same task id once the broker is back, not lost.
func TestFailedSendRetried(t *testing.T) {
	rdb, prefix := testRedis(t)
	ctx := context.Background()
	st := NewStore(rdb, prefix)
	if err := st.Put(ctx, &Entry{Name: "e", Task: "t.e", Schedule: &Interval{Every: time.Hour}, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	sender := &recordingSender{fail: errors.New("broker down")}
	runScheduler(t, New(rdb, sender, Config{KeyPrefix: prefix}))
	if err := st.RunNow(ctx, "e"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "the claim", func() bool {
		e, _ := st.Get(ctx, "e")
		return e.claim.State == "claimed"
	})
	claimed, _ := st.Get(ctx, "e")
	sender.mu.Lock()
	sender.fail = nil
	sender.mu.Unlock()
	waitFor(t, 4*time.Second, "the retried send", func() bool { return len(sender.all()) == 1 })
	if got := sender.all()[0].Opts.TaskID; got != claimed.claim.TaskID {
		t.Errorf("retried with task id %s, claimed %s", got, claimed.claim.TaskID)
	}
	waitFor(t, 2*time.Second, "claim marked sent", func() bool {
		e, _ := st.Get(ctx, "e")
		return e.claim.State == "sent"
	})
	time.Sleep(1200 * time.Millisecond)
	if n := len(sender.all()); n != 1 {
		t.Errorf("%d sends, want 1", n)
	}
}

// countingResults counts Gets and answers PENDING until done is set.
type countingResults struct {
	mu   sync.Mutex
	gets int
	done bool
}

func (c *countingResults) Get(ctx context.Context, id string) (*results.Meta, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gets++
	if c.done {
		return &results.Meta{TaskID: id, Status: "FAILURE", Result: &results.Exception{Type: "ValueError", Message: []any{"bad"}, Module: "builtins"}}, nil
	}
	return &results.Meta{TaskID: id, Status: "PENDING"}, nil
}

// TestRecorderBacksOff: a run that stays PENDING is read less and less
// often; once it fails, the error is recorded on the entry.
func TestRecorderBacksOff(t *testing.T) {
	rdb, prefix := testRedis(t)
	ctx := context.Background()
	st := NewStore(rdb, prefix)
	if err := st.Put(ctx, &Entry{Name: "e", Task: "t", Schedule: &Interval{Every: time.Hour}, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	res := &countingResults{}
	rec := newRecorder(st, res, 20*time.Millisecond, slog.New(slog.DiscardHandler))
	rec.track("e", "tid", time.Now(), time.Now())
	_ = st.RecordOutcome(ctx, "e", Outcome{TaskID: "tid", Status: "SENT"})
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { rec.run(rctx) })
	time.Sleep(700 * time.Millisecond)
	res.mu.Lock()
	gets := res.gets
	res.done = true
	res.mu.Unlock()
	// Without backoff: 35 reads in 700 ms; with it (20, 40, 80, ... ms): 5.
	if gets < 3 || gets > 8 {
		t.Errorf("%d reads of a pending run in 700 ms, want 3 to 8 (backing off)", gets)
	}
	waitFor(t, 3*time.Second, "the failure recorded", func() bool {
		e, _ := st.Get(ctx, "e")
		return e.Last.Status == "FAILURE"
	})
	cancel()
	wg.Wait()
	e, _ := st.Get(ctx, "e")
	if e.Last.Error != "ValueError: bad" {
		t.Errorf("error %q", e.Last.Error)
	}
}

// doneSet reports SUCCESS for the task ids in done, PENDING otherwise.
type doneSet struct {
	mu   sync.Mutex
	done map[string]bool
}

func (d *doneSet) Get(ctx context.Context, id string) (*results.Meta, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done[id] {
		return &results.Meta{TaskID: id, Status: "SUCCESS", Result: id}, nil
	}
	return &results.Meta{TaskID: id, Status: "PENDING"}, nil
}

func (d *doneSet) finish(id string) {
	d.mu.Lock()
	d.done[id] = true
	d.mu.Unlock()
}

// TestRecorderFollowsOlderRuns: with a schedule faster than its task the
// newest run is never done when read; the older runs' outcomes are still
// recorded, and an older outcome never replaces a newer one.
func TestRecorderFollowsOlderRuns(t *testing.T) {
	rdb, prefix := testRedis(t)
	ctx := context.Background()
	st := NewStore(rdb, prefix)
	if err := st.Put(ctx, &Entry{Name: "e", Task: "t", Schedule: &Interval{Every: time.Second}, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	res := &doneSet{done: map[string]bool{}}
	rec := newRecorder(st, res, 10*time.Millisecond, slog.New(slog.DiscardHandler))
	t0 := time.Now()
	for i, id := range []string{"r1", "r2", "r3"} {
		rec.track("e", id, t0.Add(time.Duration(i)*time.Second), t0)
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { rec.run(rctx) })
	defer func() { cancel(); wg.Wait() }()
	last := func() string { e, _ := st.Get(ctx, "e"); return e.Last.TaskID }
	res.finish("r1")
	waitFor(t, 3*time.Second, "r1 recorded while r2 and r3 are pending", func() bool { return last() == "r1" })
	res.finish("r3")
	waitFor(t, 3*time.Second, "r3 recorded", func() bool { return last() == "r3" })
	res.finish("r2")
	time.Sleep(100 * time.Millisecond)
	if got := last(); got != "r3" {
		t.Errorf("last run %s: the older r2 replaced the newer r3", got)
	}
}
