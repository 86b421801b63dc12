package consumer

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Handler runs one task. The returned value becomes the task's result (it
// must be encodable by protocol.MarshalJSON); a non-nil error fails the
// task, unless it is a *RetryError, *RejectError or ErrIgnore, which the
// worker treats as Celery treats Retry, Reject and Ignore.
type Handler interface {
	ServeTask(ctx context.Context, r *Request) (any, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, r *Request) (any, error)

// ServeTask calls f.
func (f HandlerFunc) ServeTask(ctx context.Context, r *Request) (any, error) { return f(ctx, r) }

// Middleware wraps a handler, as net/http middleware does.
type Middleware func(Handler) Handler

// TaskOptions are a task's own settings, the Go side of Celery's Task
// attributes. Zero values mean "the worker's default".
type TaskOptions struct {
	// AcksLate acks after the handler returns instead of at start.
	AcksLate *bool
	// RejectOnWorkerLost is accepted for parity with Celery's setting.
	// Go handlers run in the worker process, so a lost worker is the
	// whole process (a crash or kill -9), and the broker always redelivers
	// its unacked late-ack messages: the behaviour Celery gives with
	// reject_on_worker_lost=True. A handler panic is not a lost worker: it
	// is recovered and stored as FAILURE.
	RejectOnWorkerLost *bool
	// IgnoreResult stores no result (the message's ignore_result header
	// can also ask for it).
	IgnoreResult bool
	// TrackStarted stores STARTED when the handler begins.
	TrackStarted *bool
	// MaxRetries bounds Retry; nil means Celery's default of 3, and a
	// negative value means no limit (Celery's None).
	MaxRetries *int
	// DefaultRetryDelay is used by Retry without a countdown or ETA;
	// 0 means Celery's 180 s.
	DefaultRetryDelay time.Duration
	// TimeLimit and SoftTimeLimit apply when the message has none.
	TimeLimit, SoftTimeLimit time.Duration
	// AutoRetryFor retries the task when the handler's error matches,
	// like Celery's autoretry_for, with exponential backoff:
	// min(RetryBackoffMax, RetryBackoff * 2^retries), with full jitter
	// when RetryJitter is set.
	AutoRetryFor    func(error) bool
	RetryBackoff    time.Duration
	RetryBackoffMax time.Duration
	RetryJitter     bool
}

// Bool returns a pointer to v, for the optional TaskOptions fields.
func Bool(v bool) *bool { return &v }

// Int returns a pointer to v, for TaskOptions.MaxRetries.
func Int(v int) *int { return &v }

type entry struct {
	h    Handler
	opts TaskOptions
}

// Mux routes tasks by name, as http.ServeMux routes paths. It is safe for
// concurrent use; registering while a worker runs is allowed.
type Mux struct {
	mu         sync.RWMutex
	tasks      map[string]entry
	middleware []Middleware
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{tasks: map[string]entry{}} }

// Handle registers h for the task name, with its options. Registering a
// name twice panics, as http.ServeMux does: it is a programming error.
func (m *Mux) Handle(name string, h Handler, opts ...TaskOptions) {
	if name == "" || h == nil {
		panic("consumer: Handle needs a task name and a handler")
	}
	var o TaskOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tasks == nil {
		m.tasks = map[string]entry{}
	}
	if _, dup := m.tasks[name]; dup {
		panic("consumer: task " + name + " registered twice")
	}
	m.tasks[name] = entry{h, o}
}

// HandleFunc registers f for the task name.
func (m *Mux) HandleFunc(name string, f func(ctx context.Context, r *Request) (any, error), opts ...TaskOptions) {
	m.Handle(name, HandlerFunc(f), opts...)
}

// Use appends middleware, applied to every task, outermost first.
func (m *Mux) Use(mw ...Middleware) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.middleware = append(m.middleware, mw...)
}

// Lookup returns the handler for a task name, wrapped in the middleware,
// and its options; ok is false for an unregistered name.
func (m *Mux) Lookup(name string) (h Handler, opts TaskOptions, ok bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	e, ok := m.tasks[name]
	if !ok {
		return nil, TaskOptions{}, false
	}
	h = e.h
	for i := len(m.middleware) - 1; i >= 0; i-- {
		h = m.middleware[i](h)
	}
	return h, e.opts, true
}

// Names returns the registered task names, sorted (Celery's "registered").
func (m *Mux) Names() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	names := make([]string, 0, len(m.tasks))
	for n := range m.tasks {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
