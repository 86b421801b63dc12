package consumer

import (
	"context"
	"errors"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/results"
)

// job is a task request on its way to a handler.
type job struct {
	d     *broker.Delivery
	req   *Request
	h     Handler
	opts  TaskOptions
	acked bool // acked early, before the handler ran
}

// dispatchLoop receives deliveries until ctx is done or the transport
// closes the channel.
func (w *Worker) dispatchLoop(ctx context.Context, deliveries <-chan *broker.Delivery) {
	for {
		select {
		case <-ctx.Done():
			return
		case d, ok := <-deliveries:
			if !ok {
				return
			}
			w.dispatch(ctx, d)
		}
	}
}

// dispatch follows Celery's receive pipeline: decode, look up the task,
// drop expired ones, hold ETA ones, hand the rest to the pool.
func (w *Worker) dispatch(ctx context.Context, d *broker.Delivery) {
	m, err := w.cfg.Decoder.Decode(&d.Raw)
	if err != nil {
		w.log.Error("Received invalid task message: moved to the dead-letter queue",
			"queue", d.Queue, "reason", err, "dead_letter", w.deadLetterKey(d, "malformed"))
		w.deadLetter(d, "malformed", err.Error())
		return
	}
	r := &Request{
		Message: m, Queue: d.Queue, Exchange: d.Exchange, RoutingKey: d.RoutingKey,
		Redelivered: d.Redelivered, Hostname: w.cfg.Hostname, state: w, received: time.Now(),
	}
	h, opts, ok := w.mux.Lookup(m.Task)
	if !ok {
		w.unknown(d, r)
		return
	}
	if soft, hard, ok := w.timeLimitOverride(m.Task); ok {
		opts.SoftTimeLimit, opts.TimeLimit = soft, hard
	}
	j := &job{d: d, req: r, h: h, opts: opts}
	if d.Redelivered && w.earlyAcked.has(attempt{m.ID, m.Retries}) {
		w.log.Warn("Received again a task this worker already started: its early ack was lost with the connection; acked, not run twice",
			"task", m.Name(), "id", m.ID, "retries", m.Retries, "queue", d.Queue)
		w.ack(d)
		return
	}
	w.observe(TaskReceived, r, nil)
	if w.expired(j) || w.discardRevoked(j) {
		return
	}
	if !m.ETA.IsZero() && time.Until(m.ETA) > 0 {
		w.log.Info("Task received", "task", m.Name(), "id", m.ID, "eta", m.ETA)
		w.trackReceived(j, StateScheduled)
		w.eta.hold(j)
		return
	}
	w.trackReceived(j, StateReserved)
	w.submit(ctx, j)
}

// submit hands j to the pool, or back to the broker if the worker stops
// first.
func (w *Worker) submit(ctx context.Context, j *job) {
	select {
	case w.jobs <- j:
	case <-ctx.Done():
		w.requeue(j.d, "shutdown")
	}
}

// dropStale drops j if the broker has given its message back (see
// broker.Delivery.Stale) and reports whether it did.
func (w *Worker) dropStale(j *job) bool {
	if !j.d.Stale() {
		return false
	}
	w.staleDropped(j)
	return true
}

// staleDropped forgets a request whose message the broker redelivers:
// nothing is stored or settled, as Celery clears its reserved requests and
// timer when the connection is lost.
func (w *Worker) staleDropped(j *job) {
	w.log.Info("Dropped a received task: the broker gave its message back (connection lost) and delivers it again",
		"task", j.req.Name(), "id", j.req.ID, "queue", j.d.Queue)
	w.trackDone(j)
}

// expired implements Celery's expiry: not run, REVOKED stored, acked.
func (w *Worker) expired(j *job) bool {
	m := j.req.Message
	if m.Expires.IsZero() || time.Now().Before(m.Expires) {
		return false
	}
	w.log.Info("Discarding revoked task", "task", m.Name(), "id", m.ID, "reason", "expired", "expires", m.Expires)
	w.observe(TaskRevoked, j.req, func(e *TaskEvent) { e.Expired = true })
	w.finish(j.req, w.meta(j.req, results.Revoked, results.TaskRevokedError("expired")), true)
	w.ack(j.d)
	w.trackDone(j)
	return true
}

// unknown handles a task name with no handler: never silently lost.
func (w *Worker) unknown(d *broker.Delivery, r *Request) {
	if w.cfg.Unknown == Requeue {
		w.log.Warn("Received unregistered task: requeued for another worker",
			"task", r.Task, "id", r.ID, "queue", d.Queue)
		time.AfterFunc(time.Second, func() { w.requeue(d, "unregistered") })
		return
	}
	dl := w.deadLetterKey(d, "unregistered")
	// FAILURE and the errbacks follow the move: a move that fails
	// requeues the message, which comes back here, and they must happen
	// once, not once per attempt.
	if !w.deadLetter(d, "unregistered", "task not registered: "+r.Task) {
		return
	}
	w.log.Error("Received unregistered task of type '"+r.Task+"': stored FAILURE NotRegistered and moved the message to '"+dl+"'. "+
		"Only tasks registered on this worker may be sent to its queues: give each app its own queue (task_default_queue, task_routes) so another app's tasks never land here.",
		"task", r.Task, "id", r.ID, "queue", d.Queue, "dead_letter", dl)
	// Celery stores NotRegistered even when the sender asked to ignore results.
	w.observeFailure(r, results.NotRegistered(r.Task), "", 0)
	w.finish(r, w.meta(r, results.Failure, results.NotRegistered(r.Task)), true)
}

func (w *Worker) deadLetterKey(d *broker.Delivery, reason string) string {
	return d.Queue + "." + reason
}

// deadLetter moves d to "<queue>.<reason>" (a queue on the default
// exchange, or DeadLetterExchange with that routing key), then acks it,
// and reports whether it did. If the move fails the message is requeued
// after a pause: it is never dropped.
func (w *Worker) deadLetter(d *broker.Delivery, reason, cause string) bool {
	key := w.deadLetterKey(d, reason)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := w.declareDeadLetter(ctx, key)
	if err == nil {
		raw := d.Raw
		raw.Headers = make(map[string]any, len(d.Headers)+3)
		for k, v := range d.Headers {
			raw.Headers[k] = v
		}
		raw.Headers["x-gocelery-reason"] = cause
		raw.Headers["x-gocelery-queue"] = d.Queue
		raw.Headers["x-gocelery-hostname"] = w.cfg.Hostname
		err = w.broker.Publish(ctx, broker.Publishing{
			Raw: raw, Exchange: w.cfg.DeadLetterExchange, RoutingKey: key, Mandatory: true,
		})
	}
	if err != nil {
		if errors.Is(err, broker.ErrUnroutable) {
			// The dead-letter queue was deleted under us: declare it again
			// on the next attempt.
			w.dlqMu.Lock()
			delete(w.dlqDeclared, key)
			w.dlqMu.Unlock()
		}
		w.log.Error("dead-lettering failed: message requeued", "queue", d.Queue, "dead_letter", key, "err", err)
		time.AfterFunc(time.Second, func() { w.requeue(d, "dead-letter failed") })
		return false
	}
	w.ack(d)
	return true
}

func (w *Worker) declareDeadLetter(ctx context.Context, key string) error {
	if w.cfg.DeadLetterExchange != "" {
		return nil // the operator's exchange and its bindings decide
	}
	w.dlqMu.Lock()
	defer w.dlqMu.Unlock()
	if w.dlqDeclared[key] {
		return nil
	}
	if err := w.broker.Declare(ctx, broker.Queue{Name: key, Exchange: "", RoutingKey: key}); err != nil {
		return err
	}
	w.dlqDeclared[key] = true
	return nil
}

func (w *Worker) ack(d *broker.Delivery) {
	if err := d.Ack(); err != nil {
		w.logSettle("ack", d, err)
	}
}

func (w *Worker) reject(d *broker.Delivery, requeue bool) {
	if err := d.Reject(requeue); err != nil {
		w.logSettle("reject", d, err)
	}
}

func (w *Worker) requeue(d *broker.Delivery, why string) {
	w.log.Debug("message requeued", "queue", d.Queue, "why", why)
	w.reject(d, true)
}

func (w *Worker) logSettle(op string, d *broker.Delivery, err error) {
	if errors.Is(err, broker.ErrStaleDelivery) {
		// The channel it came on is gone; the broker redelivers it.
		w.log.Warn(op+" after reconnect: the broker will redeliver the message", "queue", d.Queue, "tag", d.Tag)
		return
	}
	w.log.Error(op+" failed", "queue", d.Queue, "tag", d.Tag, "err", err)
}

// store writes a state, logging (not failing the task) when the backend
// is down: Celery's trace does the same.
func (w *Worker) store(m *results.Meta) {
	if w.backend == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.backend.Store(ctx, m); err != nil {
		w.log.Error("storing task state failed", "id", m.TaskID, "state", m.Status, "err", err)
	}
}

// finish stores a ready state (unless the result is ignored) and then lets
// the workflow go on: the chord join, failed chain steps, errbacks. It
// reports whether the message should be redelivered rather than settled:
// the workflow could not reach the result backend (results.ErrUnavailable),
// so the chord part is not recorded and its body maybe never sent.
func (w *Worker) finish(r *Request, m *results.Meta, store bool) (redeliver bool) {
	if store {
		w.store(m)
	}
	if !r.hasWorkflow() {
		return false
	}
	if w.cfg.Workflow == nil {
		w.log.Error("Workflow after task not continued", "task", r.Name(), "id", r.ID, "state", m.Status, "err", ErrNoWorkflow)
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.cfg.Workflow.Finished(ctx, r.Message, m.Status, m.Result); err != nil {
		w.log.Error("Workflow after task failed", "task", r.Name(), "id", r.ID, "state", m.Status, "err", err)
		return errors.Is(err, results.ErrUnavailable)
	}
	return false
}

// hasWorkflow reports whether anything follows the task: the common case
// of a plain task costs nothing.
func (r *Request) hasWorkflow() bool {
	m := r.Message
	return m.Chord != nil || len(m.Chain) > 0 || len(m.Callbacks) > 0 || len(m.Errbacks) > 0
}

func (w *Worker) meta(r *Request, status string, result any) *results.Meta {
	m := &results.Meta{
		TaskID: r.ID, Status: status, Result: result,
		GroupID: r.Group, ParentID: r.ParentID,
		ReplyTo: r.Properties.ReplyTo, CorrelationID: r.Properties.CorrelationID,
	}
	if w.cfg.ResultExtended {
		m.Extended = true
		m.Name, m.Args, m.Kwargs = r.Task, r.Args, r.Kwargs
		m.Worker, m.Retries, m.Queue = w.cfg.Hostname, r.Retries, r.RoutingKey
	}
	return m
}

func (w *Worker) updateState(ctx context.Context, r *Request, state string, meta any) error {
	if w.backend == nil {
		return nil
	}
	return w.backend.Store(ctx, w.meta(r, state, meta))
}
