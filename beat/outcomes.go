package beat

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// recorder follows sent runs in the result backend and records each one's
// final state (SUCCESS, FAILURE, ...) on its entry, so the store shows
// what the last run did. An entry's last few runs are followed: with a
// schedule faster than its task, the newest run is never done when read,
// and following only it would record nothing at all.
type recorder struct {
	store   *Store
	results ResultReader
	every   time.Duration
	log     *slog.Logger
	maxAge  time.Duration

	mu       sync.Mutex
	pending  map[string][]pendingRun // by entry name, oldest first
	recorded map[string]time.Time    // due time of the newest run recorded, by entry
}

// maxFollowed bounds the runs followed per entry; older ones are dropped.
const maxFollowed = 4

type pendingRun struct {
	taskID    string
	due, sent time.Time
	next      time.Time     // when to read its state again
	wait      time.Duration // doubles while the task is not done, up to maxWait
}

// maxWait caps the pause between two reads of a run's state, so slow or
// stuck tasks of many entries do not keep the backend busy.
const maxWait = time.Minute

func newRecorder(st *Store, r ResultReader, every time.Duration, log *slog.Logger) *recorder {
	return &recorder{store: st, results: r, every: every, log: log, maxAge: 24 * time.Hour,
		pending: map[string][]pendingRun{}, recorded: map[string]time.Time{}}
}

// track follows run taskID of entry name, with its few predecessors.
func (r *recorder) track(name, taskID string, due, sent time.Time) {
	r.mu.Lock()
	// Read at the next poll, then less and less often.
	runs := append(r.pending[name], pendingRun{taskID: taskID, due: due, sent: sent, next: time.Now(), wait: r.every})
	if len(runs) > maxFollowed {
		runs = runs[len(runs)-maxFollowed:]
	}
	r.pending[name] = runs
	r.mu.Unlock()
}

// run polls until ctx ends.
func (r *recorder) run(ctx context.Context) {
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.poll(ctx)
	}
}

type followed struct {
	name string
	pendingRun
}

func (r *recorder) poll(ctx context.Context) {
	r.mu.Lock()
	now := time.Now()
	var todo []followed
	for k, runs := range r.pending {
		// Newest first: once it is recorded the older ones are dropped.
		for i := len(runs) - 1; i >= 0; i-- {
			if !now.Before(runs[i].next) {
				todo = append(todo, followed{k, runs[i]})
			}
		}
	}
	r.mu.Unlock()
	for _, f := range todo {
		name, p := f.name, f.pendingRun
		if !r.following(name, p.taskID) {
			continue // dropped meanwhile: a newer run was recorded
		}
		if ctx.Err() != nil {
			return
		}
		m, err := r.results.Get(ctx, p.taskID)
		if err != nil {
			r.log.Warn("beat: reading a run's result failed", "entry", name, "task_id", p.taskID, "err", err)
			continue
		}
		if !m.Ready() {
			if time.Since(p.sent) > r.maxAge {
				r.forget(name, p.taskID)
			} else {
				r.later(name, p.taskID)
			}
			continue
		}
		r.mu.Lock()
		stale := !p.due.After(r.recorded[name])
		r.mu.Unlock()
		if stale { // a newer run's outcome is recorded already
			r.forget(name, p.taskID)
			continue
		}
		o := Outcome{TaskID: p.taskID, Due: p.due, SentAt: p.sent, Status: m.Status, DateDone: m.DateDone}
		if err := m.Err(); err != nil {
			o.Error = err.Error() // "ValueError: bad", as Python prints it
		} else {
			o.Result = m.Result
		}
		if err := r.store.RecordOutcome(ctx, name, o); err != nil {
			r.log.Warn("beat: recording a run's outcome failed", "entry", name, "err", err)
			continue
		}
		r.log.Info("beat: run finished", "entry", name, "task_id", p.taskID, "status", m.Status)
		r.recordedUpTo(name, p.due)
	}
}

// following reports whether run taskID of name is still followed.
func (r *recorder) following(name, taskID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.pending[name] {
		if p.taskID == taskID {
			return true
		}
	}
	return false
}

// recordedUpTo drops the runs of name due at or before due: the newest
// recorded outcome stands, an older one must not overwrite it.
func (r *recorder) recordedUpTo(name string, due time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if due.After(r.recorded[name]) {
		r.recorded[name] = due
	}
	runs := r.pending[name][:0]
	for _, p := range r.pending[name] {
		if p.due.After(due) {
			runs = append(runs, p)
		}
	}
	if len(runs) == 0 {
		delete(r.pending, name)
		return
	}
	r.pending[name] = runs
}

// later doubles the pause before run taskID of name is read again.
func (r *recorder) later(name, taskID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.pending[name] {
		if p := &r.pending[name][i]; p.taskID == taskID {
			p.wait = min(2*p.wait, maxWait)
			p.next = time.Now().Add(p.wait)
		}
	}
}

func (r *recorder) forget(name, taskID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	runs := r.pending[name][:0]
	for _, p := range r.pending[name] {
		if p.taskID != taskID {
			runs = append(runs, p)
		}
	}
	if len(runs) == 0 {
		delete(r.pending, name)
		return
	}
	r.pending[name] = runs
}
