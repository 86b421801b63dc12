package beat

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/internal/lifecycle"
	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// Sender publishes a task; *producer.Producer is one.
type Sender interface {
	SendTask(ctx context.Context, name string, args []any, kwargs map[string]any, opts ...producer.Option) (*producer.AsyncResult, error)
}

// ResultReader reads a task's stored state; *results.Redis is one.
type ResultReader interface {
	Get(ctx context.Context, taskID string) (*results.Meta, error)
}

// Missed says what happens to a run found due late (after downtime, a
// leader change or a clock jump).
type Missed int

const (
	// MissedRunOnce sends a late run once, however many ticks were missed
	// (Celery's behaviour), then goes on from now.
	MissedRunOnce Missed = iota
	// MissedSkip skips a run more than Config.Grace late (Celery's
	// beat_cron_starting_deadline), recording it as SKIPPED.
	MissedSkip
)

// Config configures a Scheduler. Zero values mean the defaults.
type Config struct {
	// KeyPrefix is redbeat_key_prefix ("redbeat:").
	KeyPrefix string
	// LockTTL is the leader lock's TTL (5 s); a dead leader is replaced
	// within it.
	LockTTL time.Duration
	// Missed and Grace: see Missed. Grace defaults to 1 s.
	Missed Missed
	Grace  time.Duration
	// SyncInterval is how often the leader re-reads the whole store (30 s),
	// for writers that do not announce changes (a Python redbeat).
	SyncInterval time.Duration
	// MaxSleep caps the leader's sleep between ticks (1 s), so a clock jump
	// is noticed quickly.
	MaxSleep time.Duration
	// Concurrency is how many sends of one tick run in parallel (8).
	Concurrency int
	// Results, when set, is read for each sent run's outcome, which is
	// recorded on the entry every ResultPoll (1 s).
	Results    ResultReader
	ResultPoll time.Duration
	// Logger receives the scheduler's log; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock (time.Now); tests move it.
	Now func() time.Time
	// OnSend, when set, is called after each send (for metrics and tests),
	// from several goroutines at once.
	OnSend func(SendEvent)
}

// SendEvent describes one sent run.
type SendEvent struct {
	Entry  string
	TaskID string
	Due    time.Time
	Sent   time.Time
	Fence  int64
	Resend bool // re-sent after a leader change (see Scheduler)
}

// Scheduler runs the schedule of a store. Run it in as many processes as
// you like: one holds the lock and sends, the others wait to take over.
//
// Exactly once, and the one window left: the leader claims a run (Lua:
// lock still ours, entry unchanged, due time not claimed; then meta,
// claim and next score written) and only then publishes it with a task
// id derived from the entry and the due time, and marks the claim sent.
// A leader that crashes between the claim and the publish leaves a claim
// that is not marked sent; the next leader re-sends it with the same task
// id. So a run is never lost; it is sent twice only if the crash falls
// after the broker accepted the message and before the mark (a few
// milliseconds), and then both copies carry the same task id. A leader
// that lost its lock never claims (the script checks the owner), and
// publishes only while its lease is valid, with a deadline at its end. A
// publish that fails (broker down) is retried every second with the same
// task id until it goes through or a later run of the entry replaces it;
// the claim stays "claimed" meanwhile. A publish that reached the broker
// but was not confirmed by the deadline (RabbitMQ blocking publishers on a
// memory or disk alarm) is in doubt, not failed: its retry waits for the
// first copy's confirm instead of writing a second (amqp.ErrUnconfirmed),
// so a stalled broker gets the run once. Only a connection lost while in
// doubt leaves a retry that may duplicate it, with the same task id.
type Scheduler struct {
	life   lifecycle.Guard
	rdb    redis.UniversalClient
	store  *Store
	lock   *Lock
	sender Sender
	cfg    Config
	log    *slog.Logger
	ticks  atomic.Int64 // ticks that had runs due, for the benchmark
}

// New returns a scheduler on the store in rdb, sending with sender.
func New(rdb redis.UniversalClient, sender Sender, cfg Config) *Scheduler {
	if cfg.Grace <= 0 {
		cfg.Grace = time.Second
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = 30 * time.Second
	}
	if cfg.MaxSleep <= 0 {
		cfg.MaxSleep = time.Second
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.ResultPoll <= 0 {
		cfg.ResultPoll = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	st := NewStore(rdb, cfg.KeyPrefix)
	return &Scheduler{rdb: rdb, store: st, sender: sender, cfg: cfg, log: log,
		lock: NewLock(rdb, st.LockKey(), st.fenceKey(), cfg.LockTTL, log)}
}

// Store is the scheduler's store.
func (s *Scheduler) Store() *Store { return s.store }

// Run takes part in the election until ctx ends: it waits for the lock,
// leads while it holds it, and waits again if it loses it. It releases
// the lock on return.
func (s *Scheduler) Run(ctx context.Context) error {
	if !s.life.Start() {
		return ErrSchedulerClosed
	}
	defer s.life.Stop()
	for {
		lease, err := s.lock.Acquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		s.log.Info("beat: leader", "fence", lease.Fence, "lock_ttl", s.lock.TTL())
		err = s.lead(lease)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = lease.Release(rctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("beat: no longer leader", "fence", lease.Fence, "err", err)
	}
}

// item is one entry in the leader's heap, by next run time.
type item struct {
	e    *Entry
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
	lease *Lease
	heap  runHeap
	byKey map[string]*item
	rec   *recorder

	mu     sync.Mutex
	failed []failedSend // claimed runs whose publish failed, retried
}

// failedSend is a claimed run to publish again (same task id) at retry.
type failedSend struct {
	e     *Entry
	c     claim
	due   time.Time
	retry time.Time
}

// sendRetry is the pause before a failed publish is tried again.
const sendRetry = time.Second

func (s *Scheduler) lead(lease *Lease) error {
	ctx := lease.Context()
	sub := s.rdb.Subscribe(ctx, s.store.changesKey())
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		return fmt.Errorf("beat: subscribe: %w", err)
	}
	changes := sub.Channel()
	for _, sc := range []*redis.Script{claimScript, markSentScript} {
		if err := sc.Load(ctx, s.rdb).Err(); err != nil {
			return fmt.Errorf("beat: load scripts: %w", err)
		}
	}
	ld := &leader{Scheduler: s, lease: lease, byKey: map[string]*item{}}
	if s.cfg.Results != nil {
		ld.rec = newRecorder(s.store, s.cfg.Results, s.cfg.ResultPoll, s.log)
		var wg sync.WaitGroup
		wg.Go(func() { ld.rec.run(ctx) })
		defer wg.Wait()
	}
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
			continue // sending took time: look at the clock again
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
		case m, ok := <-changes:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			if !ok {
				changes = nil // closed: rely on the periodic reload
				continue
			}
			ld.refresh(ctx, m.Payload)
		}
	}
}

// reload reads the whole store and rebuilds the heap.
func (ld *leader) reload(ctx context.Context) error {
	entries, err := ld.store.List(ctx)
	if err != nil && entries == nil {
		return err
	}
	if err != nil {
		ld.log.Warn("beat: entries skipped", "err", err)
	}
	ld.heap = ld.heap[:0]
	clear(ld.byKey)
	for _, e := range entries {
		ld.put(e)
	}
	heap.Init(&ld.heap)
	return nil
}

// put adds an entry to the heap (without fixing it) if it has a run.
func (ld *leader) put(e *Entry) {
	if !e.Enabled {
		return
	}
	next := e.NextRun(e.LastRunAt)
	if next.IsZero() {
		return
	}
	it := &item{e: e, next: next, idx: len(ld.heap)}
	ld.heap = append(ld.heap, it)
	ld.byKey[e.Name] = it
}

// refresh re-reads one entry after a change was announced.
func (ld *leader) refresh(ctx context.Context, name string) {
	if it, ok := ld.byKey[name]; ok {
		if it.idx >= 0 {
			heap.Remove(&ld.heap, it.idx)
		}
		delete(ld.byKey, name)
	}
	e, err := ld.store.Get(ctx, name)
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			ld.log.Warn("beat: entry skipped", "entry", name, "err", err)
		}
		return
	}
	n := len(ld.heap)
	ld.put(e)
	if len(ld.heap) > n {
		heap.Fix(&ld.heap, n)
	}
}

// retryFailed publishes again, with the same task id, the runs whose
// publish failed (broker down, for example) and that no later run of the
// same entry has replaced: a claimed run is sent, late, rather than lost.
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
		if it, ok := ld.byKey[f.e.Name]; ok && it.e.claim.DueMS != f.c.DueMS {
			ld.log.Warn("beat: failed run replaced by a later one, not retried", "entry", f.e.Name, "task_id", f.c.TaskID)
			continue
		}
		ld.send(ctx, f.e, f.c, f.due, true)
	}
}

// recover re-sends runs a previous leader claimed but did not mark sent.
func (ld *leader) recover(ctx context.Context) {
	var todo []*Entry
	now := ld.cfg.Now()
	for _, it := range ld.byKey {
		c := it.e.claim
		if c.State != "claimed" || c.Fence == ld.lease.Fence {
			continue
		}
		if !it.next.After(now) {
			// The entry is due again already (the leader was down for a
			// while): that run stands for this one, so it runs once.
			ld.log.Warn("beat: run claimed by a previous leader and not marked sent is superseded by the next one",
				"entry", it.e.Name, "task_id", c.TaskID)
			continue
		}
		todo = append(todo, it.e)
	}
	for _, e := range todo {
		c := e.claim
		due := time.UnixMilli(c.DueMS)
		ld.log.Warn("beat: re-sending a run claimed by a previous leader and not marked sent",
			"entry", e.Name, "due", due, "task_id", c.TaskID, "claimed_by_fence", c.Fence)
		ld.send(ctx, e, c, due, true)
	}
}

// plan is one due run of a tick.
type plan struct {
	it    *item
	due   time.Time
	claim claim
	meta  string
	skip  bool
	next  time.Time
	res   *redis.Cmd
}

// fire claims the due runs in one pipeline, sends the claimed ones, marks
// them sent, and puts the entries back with their next run.
func (ld *leader) fire(ctx context.Context, due []*item, now time.Time) error {
	ld.ticks.Add(1)
	plans := make([]*plan, len(due))
	for i, it := range due {
		e := it.e
		p := &plan{it: it, due: it.next}
		p.skip = ld.cfg.Missed == MissedSkip && e.RunNow.IsZero() && now.Sub(p.due) > ld.cfg.Grace
		count := e.TotalRunCount
		state := "skipped"
		if !p.skip {
			count++
			state = "claimed"
		}
		p.meta = encodeMeta(now, count)
		p.claim = claim{DueMS: p.due.UnixMilli(), TaskID: TaskID(e.Name, p.due), Fence: ld.lease.Fence, State: state}
		after := *e
		after.RunNow = time.Time{}
		p.next = after.NextRun(now)
		plans[i] = p
	}
	_, err := ld.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, p := range plans {
			cj, _ := json.Marshal(p.claim)
			rn := ""
			if !p.it.e.RunNow.IsZero() {
				rn = strconv.FormatInt(p.it.e.RunNow.UnixMilli(), 10)
			}
			sc := strconv.FormatFloat(score(p.next), 'f', 3, 64)
			p.res = pipe.EvalSha(ctx, claimScript.Hash(), []string{ld.store.LockKey(), ld.store.Key(p.it.e.Name), ld.store.ScheduleKey()},
				ld.lease.Token, p.it.e.meta, p.meta, cj, sc, ld.store.Key(p.it.e.Name), p.claim.DueMS, rn)
		}
		return nil
	})
	if err != nil && !errors.As(err, new(redis.Error)) {
		// Redis unreachable: put the runs back and try again shortly.
		for _, p := range plans {
			heap.Push(&ld.heap, p.it)
		}
		ld.log.Warn("beat: claim failed", "err", err)
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			_ = claimScript.Load(ctx, ld.rdb).Err()
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
		return nil
	}
	var sends []*plan
	for _, p := range plans {
		r, err := p.res.Int64()
		if err != nil {
			ld.log.Warn("beat: claim failed", "entry", p.it.e.Name, "err", err)
			if redis.HasErrorPrefix(err, "NOSCRIPT") {
				_ = claimScript.Load(ctx, ld.rdb).Err()
			}
			heap.Push(&ld.heap, p.it)
			continue
		}
		switch r {
		case claimOK:
			e := p.it.e
			e.meta, e.claim, e.RunNow = p.meta, p.claim, time.Time{}
			e.LastRunAt = now
			if !p.skip {
				e.TotalRunCount++
				sends = append(sends, p)
			} else {
				ld.log.Info("beat: missed run skipped", "entry", e.Name, "due", p.due, "late", now.Sub(p.due))
				_ = ld.store.RecordOutcome(ctx, e.Name, Outcome{TaskID: p.claim.TaskID, Due: p.due, Status: "SKIPPED"})
			}
			if !p.next.IsZero() {
				p.it.next = p.next
				heap.Push(&ld.heap, p.it)
			} else {
				delete(ld.byKey, e.Name)
			}
		case claimNotOwner:
			return fmt.Errorf("%w: the claim script found another owner", ErrLockLost)
		default:
			// Changed, removed or already claimed elsewhere: read it again.
			delete(ld.byKey, p.it.e.Name)
			ld.refresh(ctx, p.it.e.Name)
		}
	}
	runs := make([]sendRun, len(sends))
	for i, p := range sends {
		runs[i] = sendRun{e: p.it.e, c: p.claim, due: p.due}
	}
	ld.sendAll(ctx, runs, false)
	return nil
}

// sendRun is one claimed run to publish.
type sendRun struct {
	e    *Entry
	c    claim
	due  time.Time
	sent time.Time
	ok   bool
}

// send publishes one claimed run (see sendAll).
func (ld *leader) send(ctx context.Context, e *Entry, c claim, due time.Time, resend bool) {
	ld.sendAll(ctx, []sendRun{{e: e, c: c, due: due}}, resend)
}

// sendAll publishes claimed runs, Concurrency at a time, while the lease
// is valid, then marks the published ones sent in one pipeline. A run
// whose publish failed is retried (see retryFailed); one not published
// because the lease ended stays claimed, for the next leader.
func (ld *leader) sendAll(ctx context.Context, runs []sendRun, resend bool) {
	sem := make(chan struct{}, ld.cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range runs {
		r := &runs[i]
		if !ld.lease.held() {
			ld.log.Warn("beat: lease ended before the send; left to the next leader", "entry", r.e.Name, "task_id", r.c.TaskID)
			continue
		}
		publish := func() {
			// A shutdown does not cancel the publish of a claimed run; losing
			// the lock or reaching the lease's end does.
			sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), ld.lease.Until())
			defer cancel()
			stop := context.AfterFunc(ld.lease.ctx, func() {
				if errors.Is(context.Cause(ld.lease.ctx), ErrLockLost) {
					cancel()
				}
			})
			defer stop()
			_, err := ld.sender.SendTask(sctx, r.e.Task, r.e.Args, r.e.Kwargs, sendOptions(r.e, r.c.TaskID, ld.cfg.Now())...)
			r.sent, r.ok = ld.cfg.Now(), err == nil
			if err != nil {
				// Retried with the same task id; a publish in doubt (sent,
				// not yet confirmed) is resolved by the publisher, not sent
				// twice.
				ld.log.Error("beat: send failed or not confirmed, retrying", "entry", r.e.Name, "task", r.e.Task, "task_id", r.c.TaskID, "err", err)
				ld.mu.Lock()
				ld.failed = append(ld.failed, failedSend{e: r.e, c: r.c, due: r.due, retry: time.Now().Add(sendRetry)})
				ld.mu.Unlock()
			}
		}
		if len(runs) == 1 {
			publish() // the common tick: no goroutine
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			publish()
		})
	}
	wg.Wait()
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, err := ld.rdb.Pipelined(mctx, func(p redis.Pipeliner) error {
		for _, r := range runs {
			if !r.ok {
				continue
			}
			c := r.c
			c.State = "sent"
			cj, _ := json.Marshal(c)
			oj, _ := json.Marshal(Outcome{TaskID: c.TaskID, Due: r.due, DueMS: r.due.UnixMilli(), SentAt: r.sent, Status: "SENT"})
			markSentScript.Run(mctx, p, []string{ld.store.Key(r.e.Name)}, c.TaskID, cj, oj)
		}
		return nil
	})
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Script.Run in a pipeline cannot fall back to EVAL: load and redo.
		_ = markSentScript.Load(mctx, ld.rdb).Err()
		for _, r := range runs {
			if r.ok {
				c := r.c
				c.State = "sent"
				cj, _ := json.Marshal(c)
				oj, _ := json.Marshal(Outcome{TaskID: c.TaskID, Due: r.due, DueMS: r.due.UnixMilli(), SentAt: r.sent, Status: "SENT"})
				err = markSentScript.Run(mctx, ld.rdb, []string{ld.store.Key(r.e.Name)}, c.TaskID, cj, oj).Err()
			}
		}
	}
	if err != nil {
		ld.log.Warn("beat: marking runs sent failed", "err", err)
	}
	for _, r := range runs {
		if !r.ok {
			continue
		}
		ld.log.Info("beat: task sent", "entry", r.e.Name, "task", r.e.Task, "task_id", r.c.TaskID,
			"due_ms", r.c.DueMS, "delay_ms", r.sent.Sub(r.due).Milliseconds(), "fence", ld.lease.Fence, "resend", resend)
		if ld.rec != nil {
			ld.rec.track(r.e.Name, r.c.TaskID, r.due, r.sent)
		}
		if ld.cfg.OnSend != nil {
			ld.cfg.OnSend(SendEvent{Entry: r.e.Name, TaskID: r.c.TaskID, Due: r.due, Sent: r.sent, Fence: ld.lease.Fence, Resend: resend})
		}
	}
}

// sendOptions turns redbeat's stored options into producer options.
func sendOptions(e *Entry, taskID string, now time.Time) []producer.Option {
	opts := []producer.Option{producer.TaskID(taskID)}
	o := e.Options
	if q, ok := o["queue"].(string); ok && q != "" {
		opts = append(opts, producer.Queue(q))
	}
	if x, ok := o["exchange"].(string); ok && x != "" {
		rk, _ := o["routing_key"].(string)
		opts = append(opts, producer.Exchange(x, rk))
	} else if rk, ok := o["routing_key"].(string); ok && rk != "" && o["queue"] == nil {
		opts = append(opts, producer.Queue(rk))
	}
	if p, ok := protocol.AsFloat64(o["priority"]); ok {
		opts = append(opts, producer.Priority(int(p)))
	}
	switch x := o["expires"].(type) {
	case json.Number, float64, int:
		secs, _ := protocol.AsFloat64(x)
		opts = append(opts, producer.Expires(now.Add(time.Duration(secs*float64(time.Second))).UTC()))
	case string:
		if t, err := time.Parse(time.RFC3339Nano, x); err == nil {
			opts = append(opts, producer.Expires(t))
		}
	case map[string]any:
		if t, err := parsePyDatetime(x); err == nil {
			opts = append(opts, producer.Expires(t))
		}
	}
	if h, ok := o["headers"].(map[string]any); ok && len(h) > 0 {
		opts = append(opts, producer.Headers(h))
	}
	return opts
}
