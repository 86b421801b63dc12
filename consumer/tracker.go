package consumer

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/gocelery/gocelery/protocol"
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
func (rc *Remote) Active() []RequestInfo {
	w := rc.w
	return w.infos(func(t *tracked) bool { return t.state == StateActive })
}

// Reserved returns the tasks received and waiting for a slot, not those
// held for an ETA (inspect reserved).
func (rc *Remote) Reserved() []RequestInfo {
	w := rc.w
	return w.infos(func(t *tracked) bool { return t.state == StateReserved })
}

// Scheduled returns the tasks held until their ETA (inspect scheduled).
func (rc *Remote) Scheduled() []RequestInfo {
	w := rc.w
	return w.infos(func(t *tracked) bool { return t.state == StateScheduled })
}

// Query returns what the worker knows of ids (inspect query_task).
func (rc *Remote) Query(ids []string) map[string]RequestInfo {
	w := rc.w
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
