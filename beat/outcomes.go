package beat

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// recorder follows sent runs in the result backend and records each one's
// final state (SUCCESS, FAILURE, ...) on its entry, so the store shows
// what the last run did. Only an entry's latest run is followed.
type recorder struct {
	store   *Store
	results ResultReader
	every   time.Duration
	log     *slog.Logger
	maxAge  time.Duration

	mu      sync.Mutex
	pending map[string]pendingRun // by entry name
}

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
		pending: map[string]pendingRun{}}
}

// track follows run taskID of entry name (replacing an older run).
func (r *recorder) track(name, taskID string, due, sent time.Time) {
	r.mu.Lock()
	// Read at the next poll, then less and less often.
	r.pending[name] = pendingRun{taskID: taskID, due: due, sent: sent, next: time.Now(), wait: r.every}
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

func (r *recorder) poll(ctx context.Context) {
	r.mu.Lock()
	now := time.Now()
	todo := make(map[string]pendingRun)
	for k, v := range r.pending {
		if !now.Before(v.next) {
			todo[k] = v
		}
	}
	r.mu.Unlock()
	for name, p := range todo {
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
		r.forget(name, p.taskID)
	}
}

// later doubles the pause before run taskID of name is read again.
func (r *recorder) later(name, taskID string) {
	r.mu.Lock()
	if p, ok := r.pending[name]; ok && p.taskID == taskID {
		p.wait = min(2*p.wait, maxWait)
		p.next = time.Now().Add(p.wait)
		r.pending[name] = p
	}
	r.mu.Unlock()
}

func (r *recorder) forget(name, taskID string) {
	r.mu.Lock()
	if r.pending[name].taskID == taskID {
		delete(r.pending, name)
	}
	r.mu.Unlock()
}
