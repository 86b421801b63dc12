package consumer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// What remote control (celery inspect / celery control) reads and changes
// in a running worker. The pidbox node in package control calls these.

// Sentinel errors of the control methods.
var (
	ErrUnknownTask    = errors.New("unknown task")
	ErrBadRateLimit   = errors.New("invalid rate limit string")
	ErrUnknownQueue   = errors.New("not consuming from that queue")
	ErrAlreadyConsume = errors.New("already consuming from that queue")
)

// Request states for inspect query_task.
const (
	StateReserved  = "reserved"  // received, waiting for a free slot or its ETA
	StateActive    = "active"    // running
	StateScheduled = "scheduled" // held until its ETA (query_task reports it as reserved)
)

// RequestInfo describes a task in the worker as Celery's Request.info does.
type RequestInfo struct {
	*protocol.Message
	Queue, Exchange, RoutingKey string
	Redelivered                 bool
	Hostname                    string
	State                       string
	TimeStart                   time.Time // zero until it runs
	Acknowledged                bool
}

// tracked is the worker's view of one request between receipt and outcome.
type tracked struct {
	j          *job
	state      string
	started    time.Time
	acked      bool
	cancel     context.CancelFunc // cancels the handler's context (terminate)
	terminated bool
}

// tracker keeps the requests in the worker, for inspect and revoke.
type tracker struct {
	mu    sync.Mutex
	reqs  map[string]*tracked // by task id; a redelivered duplicate replaces
	total map[string]int64    // tasks taken, by name (stats "total")
}

func (w *Worker) trackReceived(j *job, state string) {
	w.track.mu.Lock()
	w.track.reqs[j.req.ID] = &tracked{j: j, state: state}
	w.track.total[j.req.Task]++
	w.track.mu.Unlock()
}

// trackStart marks j running, with the cancel of its handler's context.
func (w *Worker) trackStart(j *job, cancel context.CancelFunc) {
	w.track.mu.Lock()
	t := w.track.reqs[j.req.ID]
	if t == nil || t.j != j {
		t = &tracked{j: j}
		w.track.reqs[j.req.ID] = t
	}
	t.state, t.started, t.cancel, t.acked = StateActive, time.Now(), cancel, j.acked
	w.track.mu.Unlock()
}

// trackDone forgets j and reports whether a revoke with terminate
// cancelled it meanwhile.
func (w *Worker) trackDone(j *job) (terminated bool) {
	w.track.mu.Lock()
	defer w.track.mu.Unlock()
	t := w.track.reqs[j.req.ID]
	if t == nil || t.j != j {
		return false
	}
	delete(w.track.reqs, j.req.ID)
	return t.terminated
}

func (w *Worker) infos(match func(t *tracked) bool) []RequestInfo {
	w.track.mu.Lock()
	var out []RequestInfo
	for _, t := range w.track.reqs {
		if match(t) {
			out = append(out, t.info(w.cfg.Hostname))
		}
	}
	w.track.mu.Unlock()
	sort.Slice(out, func(i, k int) bool { return out[i].ID < out[k].ID })
	return out
}

func (t *tracked) info(host string) RequestInfo {
	r := t.j.req
	return RequestInfo{Message: r.Message, Queue: r.Queue, Exchange: r.Exchange, RoutingKey: r.RoutingKey,
		Redelivered: r.Redelivered, Hostname: host, State: t.state, TimeStart: t.started, Acknowledged: t.acked}
}

// Active returns the running tasks (inspect active).
func (w *Worker) Active() []RequestInfo {
	return w.infos(func(t *tracked) bool { return t.state == StateActive })
}

// Reserved returns the tasks received and waiting for a slot, not those
// held for an ETA (inspect reserved).
func (w *Worker) Reserved() []RequestInfo {
	return w.infos(func(t *tracked) bool { return t.state == StateReserved })
}

// Scheduled returns the tasks held until their ETA (inspect scheduled).
func (w *Worker) Scheduled() []RequestInfo {
	return w.infos(func(t *tracked) bool { return t.state == StateScheduled })
}

// Query returns what the worker knows of ids (inspect query_task).
func (w *Worker) Query(ids []string) map[string]RequestInfo {
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	out := map[string]RequestInfo{}
	for _, i := range w.infos(func(t *tracked) bool { return want[t.j.req.ID] }) {
		out[i.ID] = i
	}
	return out
}

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
func (w *Worker) Revoke(ctx context.Context, ids []string, terminate bool) []string {
	w.revoked.add(ids, time.Now())
	if w.cfg.RevokedStore != nil {
		if err := w.cfg.RevokedStore.Add(ctx, ids...); err != nil {
			w.log.Warn("revoked ids not persisted", "err", err)
		}
	}
	var terminated []string
	w.track.mu.Lock()
	for _, id := range ids {
		t := w.track.reqs[id]
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
		// Celery 5.6.2+ stores REVOKED at once, without request fields;
		// a stored SUCCESS is never overwritten.
		m := &results.Meta{TaskID: id, Status: results.Revoked, Result: results.TaskRevokedError("revoked"), NullChildren: true}
		if err := w.backend.Store(ctx, m); err != nil {
			w.log.Warn("storing REVOKED failed", "id", id, "err", err)
		}
	}
	return terminated
}

// Revoked returns the revoked ids still remembered, with when they were
// revoked (inspect revoked; the hello sync between workers).
func (w *Worker) Revoked() map[string]time.Time { return w.revoked.list() }

// MergeRevoked adds ids revoked elsewhere (another worker's hello reply,
// the persisted store) without storing states again.
func (w *Worker) MergeRevoked(ids map[string]time.Time) {
	for id, t := range ids {
		w.revoked.add([]string{id}, t)
	}
}

// IsRevoked reports whether id is flagged as revoked.
func (w *Worker) IsRevoked(id string) bool { return w.revoked.has(id) }

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

// ParseRateLimit reads Celery's rate limit strings: "10/s", "100/m",
// "5/h", or a bare number per second; "" or "0" means no limit (0).
func ParseRateLimit(s string) (perSecond float64, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	num, unit, hasUnit := strings.Cut(s, "/")
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: %q", ErrBadRateLimit, s)
	}
	if !hasUnit {
		return n, nil
	}
	switch strings.TrimSpace(unit) {
	case "s":
		return n, nil
	case "m":
		return n / 60, nil
	case "h":
		return n / 3600, nil
	}
	return 0, fmt.Errorf("%w: %q", ErrBadRateLimit, s)
}

// taskLimits are the limits per task name that rate_limit and time_limit
// change at run time. Every task reads them and they almost never change,
// so readers load a snapshot and writers replace it.
type taskLimits struct {
	mu  sync.Mutex // serializes writers
	cur atomic.Pointer[limitSet]
}

type limitSet struct {
	rates    map[string]*rate.Limiter
	rateStr  map[string]string
	timeouts map[string][2]time.Duration // soft, hard
}

// update applies f to a copy of the current limits and publishes it.
func (l *taskLimits) update(f func(ls *limitSet)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := &limitSet{rates: map[string]*rate.Limiter{}, rateStr: map[string]string{}, timeouts: map[string][2]time.Duration{}}
	if cur := l.cur.Load(); cur != nil {
		maps.Copy(next.rates, cur.rates)
		maps.Copy(next.rateStr, cur.rateStr)
		maps.Copy(next.timeouts, cur.timeouts)
	}
	f(next)
	l.cur.Store(next)
}

// SetRateLimit sets a task's rate limit ("10/s", "100/m"; "" removes
// it), as Celery's rate_limit command: the worker delays the task's runs
// so they start no faster.
func (w *Worker) SetRateLimit(task, limit string) error {
	if _, _, ok := w.mux.Lookup(task); !ok {
		return ErrUnknownTask
	}
	perSec, err := ParseRateLimit(limit)
	if err != nil {
		return err
	}
	w.limits.update(func(ls *limitSet) {
		if perSec == 0 {
			delete(ls.rates, task)
			delete(ls.rateStr, task)
			return
		}
		ls.rates[task] = rate.NewLimiter(rate.Limit(perSec), 1)
		ls.rateStr[task] = limit
	})
	return nil
}

// RateLimit returns a task's rate limit string, "" for none.
func (w *Worker) RateLimit(task string) string {
	if ls := w.limits.cur.Load(); ls != nil {
		return ls.rateStr[task]
	}
	return ""
}

func (w *Worker) limiter(task string) *rate.Limiter {
	if ls := w.limits.cur.Load(); ls != nil {
		return ls.rates[task]
	}
	return nil
}

// SetTimeLimit sets a task's soft and hard time limits (0: none), as
// Celery's time_limit command; they apply to runs that start afterwards
// and to messages without limits of their own.
func (w *Worker) SetTimeLimit(task string, soft, hard time.Duration) error {
	if _, _, ok := w.mux.Lookup(task); !ok {
		return ErrUnknownTask
	}
	w.limits.update(func(ls *limitSet) { ls.timeouts[task] = [2]time.Duration{soft, hard} })
	return nil
}

func (w *Worker) timeLimitOverride(task string) (soft, hard time.Duration, ok bool) {
	ls := w.limits.cur.Load()
	if ls == nil {
		return 0, 0, false
	}
	t, ok := ls.timeouts[task]
	return t[0], t[1], ok
}

// TaskInfo is one registered task (inspect registered).
type TaskInfo struct {
	Name      string
	RateLimit string
}

// Registered returns the worker's tasks, sorted.
func (w *Worker) Registered() []TaskInfo {
	names := w.mux.Names()
	sort.Strings(names)
	out := make([]TaskInfo, len(names))
	for i, n := range names {
		out[i] = TaskInfo{Name: n, RateLimit: w.RateLimit(n)}
	}
	return out
}

// TotalByTask counts the tasks this worker took, by name (stats "total").
func (w *Worker) TotalByTask() map[string]int64 {
	w.track.mu.Lock()
	defer w.track.mu.Unlock()
	return maps.Clone(w.track.total)
}

// Hostname returns the worker's node name.
func (w *Worker) Hostname() string { return w.cfg.Hostname }

// Started returns when Run began (stats "uptime").
func (w *Worker) Started() time.Time {
	w.runMu.Lock()
	defer w.runMu.Unlock()
	return w.started
}
