package consumer

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gocelery/gocelery/results"
)

// revokedSet is Celery's LimitedSet of revoked ids: at most max ids, each
// forgotten after ttl.
type revokedSet struct {
	mu  sync.Mutex
	ids map[string]time.Time
	max int
	ttl time.Duration
	// n is len(ids): every task is checked twice and almost always
	// nothing is revoked, so that check takes no lock.
	n atomic.Int64
}

func (s *revokedSet) add(ids []string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		s.ids[id] = now
	}
	if len(s.ids) > s.max {
		s.purge(now)
	}
	s.n.Store(int64(len(s.ids)))
}

// purge drops expired ids, then the oldest over max; call with mu held.
func (s *revokedSet) purge(now time.Time) {
	for id, t := range s.ids {
		if now.Sub(t) > s.ttl {
			delete(s.ids, id)
		}
	}
	if over := len(s.ids) - s.max; over > 0 {
		type e struct {
			id string
			t  time.Time
		}
		all := make([]e, 0, len(s.ids))
		for id, t := range s.ids {
			all = append(all, e{id, t})
		}
		sort.Slice(all, func(i, k int) bool { return all[i].t.Before(all[k].t) })
		for _, x := range all[:over] {
			delete(s.ids, x.id)
		}
	}
	s.n.Store(int64(len(s.ids)))
}

func (s *revokedSet) has(id string) bool {
	if s.n.Load() == 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.ids[id]
	return ok && time.Since(t) <= s.ttl
}

func (s *revokedSet) list() map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purge(time.Now())
	out := make(map[string]time.Time, len(s.ids))
	for id, t := range s.ids {
		out[id] = t
	}
	return out
}

// Revoke flags ids as revoked, as Celery's revoke command does: a flagged
// task is discarded when received or before it runs (REVOKED stored,
// message acked), and REVOKED is stored now. With terminate, a running
// one has its context cancelled and is recorded REVOKED "terminated"
// when its handler returns. It returns the ids it terminated.
func (rc *Remote) Revoke(ctx context.Context, ids []string, terminate bool) []string {
	w := rc.w
	w.revoked.add(ids, time.Now())
	if w.cfg.RevokedStore != nil {
		if err := w.cfg.RevokedStore.Add(ctx, ids...); err != nil {
			w.log.Warn("revoked ids not persisted", "err", err)
		}
	}
	var terminated []string
	active := map[string]bool{}
	w.track.mu.Lock()
	for _, id := range ids {
		t := w.track.reqs[id]
		if t != nil && t.state == StateActive {
			active[id] = true
		}
		if t == nil || !terminate || t.state != StateActive || t.cancel == nil {
			continue
		}
		t.terminated = true
		t.cancel()
		terminated = append(terminated, id)
	}
	w.track.mu.Unlock()
	for _, id := range ids {
		if w.backend == nil {
			break
		}
		// Celery 5.6.2+ stores REVOKED at once, without request fields,
		// and 5.7 only where no worker has taken the task over (see
		// mayStoreRevoked). A task running here records its own outcome
		// (REVOKED "terminated" when terminate cancelled it).
		if active[id] || !w.mayStoreRevoked(ctx, id) {
			continue
		}
		m := &results.Meta{TaskID: id, Status: results.Revoked, Result: results.TaskRevokedError("revoked"), NullChildren: true}
		if err := w.backend.Store(ctx, m); err != nil {
			w.log.Warn("storing REVOKED failed", "id", id, "err", err)
		}
	}
	return terminated
}

// stateReader is a result backend that can read a task's state
// (*results.Redis); with one, revoke checks it before storing REVOKED.
type stateReader interface {
	Get(ctx context.Context, taskID string) (*results.Meta, error)
}

// mayStoreRevoked reports whether the revoke command may store REVOKED for
// id, as Celery 5.7's does: only over PENDING, RECEIVED, RETRY or REJECTED.
// A ready state is the task's result; STARTED or a custom state (PROGRESS)
// is another worker's, which records the outcome itself. A backend that
// cannot read states, or a read that fails, stores it as before.
func (w *Worker) mayStoreRevoked(ctx context.Context, id string) bool {
	sr, ok := w.backend.(stateReader)
	if !ok {
		return true
	}
	m, err := sr.Get(ctx, id)
	if err != nil || m == nil {
		return true
	}
	switch m.Status {
	case results.Pending, results.Received, results.Retry, results.Rejected:
		return true
	}
	return false
}

// Revoked returns the revoked ids still remembered, with when they were
// revoked (inspect revoked; the hello sync between workers).
func (rc *Remote) Revoked() map[string]time.Time { return rc.w.revoked.list() }

// MergeRevoked adds ids revoked elsewhere (another worker's hello reply,
// the persisted store) without storing states again.
func (rc *Remote) MergeRevoked(ids map[string]time.Time) { rc.w.mergeRevoked(ids) }

func (w *Worker) mergeRevoked(ids map[string]time.Time) {
	for id, t := range ids {
		w.revoked.add([]string{id}, t)
	}
}

// IsRevoked reports whether id is flagged as revoked.
func (rc *Remote) IsRevoked(id string) bool { return rc.w.revoked.has(id) }

// discardRevoked handles a revoked task at receipt or before it runs:
// REVOKED stored, task-revoked observed, message acked. It reports
// whether j was revoked.
func (w *Worker) discardRevoked(j *job) bool {
	if !w.revoked.has(j.req.ID) {
		return false
	}
	r := j.req
	w.log.Info("Discarding revoked task", "task", r.Name(), "id", r.ID)
	w.observe(TaskRevoked, r, nil)
	w.finish(r, w.meta(r, results.Revoked, results.TaskRevokedError("revoked")), true)
	w.ack(j.d)
	w.trackDone(j)
	return true
}

// RevokedStore persists revoked ids so a restarted worker keeps them
// (Celery's --statedb).
type RevokedStore interface {
	Add(ctx context.Context, ids ...string) error
	Load(ctx context.Context) (map[string]time.Time, error)
}
