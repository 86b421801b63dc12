package pgbeat

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gocelery/gocelery/beat"
	"github.com/gocelery/gocelery/producer"
)

// Config configures a Scheduler: beat's settings (LockTTL, Missed, Grace,
// SyncInterval, MaxSleep, Concurrency, Results, ResultPoll, Logger, Now,
// OnSend; KeyPrefix is not used) and the change poll of the django schema.
type Config struct {
	beat.Config
	// PollInterval is how often the django schema's change marker
	// (django_celery_beat_periodictasks.last_update) and a checksum of the
	// task and schedule rows are read (1 s). The checksum notices changes
	// made without the marker (QuerySet.update). periodic_task needs no
	// poll: its triggers NOTIFY.
	PollInterval time.Duration
}

// Scheduler runs the schedule of a PostgreSQL store. Run it in as many
// processes as you like: one holds the leader lock and sends, the others
// wait to take over.
//
// Exactly once: the leader claims each due run in one transaction, on the
// connection whose session holds the leader lock, that checks the fencing
// token is still its own (the leader row is locked FOR SHARE, so no new
// leader takes a token meanwhile) and advances the entry only if its row
// is still as read (enabled, same last run, count and version); the claim
// (due time, task id derived from both, token) is written with it. Then
// it publishes, while the lock is held, and marks the claim sent. A leader
// whose session ended cannot commit a claim; one that crashed between the
// commit and the publish leaves a claim that the next leader re-sends with
// the same task id (as beat's Redis store).
type Scheduler struct {
	store  *Store
	sender beat.Sender
	cfg    Config
	ttl    time.Duration
	log    *slog.Logger
	ticks  atomic.Int64 // ticks that had runs due, for the benchmark
	fence  atomic.Int64 // the fencing token while leading, else 0 (for tests)
}

// New returns a scheduler on store, sending with sender.
func New(store *Store, sender beat.Sender, cfg Config) *Scheduler {
	c := &cfg.Config
	if c.Grace <= 0 {
		c.Grace = time.Second
	}
	if c.SyncInterval <= 0 {
		c.SyncInterval = 30 * time.Second
	}
	if c.MaxSleep <= 0 {
		c.MaxSleep = time.Second
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.ResultPoll <= 0 {
		c.ResultPoll = time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	ttl := c.LockTTL
	if ttl <= 0 {
		ttl = beat.DefaultLockTTL
	}
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Scheduler{store: store, sender: sender, cfg: cfg, ttl: ttl, log: log}
}

// Run takes part in the election until ctx ends: it waits for the lock,
// leads while it holds it, and waits again if it loses it. It creates this
// package's bookkeeping tables when missing; the schema's own tables must
// exist (ErrNoTables).
func (s *Scheduler) Run(ctx context.Context) error {
	if err := ensureState(ctx, s.store); err != nil {
		return err
	}
	for {
		ls, err := s.acquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		s.log.Info("beat: leader", "fence", ls.fence, "lock_ttl", s.ttl, "store", "postgres", "schema", s.store.schema)
		s.fence.Store(ls.fence)
		err = s.lead(ls)
		s.fence.Store(0)
		ls.release()
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("beat: no longer leader", "fence", ls.fence, "err", err)
	}
}

// ensureState creates the bookkeeping tables (not the schema's) and checks
// the schema's tables.
func ensureState(ctx context.Context, st *Store) error {
	// Nothing to create (the role may lack CREATE, as PostgreSQL 15 gives
	// only the owner on public): the tables and the fence function exist.
	var fn bool
	if err := st.pool.QueryRow(ctx, "SELECT to_regprocedure('gocelery_beat_fence(text,bigint)') IS NOT NULL").Scan(&fn); err != nil {
		return fmt.Errorf("pgbeat: %w", err)
	}
	if fn && checkTables(ctx, st.pool, st.schema) == nil {
		return nil
	}
	err := pgx.BeginFunc(ctx, st.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrateLock)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, stateDDL)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgbeat: creating gocelery_beat_state: %w", err)
	}
	return checkTables(ctx, st.pool, st.schema)
}

type item struct {
	e    *entry
	next time.Time
	idx  int
}

type runHeap []*item

func (h runHeap) Len() int           { return len(h) }
func (h runHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h runHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].idx = i; h[j].idx = j }
func (h *runHeap) Push(x any)        { it := x.(*item); it.idx = len(*h); *h = append(*h, it) }
func (h *runHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	it.idx = -1
	return it
}

// leader is the state of one leadership term.
type leader struct {
	*Scheduler
	ls     *lease
	heap   runHeap
	byName map[string]*item
	rec    *recorder

	marks chan []sendRun // to the marker (nil: mark at once)

	mu     sync.Mutex
	failed []failedSend
}

type failedSend struct {
	e     *entry
	c     claim
	due   time.Time
	retry time.Time
}

const sendRetry = time.Second

func (s *Scheduler) lead(ls *lease) error {
	ctx := ls.ctx
	changes, stop, err := s.watchChanges(ctx)
	if err != nil {
		return err
	}
	defer stop()
	ld := &leader{Scheduler: s, ls: ls, byName: map[string]*item{}, marks: make(chan []sendRun, 1024)}
	if s.cfg.Results != nil {
		ld.rec = newRecorder(s.store, s.cfg.Results, s.cfg.ResultPoll, s.log)
		rctx, stop := context.WithCancel(ctx) // also when lead ends on an error
		var wg sync.WaitGroup
		wg.Go(func() { ld.rec.run(rctx) })
		defer wg.Wait()
		defer stop()
	}
	var mwg sync.WaitGroup
	mwg.Go(func() { ld.marker(ctx) })
	defer func() { close(ld.marks); mwg.Wait() }() // runs before the recorder's Wait
	if err := ld.reload(ctx); err != nil {
		return err
	}
	ld.recover(ctx)
	lastSync := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		ld.retryFailed(ctx)
		now := s.cfg.Now()
		var due []*item
		for len(ld.heap) > 0 && !ld.heap[0].next.After(now) {
			due = append(due, heap.Pop(&ld.heap).(*item))
		}
		if len(due) > 0 {
			if err := ld.fire(ctx, due, now); err != nil {
				return err
			}
			continue
		}
		if time.Since(lastSync) >= s.cfg.SyncInterval {
			if err := ld.reload(ctx); err != nil {
				s.log.Warn("beat: reload failed", "err", err)
			}
			lastSync = time.Now()
		}
		sleep := s.cfg.MaxSleep
		if len(ld.heap) > 0 {
			sleep = min(sleep, ld.heap[0].next.Sub(s.cfg.Now()))
		}
		ld.mu.Lock()
		for _, f := range ld.failed {
			sleep = min(sleep, time.Until(f.retry))
		}
		ld.mu.Unlock()
		timer.Reset(max(sleep, 0))
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-timer.C:
		case name := <-changes:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			if name == "*" {
				if err := ld.reload(ctx); err != nil {
					s.log.Warn("beat: reload failed", "err", err)
				}
				lastSync = time.Now()
				continue
			}
			ld.refresh(ctx, name)
		}
	}
}

// watchChanges delivers the names of changed entries ("*": re-read all):
// NOTIFY on the schema's channel (periodic_task's triggers, and this
// package's own writes on both schemas) and, for django, the poll of
// Django's change marker and of a checksum of its rows.
func (s *Scheduler) watchChanges(ctx context.Context) (<-chan string, func(), error) {
	conn, err := pgx.ConnectConfig(ctx, s.store.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, nil, fmt.Errorf("pgbeat: listen: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.store.schema.notifyChannel()}.Sanitize()); err != nil {
		conn.Close(context.Background())
		return nil, nil, fmt.Errorf("pgbeat: listen: %w", err)
	}
	out := make(chan string, 1024)
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	push := func(name string) {
		select {
		case out <- name:
		default: // full: a whole re-read covers them all
			select {
			case out <- "*":
			default:
			}
		}
	}
	wg.Go(func() {
		defer conn.Close(context.Background())
		for {
			n, err := conn.WaitForNotification(wctx)
			if err != nil {
				if wctx.Err() == nil {
					s.log.Warn("beat: listen failed; changes are seen at the next poll", "err", err)
				}
				return
			}
			push(n.Payload)
		}
	})
	if s.store.schema == SchemaDjango {
		wg.Go(func() {
			t := time.NewTicker(s.cfg.PollInterval)
			defer t.Stop()
			last, _ := s.store.djangoFingerprint(wctx)
			for {
				select {
				case <-wctx.Done():
					return
				case <-t.C:
				}
				fp, err := s.store.djangoFingerprint(wctx)
				if err != nil {
					if wctx.Err() == nil {
						s.log.Warn("beat: change poll failed", "err", err)
					}
					continue
				}
				if fp != last {
					last = fp
					push("*")
				}
			}
		})
	}
	return out, func() { cancel(); wg.Wait() }, nil
}

// djangoFingerprint is Django's change marker and a checksum of what the
// scheduler reads of the task and schedule rows, less what the leader
// writes itself on each run (last_run_at, total_run_count, date_changed).
func (s *Store) djangoFingerprint(ctx context.Context) (string, error) {
	var fp string
	err := s.pool.QueryRow(ctx, `SELECT concat_ws('/',
    (SELECT last_update::text FROM django_celery_beat_periodictasks WHERE ident = 1),
    (SELECT md5(string_agg(md5(ROW(id, name, task, args, kwargs, queue, exchange, routing_key, expires,
        enabled, description, crontab_id, interval_id, solar_id, one_off, start_time, priority, headers,
        clocked_id, expire_seconds)::text), '' ORDER BY id)) FROM django_celery_beat_periodictask),
    (SELECT md5(string_agg(ROW(i.*)::text, '' ORDER BY id)) FROM django_celery_beat_intervalschedule i),
    (SELECT md5(string_agg(ROW(c.*)::text, '' ORDER BY id)) FROM django_celery_beat_crontabschedule c),
    (SELECT md5(string_agg(ROW(k.*)::text, '' ORDER BY id)) FROM django_celery_beat_clockedschedule k))`).Scan(&fp)
	return fp, err
}

// reload reads the whole store and rebuilds the heap.
func (ld *leader) reload(ctx context.Context) error {
	entries, err := ld.store.list(ctx, "")
	if err != nil && entries == nil {
		return err
	}
	if err != nil {
		ld.log.Warn("beat: entries skipped", "err", err)
	}
	ld.heap = ld.heap[:0]
	clear(ld.byName)
	var names []string
	var nexts []*time.Time
	for _, e := range entries {
		next := ld.put(ctx, e)
		names, nexts = append(names, e.Name), append(nexts, optTime(next))
	}
	heap.Init(&ld.heap)
	ld.saveNext(ctx, names, nexts)
	return nil
}

// saveNext records the next runs in periodic_task.next_run_at (django's
// tables have no such column).
func (ld *leader) saveNext(ctx context.Context, names []string, nexts []*time.Time) {
	if ld.store.schema != SchemaPeriodicTask || len(names) == 0 {
		return
	}
	_, err := ld.store.pool.Exec(ctx, `UPDATE periodic_task p SET next_run_at = u.next
FROM unnest($1::text[], $2::timestamptz[]) AS u(name, next)
WHERE p.name = u.name AND p.next_run_at IS DISTINCT FROM u.next`, names, nexts)
	if err != nil {
		ld.log.Warn("beat: recording next runs failed", "err", err)
	}
}

// put adds an entry to the heap (without fixing it) if it has a run, and
// returns that run. An expired django task is disabled, as Django does.
func (ld *leader) put(ctx context.Context, e *entry) time.Time {
	if !e.Enabled {
		return time.Time{}
	}
	if e.expired {
		_, err := ld.store.pool.Exec(ctx, `UPDATE django_celery_beat_periodictask SET enabled = false, last_run_at = NULL
WHERE id = $1 AND enabled`, e.id)
		if err != nil {
			ld.log.Warn("beat: disabling an expired task failed", "entry", e.Name, "err", err)
		}
		return time.Time{}
	}
	next := e.NextRun(e.LastRunAt)
	if next.IsZero() {
		return next
	}
	it := &item{e: e, next: next, idx: len(ld.heap)}
	ld.heap = append(ld.heap, it)
	ld.byName[e.Name] = it
	return next
}

// refresh re-reads one entry after a change was announced.
func (ld *leader) refresh(ctx context.Context, name string) {
	if it, ok := ld.byName[name]; ok {
		if it.idx >= 0 {
			heap.Remove(&ld.heap, it.idx)
		}
		delete(ld.byName, name)
	}
	e, err := ld.store.get(ctx, name)
	if err != nil {
		if !errors.Is(err, beat.ErrNotFound) {
			ld.log.Warn("beat: entry skipped", "entry", name, "err", err)
		}
		return
	}
	n := len(ld.heap)
	next := ld.put(ctx, e)
	if len(ld.heap) > n {
		heap.Fix(&ld.heap, n)
	}
	ld.saveNext(ctx, []string{name}, []*time.Time{optTime(next)})
}

func (ld *leader) retryFailed(ctx context.Context) {
	ld.mu.Lock()
	var now, later []failedSend
	for _, f := range ld.failed {
		if time.Now().Before(f.retry) {
			later = append(later, f)
		} else {
			now = append(now, f)
		}
	}
	ld.failed = later
	ld.mu.Unlock()
	for _, f := range now {
		if it, ok := ld.byName[f.e.Name]; ok && it.e.claim.DueMS != f.c.DueMS {
			ld.log.Warn("beat: failed run replaced by a later one, not retried", "entry", f.e.Name, "task_id", f.c.TaskID)
			continue
		}
		ld.sendAll(ctx, []sendRun{{e: f.e, c: f.c, due: f.due}}, true)
	}
}

// recover re-sends runs a previous leader claimed but did not mark sent.
func (ld *leader) recover(ctx context.Context) {
	now := ld.cfg.Now()
	var runs []sendRun
	for _, it := range ld.byName {
		c := it.e.claim
		if c.State != "claimed" || c.Fence == ld.ls.fence {
			continue
		}
		if !it.next.After(now) {
			ld.log.Warn("beat: run claimed by a previous leader and not marked sent is superseded by the next one",
				"entry", it.e.Name, "task_id", c.TaskID)
			continue
		}
		ld.log.Warn("beat: re-sending a run claimed by a previous leader and not marked sent",
			"entry", it.e.Name, "due_ms", c.DueMS, "task_id", c.TaskID, "claimed_by_fence", c.Fence)
		runs = append(runs, sendRun{e: it.e, c: c, due: time.UnixMilli(c.DueMS)})
	}
	if len(runs) > 0 {
		ld.sendAll(ctx, runs, true)
	}
}

type plan struct {
	it    *item
	due   time.Time
	claim claim
	skip  bool
	next  time.Time
	inc   int
	res   int64
}

// The claims: advance the row if it is as read, and record the claim. The
// django one-off variant disables the task as Django's scheduler does after
// its run (enabled false, count 0, last_run_at NULL).
const (
	claimStateSQL = `
INSERT INTO gocelery_beat_state AS st (kind, name, due_ms, task_id, fence, claim_state)
SELECT $9, name, $10, $11, $12, $13 FROM adv
ON CONFLICT (kind, name) DO UPDATE SET due_ms = EXCLUDED.due_ms, task_id = EXCLUDED.task_id,
    fence = EXCLUDED.fence, claim_state = EXCLUDED.claim_state, updated_at = now(),
    run_now_at = CASE WHEN st.run_now_at IS NOT DISTINCT FROM $2 THEN NULL ELSE st.run_now_at END`
	claimPTSQL = `WITH adv AS (
    UPDATE periodic_task SET last_run_time = $3, total_run_count = total_run_count + $4, next_run_at = $5
    WHERE name = $1 AND enabled AND updated_at = $6 AND last_run_time IS NOT DISTINCT FROM $7
        AND total_run_count = $8
    RETURNING name)` + claimStateSQL
	claimDjangoSQL = `WITH adv AS (
    UPDATE django_celery_beat_periodictask SET last_run_at = $3, total_run_count = total_run_count + $4,
        date_changed = $3
    WHERE name = $1 AND enabled AND date_changed = $6 AND last_run_at IS NOT DISTINCT FROM $7
        AND total_run_count = $8 AND $5::timestamptz IS NOT DISTINCT FROM $5
    RETURNING name)` + claimStateSQL
	claimDjangoOneOffSQL = `WITH adv AS (
    UPDATE django_celery_beat_periodictask SET enabled = false, last_run_at = NULL, total_run_count = 0,
        date_changed = $3
    WHERE name = $1 AND enabled AND date_changed = $6 AND last_run_at IS NOT DISTINCT FROM $7
        AND total_run_count = $8 AND $4::int IS NOT DISTINCT FROM $4 AND $5::timestamptz IS NOT DISTINCT FROM $5
    RETURNING name)` + claimStateSQL
)

// fire claims the due runs in one transaction on the lock's session, sends
// the claimed ones, marks them sent, and puts the entries back with their
// next run.
func (ld *leader) fire(ctx context.Context, due []*item, now time.Time) error {
	ld.ticks.Add(1)
	now = micro(now)
	plans := make([]*plan, len(due))
	oneOff := false
	for i, it := range due {
		e := it.e
		p := &plan{it: it, due: it.next, inc: 1}
		p.skip = ld.cfg.Missed == beat.MissedSkip && e.RunNow.IsZero() && now.Sub(p.due) > ld.cfg.Grace
		state := "claimed"
		if p.skip {
			p.inc, state = 0, "skipped"
		}
		p.claim = claim{DueMS: p.due.UnixMilli(), TaskID: taskID(ld.store.schema, e.Name, p.due), Fence: ld.ls.fence, State: state}
		after := *e.Entry
		after.RunNow = time.Time{}
		p.next = after.NextRun(now)
		if e.oneOff {
			p.next = time.Time{}
			oneOff = true
		}
		plans[i] = p
	}
	// One round trip: a batch is one implicit transaction, which the fence
	// check fails as a whole when the token is not ours.
	// A shutdown does not interrupt a claim (its outcome would be unknown
	// here); the lease's end does.
	cctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), ld.ls.Until())
	defer cancel()
	err := ld.ls.withConn(func(c *pgx.Conn) error {
		b := &pgx.Batch{}
		b.Queue("SELECT gocelery_beat_fence($1, $2)", string(ld.store.schema), ld.ls.fence)
		for _, p := range plans {
			e := p.it.e
			q := claimPTSQL
			if ld.store.schema == SchemaDjango {
				q = claimDjangoSQL
				if e.oneOff {
					q = claimDjangoOneOffSQL
				}
			}
			b.Queue(q, e.Name, e.runNow, now, p.inc, optTime(p.next), e.version, e.dbLast, e.count,
				ld.store.kind(), p.claim.DueMS, p.claim.TaskID, p.claim.Fence, p.claim.State).
				Exec(func(tag pgconn.CommandTag) error { p.res = tag.RowsAffected(); return nil })
		}
		if oneOff && ld.store.schema == SchemaDjango {
			b.Queue(djangoChanged, now) // Django's save of the disabled one-off
		}
		err := c.SendBatch(cctx, b).Close()
		if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) && pe.Code == fenceErrCode {
			return fmt.Errorf("%w: %s", beat.ErrLockLost, pe.Message)
		}
		return err
	})
	if errors.Is(err, beat.ErrLockLost) {
		return err
	}
	if err != nil {
		for _, p := range plans {
			heap.Push(&ld.heap, p.it)
		}
		ld.log.Warn("beat: claim failed", "err", err)
		if ld.ls.conn.IsClosed() {
			return fmt.Errorf("%w: the lock's session ended: %w", beat.ErrLockLost, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
		return nil
	}
	var sends []sendRun
	for _, p := range plans {
		e := p.it.e
		if p.res != 1 {
			// Changed since read (disabled, edited, run elsewhere): re-read it.
			delete(ld.byName, e.Name)
			ld.refresh(ctx, e.Name)
			continue
		}
		last := now
		e.dbLast, e.LastRunAt = &last, now
		e.count += p.inc
		e.TotalRunCount = e.count
		if ld.store.schema == SchemaDjango {
			e.version = now
		}
		e.runNow, e.RunNow = nil, time.Time{}
		e.claim = p.claim
		if !p.skip {
			sends = append(sends, sendRun{e: e, c: p.claim, due: p.due})
		} else {
			ld.log.Info("beat: missed run skipped", "entry", e.Name, "due", p.due, "late", now.Sub(p.due))
			_ = ld.store.RecordOutcome(ctx, e.Name, beat.Outcome{TaskID: p.claim.TaskID, Due: p.due, Status: "SKIPPED"})
		}
		if !p.next.IsZero() {
			p.it.next = p.next
			heap.Push(&ld.heap, p.it)
		} else {
			delete(ld.byName, e.Name)
		}
	}
	ld.sendAll(ctx, sends, false)
	return nil
}

type sendRun struct {
	e    *entry
	c    claim
	due  time.Time
	sent time.Time
	ok   bool
}

// sendAll publishes claimed runs, Concurrency at a time, while the lock is
// held, then marks the published ones sent in one batch.
func (ld *leader) sendAll(ctx context.Context, runs []sendRun, resend bool) {
	if len(runs) == 0 {
		return
	}
	sem := make(chan struct{}, ld.cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range runs {
		r := &runs[i]
		if !ld.ls.held() {
			ld.log.Warn("beat: lease ended before the send; left to the next leader", "entry", r.e.Name, "task_id", r.c.TaskID)
			continue
		}
		publish := func() {
			sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), ld.ls.Until())
			defer cancel()
			stop := context.AfterFunc(ld.ls.ctx, func() {
				if errors.Is(context.Cause(ld.ls.ctx), beat.ErrLockLost) {
					cancel()
				}
			})
			defer stop()
			_, err := ld.sender.SendTask(sctx, r.e.Task, r.e.Args, r.e.Kwargs, sendOptions(r.e.Options, r.c.TaskID, ld.cfg.Now())...)
			r.sent, r.ok = ld.cfg.Now(), err == nil
			if err != nil {
				ld.log.Error("beat: send failed, retrying", "entry", r.e.Name, "task", r.e.Task, "task_id", r.c.TaskID, "err", err)
				ld.mu.Lock()
				ld.failed = append(ld.failed, failedSend{e: r.e, c: r.c, due: r.due, retry: time.Now().Add(sendRetry)})
				ld.mu.Unlock()
			}
		}
		if len(runs) == 1 {
			publish()
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			publish()
		})
	}
	wg.Wait()
	var sent []sendRun
	for _, r := range runs {
		if !r.ok {
			continue
		}
		sent = append(sent, r)
		ld.log.Info("beat: task sent", "entry", r.e.Name, "task", r.e.Task, "task_id", r.c.TaskID,
			"due_ms", r.c.DueMS, "delay_ms", r.sent.Sub(r.due).Milliseconds(), "fence", ld.ls.fence, "resend", resend)
		if ld.cfg.OnSend != nil {
			ld.cfg.OnSend(beat.SendEvent{Entry: r.e.Name, TaskID: r.c.TaskID, Due: r.due, Sent: r.sent, Fence: ld.ls.fence, Resend: resend})
		}
	}
	if len(sent) == 0 {
		return
	}
	if ld.marks == nil {
		ld.markSent(ctx, sent)
		return
	}
	ld.marks <- sent
}

// marker marks sent runs in the background, many ticks in one batch (one
// commit), so the next tick's claim does not wait for the mark. It returns
// when marks is closed and drained.
func (ld *leader) marker(ctx context.Context) {
	for batch := range ld.marks {
	more:
		for len(batch) < 1000 {
			select {
			case b, ok := <-ld.marks:
				if !ok {
					break more
				}
				batch = append(batch, b...)
			default:
				break more
			}
		}
		ld.markSent(ctx, batch)
	}
}

// markSent records runs as sent (the claim's state, the SENT outcome and,
// on periodic_task, status and job_id), then has the recorder follow them:
// only then, so SENT never overwrites the run's final state.
func (ld *leader) markSent(ctx context.Context, runs []sendRun) {
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	b := &pgx.Batch{}
	for _, r := range runs {
		oj, _ := json.Marshal(beat.Outcome{TaskID: r.c.TaskID, Due: r.due, DueMS: r.due.UnixMilli(), SentAt: r.sent, Status: "SENT"})
		b.Queue(`UPDATE gocelery_beat_state SET claim_state = 'sent', outcome = $4, updated_at = now()
WHERE kind = $1 AND name = $2 AND task_id = $3`, ld.store.kind(), r.e.Name, r.c.TaskID, oj)
		if ld.store.schema == SchemaPeriodicTask {
			b.Queue(`UPDATE periodic_task SET status = 'SENT', job_id = $2, result = NULL, error = NULL WHERE name = $1`, r.e.Name, r.c.TaskID)
		}
	}
	if err := ld.store.pool.SendBatch(mctx, b).Close(); err != nil {
		ld.log.Warn("beat: marking runs sent failed", "err", err)
	}
	if ld.rec != nil {
		for _, r := range runs {
			ld.rec.track(r.e.Name, r.c.TaskID, r.due, r.sent)
		}
	}
}

// sendOptions turns an entry's options into producer options: "queue",
// "exchange", "routing_key", "priority", "expires" (seconds after the send,
// or a time) and "headers", as Celery's apply_async reads them.
func sendOptions(o map[string]any, taskID string, now time.Time) []producer.Option {
	opts := []producer.Option{producer.TaskID(taskID)}
	if q, ok := o["queue"].(string); ok && q != "" {
		opts = append(opts, producer.Queue(q))
	}
	if x, ok := o["exchange"].(string); ok && x != "" {
		rk, _ := o["routing_key"].(string)
		opts = append(opts, producer.Exchange(x, rk))
	} else if rk, ok := o["routing_key"].(string); ok && rk != "" && o["queue"] == nil {
		opts = append(opts, producer.Queue(rk))
	}
	if p, ok := number(o["priority"]); ok {
		opts = append(opts, producer.Priority(int(p)))
	}
	switch x := o["expires"].(type) {
	case time.Time:
		opts = append(opts, producer.Expires(x.UTC()))
	case string:
		if t, err := time.Parse(time.RFC3339Nano, x); err == nil {
			opts = append(opts, producer.Expires(t))
		}
	default:
		if secs, ok := number(x); ok {
			opts = append(opts, producer.Expires(now.Add(time.Duration(secs*float64(time.Second))).UTC()))
		}
	}
	if h, ok := o["headers"].(map[string]any); ok && len(h) > 0 {
		opts = append(opts, producer.Headers(h))
	}
	return opts
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	}
	return 0, false
}

// sortByNext orders entries by next run, never-running ones last.
func sortByNext(es []*beat.Entry) {
	key := func(e *beat.Entry) time.Time {
		if !e.Enabled {
			return time.Time{}
		}
		return e.NextRun(e.LastRunAt)
	}
	sort.SliceStable(es, func(i, j int) bool {
		a, b := key(es[i]), key(es[j])
		if a.IsZero() != b.IsZero() {
			return b.IsZero()
		}
		return a.Before(b)
	})
}

// taskID is the id of a run: beat's derivation from the entry and its due
// time, with the schema in the name, so same-named entries of the two
// schemas (in one database, sharing one result backend) never share ids.
func taskID(schema Schema, name string, due time.Time) string {
	return beat.TaskID(string(schema)+":"+name, due)
}
