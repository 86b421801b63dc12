package pgbeat

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/gocelery/gocelery/beat"
)

// recorder follows sent runs in the result backend and records each one's
// final state on its entry, as beat's Redis scheduler does: the last few
// runs of an entry are followed (with a schedule faster than its task the
// newest run is never done when read), read less and less often while not
// done.
type recorder struct {
	store   *Store
	results beat.ResultReader
	every   time.Duration
	log     *slog.Logger

	mu       sync.Mutex
	pending  map[string][]pendingRun
	recorded map[string]time.Time
}

const (
	maxFollowed = 4
	maxWait     = time.Minute
	maxAge      = 24 * time.Hour
)

type pendingRun struct {
	taskID    string
	due, sent time.Time
	next      time.Time
	wait      time.Duration
}

func newRecorder(st *Store, r beat.ResultReader, every time.Duration, log *slog.Logger) *recorder {
	return &recorder{store: st, results: r, every: every, log: log,
		pending: map[string][]pendingRun{}, recorded: map[string]time.Time{}}
}

func (r *recorder) track(name, taskID string, due, sent time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	runs := append(r.pending[name], pendingRun{taskID: taskID, due: due, sent: sent, next: time.Now(), wait: r.every})
	if len(runs) > maxFollowed {
		runs = runs[len(runs)-maxFollowed:]
	}
	r.pending[name] = runs
}

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
		for i := len(runs) - 1; i >= 0; i-- { // newest first
			if !now.Before(runs[i].next) {
				todo = append(todo, followed{k, runs[i]})
			}
		}
	}
	r.mu.Unlock()
	for _, f := range todo {
		if ctx.Err() != nil {
			return
		}
		if !r.update(f.name, f.taskID, nil) {
			continue // dropped meanwhile: a newer run was recorded
		}
		m, err := r.results.Get(ctx, f.taskID)
		if err != nil {
			r.log.Warn("beat: reading a run's result failed", "entry", f.name, "task_id", f.taskID, "err", err)
			continue
		}
		if !m.Ready() {
			r.update(f.name, f.taskID, func(p *pendingRun) bool {
				if time.Since(p.sent) > maxAge {
					return false
				}
				p.wait = min(2*p.wait, maxWait)
				p.next = time.Now().Add(p.wait)
				return true
			})
			continue
		}
		r.mu.Lock()
		stale := !f.due.After(r.recorded[f.name])
		r.mu.Unlock()
		if stale {
			r.update(f.name, f.taskID, func(*pendingRun) bool { return false })
			continue
		}
		o := beat.Outcome{TaskID: f.taskID, Due: f.due, SentAt: f.sent, Status: m.Status, DateDone: m.DateDone}
		if err := m.Err(); err != nil {
			o.Error = err.Error()
		} else {
			o.Result = m.Result
		}
		if err := r.store.RecordOutcome(ctx, f.name, o); err != nil {
			r.log.Warn("beat: recording a run's outcome failed", "entry", f.name, "err", err)
			continue
		}
		r.log.Info("beat: run finished", "entry", f.name, "task_id", f.taskID, "status", m.Status)
		r.mu.Lock()
		r.recorded[f.name] = f.due
		runs := r.pending[f.name][:0]
		for _, p := range r.pending[f.name] {
			if p.due.After(f.due) {
				runs = append(runs, p)
			}
		}
		if len(runs) == 0 {
			delete(r.pending, f.name)
		} else {
			r.pending[f.name] = runs
		}
		r.mu.Unlock()
	}
}

// update applies f to run taskID of name (keep it if f returns true) and
// reports whether the run is followed. A nil f only looks.
func (r *recorder) update(name, taskID string, f func(*pendingRun) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	runs := r.pending[name]
	for i := range runs {
		if runs[i].taskID != taskID {
			continue
		}
		if f != nil && !f(&runs[i]) {
			runs = append(runs[:i], runs[i+1:]...)
			if len(runs) == 0 {
				delete(r.pending, name)
			} else {
				r.pending[name] = runs
			}
		}
		return true
	}
	return false
}
