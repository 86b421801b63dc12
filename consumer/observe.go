package consumer

import (
	"time"

	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// Task event types, with Celery's names.
const (
	TaskReceived  = "task-received"
	TaskStarted   = "task-started"
	TaskSucceeded = "task-succeeded"
	TaskFailed    = "task-failed"
	TaskRetried   = "task-retried"
	TaskRevoked   = "task-revoked"
	TaskRejected  = "task-rejected"
)

// TaskEvent is one step of a task's life in the worker: received, then
// started, then one outcome (or revoked or rejected without starting).
type TaskEvent struct {
	Type    string
	Time    time.Time
	Message *protocol.Message
	Queue   string // the queue it was consumed from
	// Received is when the worker took the message; on task-started,
	// Time - Received is the wait in the worker (ETA hold, full pool).
	Received time.Time
	// Runtime is the handler's run time (succeeded, failed).
	Runtime time.Duration
	// Result is the return value (succeeded).
	Result any
	// Exception and Traceback describe a failure or a retry's cause.
	Exception *results.Exception
	Traceback string
	// Expired and Terminated qualify task-revoked.
	Expired, Terminated bool
	// Requeue qualifies task-rejected.
	Requeue bool
}

// Observer is told about every task event, in order for each task. It is
// called from the worker's goroutines and must not block: events.Dispatcher
// (Celery's task events, for Flower) and metrics.Collector implement it.
type Observer interface {
	ObserveTask(e *TaskEvent)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(e *TaskEvent)

// ObserveTask calls f(e).
func (f ObserverFunc) ObserveTask(e *TaskEvent) { f(e) }

// Quiet is implemented by observers that are sometimes off (task events
// before enable_events): while every observer is quiet the worker builds
// no events at all.
type Quiet interface {
	Observing() bool
}

// observe sends an event about r to every observer.
func (w *Worker) observe(typ string, r *Request, fill func(e *TaskEvent)) {
	listening := false
	for _, o := range w.cfg.Observers {
		if q, ok := o.(Quiet); !ok || q.Observing() {
			listening = true
			break
		}
	}
	if !listening {
		return
	}
	e := &TaskEvent{Type: typ, Time: time.Now(), Message: r.Message, Queue: r.Queue, Received: r.received}
	if fill != nil {
		fill(e)
	}
	for _, o := range w.cfg.Observers {
		o.ObserveTask(e)
	}
}

// observeFailure reports a failure with its exception.
func (w *Worker) observeFailure(r *Request, exc *results.Exception, traceback string, runtime time.Duration) {
	w.observe(TaskFailed, r, func(e *TaskEvent) {
		e.Exception, e.Traceback, e.Runtime = exc, traceback, runtime
	})
}
