package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// outcome is what running a handler gave.
type outcome struct {
	value     any
	err       error
	traceback string // set for panics
	hardLimit bool   // the hard time limit expired first
}

func pick(p *bool, def bool) bool {
	if p != nil {
		return *p
	}
	return def
}

// limits resolves the time limits: the message's, else the task's.
func limits(j *job) (hard, soft time.Duration) {
	hard, soft = j.req.TimeLimit.Hard, j.req.TimeLimit.Soft
	if hard == 0 {
		hard = j.opts.TimeLimit
	}
	if soft == 0 {
		soft = j.opts.SoftTimeLimit
	}
	return hard, soft
}

// execute runs one task with Celery's ack, state and retry semantics. The
// handler holds one of the Concurrency slots; for an early-acked task what
// follows it (storing the result, the chord join, callbacks) runs off the
// slot, so a slot never idles on a result-backend round trip and
// concurrent tasks' writes share round trips. At most Concurrency
// handlers run at once; at most max(prefetch, Concurrency) tasks finish.
func (w *Worker) execute(j *job) {
	w.active.Add(1)
	c := w.run(j)
	// A late-ack task keeps its slot until acked: a kill -9 then runs again
	// at most Concurrency tasks that had already run.
	if c == nil || c.acksLate {
		if c != nil {
			w.conclude(j, c)
		}
		w.finished()
		return
	}
	w.finishQ <- finishJob{j, c} // every finisher busy: this slot waits, as it did before
}

// finishJob is an early-acked task whose handler returned, for a finisher
// to conclude.
type finishJob struct {
	j *job
	c *ran
}

func (w *Worker) finished() {
	w.active.Add(-1)
	w.processed.Add(1)
}

// ran is what run hands to conclude.
type ran struct {
	o                            outcome
	runtime                      time.Duration
	terminated, acksLate, ignore bool
}

// run is a task's part on a slot: the checks before execution, the early
// ack, STARTED, and the handler. It returns nil when there is nothing to
// conclude.
func (w *Worker) run(j *job) *ran {
	r := j.req
	// A message the broker has given back since it was received (its
	// channel was lost while it waited for a slot) is delivered again:
	// running this copy would run it twice.
	if w.dropStale(j) {
		return nil
	}
	// Celery checks expiry and revocation again just before execution.
	if w.expired(j) || w.discardRevoked(j) {
		return nil
	}
	if lim := w.limiter(r.Task); lim != nil {
		// A rate-limited task waits for its turn, as in Celery's bucket.
		if err := lim.Wait(w.taskCtx); err != nil {
			w.trackDone(j)
			w.requeue(j.d, "shutdown")
			return nil
		}
		if w.dropStale(j) {
			return nil
		}
	}
	acksLate := pick(j.opts.AcksLate, w.cfg.AcksLate)
	if !acksLate {
		// Early ack: at execution start, not at receipt, and deferred a
		// moment to share a frame, as Celery's prefork parent acks once the
		// child reports the start. If the broker no longer has the message
		// for us, it redelivers it: not ours to run.
		if err := j.d.AckDeferred(); err != nil {
			if errors.Is(err, broker.ErrStaleDelivery) {
				w.staleDropped(j)
				return nil
			}
			w.logSettle("ack", j.d, err)
		}
		j.acked = true
		w.earlyAcked.add(attempt{r.ID, r.Retries})
	}
	ignore := r.IgnoreResult || j.opts.IgnoreResult
	if pick(j.opts.TrackStarted, w.cfg.TrackStarted) && !ignore {
		w.store(w.meta(r, results.Started, results.StartedResult(w.pid, w.cfg.Hostname)))
	}
	w.observe(TaskStarted, r, nil)
	start := time.Now()
	o := w.call(j)
	return &ran{o: o, runtime: time.Since(start), terminated: w.trackDone(j), acksLate: acksLate, ignore: ignore}
}

// conclude settles a task that ran: its state, workflow and late ack.
func (w *Worker) conclude(j *job, c *ran) {
	r, o, runtime, terminated, acksLate, ignore := j.req, c.o, c.runtime, c.terminated, c.acksLate, c.ignore
	redeliver := false // set when the workflow asks for the message again
	settleLate := func(ok bool, requeue bool) {
		if !acksLate {
			return
		}
		if redeliver {
			// The chord join could not reach the result backend: the
			// broker gives the message back, and the part is recorded
			// when it runs again (the join is safe to repeat).
			w.log.Warn("Chord join could not reach the result backend: message requeued for another try", "task", r.Name(), "id", r.ID)
			w.reject(j.d, true)
			return
		}
		if ok {
			w.ack(j.d)
		} else {
			w.reject(j.d, requeue)
		}
	}
	acksOnFailure := pick(w.cfg.AcksOnFailure, true)

	var retryErr *RetryError
	var rejectErr *RejectError
	switch {
	case terminated:
		w.log.Info("Task terminated by revoke", "task", r.Name(), "id", r.ID)
		w.observe(TaskRevoked, r, func(e *TaskEvent) { e.Terminated = true })
		w.finish(r, w.meta(r, results.Revoked, results.TaskRevokedError("terminated")), true)
		settleLate(true, false)
	case o.err != nil && w.cold.Load():
		w.workerLost(j, acksLate, ignore, runtime)
	case o.hardLimit:
		hard, _ := limits(j)
		w.log.Error("Hard time limit exceeded: handler abandoned", "task", r.Name(), "id", r.ID, "limit", hard)
		w.observeFailure(r, results.TimeLimitExceeded(hard.Seconds()), "", runtime)
		redeliver = w.finish(r, w.failureMeta(r, results.TimeLimitExceeded(hard.Seconds()), ""), !ignore)
		settleLate(acksOnFailure, true)
	case o.err == nil:
		if w.log.Enabled(context.Background(), slog.LevelInfo) { // the repr costs more than the task
			w.log.Info(fmt.Sprintf("Task %s[%s] succeeded in %.6fs: %s", r.Name(), r.ID, runtime.Seconds(), protocol.Repr(o.value)))
		}
		if err := w.succeeded(r, o.value); err != nil {
			// Celery fails the task when its callbacks cannot be sent.
			w.log.Error("Task callbacks could not be sent", "task", r.Name(), "id", r.ID, "err", err)
			w.observeFailure(r, results.ExceptionFrom(err), "", runtime)
			w.finish(r, w.failureMeta(r, results.ExceptionFrom(err), ""), !ignore)
			settleLate(acksOnFailure, false)
			break
		}
		w.observe(TaskSucceeded, r, func(e *TaskEvent) { e.Result, e.Runtime = o.value, runtime })
		redeliver = w.finish(r, w.meta(r, results.Success, o.value), !ignore)
		settleLate(true, false)
	case errors.Is(o.err, ErrIgnore):
		settleLate(true, false)
	case isReplace(o.err): // Task.replace: see replace.go
		w.replaced(j, o.err, ignore, acksLate)
	case errors.As(o.err, &rejectErr):
		w.log.Info("Task rejected", "task", r.Name(), "id", r.ID, "requeue", rejectErr.Requeue, "reason", rejectErr.Reason)
		w.observe(TaskRejected, r, func(e *TaskEvent) { e.Requeue = rejectErr.Requeue })
		if acksLate {
			w.reject(j.d, rejectErr.Requeue)
		}
		if !rejectErr.Requeue && !ignore {
			w.store(w.failureMeta(r, results.Reject(rejectErr.Reason, false), ""))
		}
	case errors.As(o.err, &retryErr):
		w.retry(j, retryErr, ignore, acksLate)
	case j.opts.AutoRetryFor != nil && j.opts.AutoRetryFor(o.err):
		w.retry(j, &RetryError{Countdown: backoff(j.opts, r.Retries), Err: o.err}, ignore, acksLate)
	default:
		w.log.Error(fmt.Sprintf("Task %s[%s] raised unexpected: %v", r.Name(), r.ID, o.err))
		fm := w.failureMeta(r, w.exception(j, o.err), o.traceback)
		w.observeFailure(r, fm.Result.(*results.Exception), fm.Traceback, runtime)
		redeliver = w.finish(r, fm, !ignore)
		settleLate(acksOnFailure, false)
	}
}

// succeeded sends the callbacks and next chain step of a task that
// succeeded.
func (w *Worker) succeeded(r *Request, value any) error {
	m := r.Message
	if len(m.Callbacks) == 0 && len(m.Chain) == 0 {
		return nil
	}
	if w.cfg.Workflow == nil {
		return ErrNoWorkflow
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return w.cfg.Workflow.Succeeded(ctx, m, value)
}

// ErrNoWorkflow fails a task whose message carries a workflow (chain,
// callbacks, chord) on a worker configured without Config.Workflow.
var ErrNoWorkflow = errors.New("consumer: the task has a chain, callbacks or a chord, but the worker has no Workflow to continue them (Config.Workflow; package worker sets it)")

// exception maps a handler error to the Python exception stored.
func (w *Worker) exception(j *job, err error) *results.Exception {
	if _, soft := limits(j); soft > 0 && errors.Is(err, context.DeadlineExceeded) {
		// billiard raises it with no arguments; Celery re-exports it.
		return &results.Exception{Type: "SoftTimeLimitExceeded", Module: "billiard.exceptions", Message: []any{}}
	}
	return results.ExceptionFrom(err)
}

func (w *Worker) failureMeta(r *Request, exc *results.Exception, traceback string) *results.Meta {
	m := w.meta(r, results.Failure, exc)
	if traceback == "" {
		traceback = fmt.Sprintf("Traceback (most recent call last):\n  Go task %s[%s] on %s\n%s\n", r.Task, r.ID, w.cfg.Hostname, exc.Error())
	}
	m.Traceback = traceback
	return m
}

// call runs the handler under the task's time limits. The soft limit
// cancels the handler's context; the hard limit stops waiting for it (a
// goroutine cannot be killed) so the worker stays healthy.
func (w *Worker) call(j *job) outcome {
	hard, soft := limits(j)
	ctx, cancel := context.WithCancel(w.taskCtx)
	defer cancel()
	w.trackStart(j, cancel)
	if soft > 0 {
		ctx, cancel = context.WithTimeout(ctx, soft)
		defer cancel()
	}
	ctx = WithRequest(ctx, j.req)
	if hard <= 0 {
		return safeCall(ctx, j)
	}
	ch := make(chan outcome, 1)
	go func() { ch <- safeCall(ctx, j) }()
	timer := time.NewTimer(hard)
	defer timer.Stop()
	select {
	case o := <-ch:
		return o
	case <-timer.C:
		w.abandon(ch)
		return outcome{hardLimit: true}
	}
}

// abandon counts a handler left running past its hard limit until it
// returns. Each one may hold a connection or a hung call; past
// MaxAbandoned the worker stops (Run returns ErrAbandonedLimit) rather
// than grow without bound.
func (w *Worker) abandon(ch <-chan outcome) {
	w.abandoned.Add(1)
	n := w.hung.Add(1)
	go func() {
		<-ch
		w.hung.Add(-1)
	}()
	if limit := w.cfg.MaxAbandoned; limit > 0 && n > int64(limit) {
		w.hungOnce.Do(func() {
			w.log.Error("Too many tasks still running past their hard time limit: stopping the worker so that its supervisor restarts it",
				"running_abandoned", n, "max_abandoned", limit)
			close(w.tooHung)
		})
	}
}

// workerLost settles a task that a cold shutdown interrupted, as Celery
// does for a job whose pool process died (WorkerLostError): with acks_late
// and reject_on_worker_lost the message goes back to the queue and nothing
// is stored; otherwise FAILURE WorkerLostError is stored and a late-ack
// message acked. An early-acked task is lost to the broker either way, so
// it is recorded as FAILURE rather than Celery's "RETRY cancelled by
// Celery", which no retry follows.
func (w *Worker) workerLost(j *job, acksLate, ignore bool, runtime time.Duration) {
	r := j.req
	if acksLate && pick(j.opts.RejectOnWorkerLost, w.cfg.RejectOnWorkerLost) {
		w.log.Warn("Cold shutdown interrupted the task: message requeued (task_reject_on_worker_lost)", "task", r.Name(), "id", r.ID)
		w.reject(j.d, true)
		return
	}
	exc := results.WorkerLostError("Worker exited prematurely: cold shutdown (SIGTERM).")
	w.log.Error("Cold shutdown interrupted the task: stored FAILURE WorkerLostError", "task", r.Name(), "id", r.ID, "acks_late", acksLate)
	fm := w.failureMeta(r, exc, "")
	w.observeFailure(r, exc, fm.Traceback, runtime)
	w.finish(r, fm, !ignore)
	if acksLate {
		w.ack(j.d)
	}
}

func safeCall(ctx context.Context, j *job) (o outcome) {
	defer func() {
		if p := recover(); p != nil {
			o = outcome{err: fmt.Errorf("panic: %v", p), traceback: fmt.Sprintf("Go panic in task %s[%s]: %v\n\n%s", j.req.Task, j.req.ID, p, debug.Stack())}
		}
	}()
	v, err := j.h.ServeTask(ctx, j.req)
	return outcome{value: v, err: err}
}

// backoff is Celery's get_exponential_backoff_interval: min(max,
// factor * 2^retries), with full jitter.
func backoff(o TaskOptions, retries int) time.Duration {
	factor := o.RetryBackoff
	if factor <= 0 {
		factor = time.Second
	}
	maxDelay := o.RetryBackoffMax
	if maxDelay <= 0 {
		maxDelay = 600 * time.Second
	}
	d := maxDelay
	if retries < 32 {
		d = min(maxDelay, factor*time.Duration(1<<retries))
	}
	if o.RetryJitter {
		d = time.Duration(rand.Int64N(int64(d) + 1))
	}
	return d
}

// retry republishes the task as Celery's Task.retry does: same id,
// retries+1, an ETA, parent_id = own id; stores RETRY; settles the
// current message. Past max_retries the task fails instead.
func (w *Worker) retry(j *job, re *RetryError, ignore, acksLate bool) {
	r := j.req
	maxRetries := 3
	if j.opts.MaxRetries != nil {
		maxRetries = *j.opts.MaxRetries
	}
	if re.MaxRetries != nil {
		maxRetries = *re.MaxRetries
	}
	if maxRetries >= 0 && r.Retries+1 > maxRetries {
		var exc *results.Exception
		if re.Err != nil {
			exc = results.ExceptionFrom(re.Err)
		} else {
			exc = results.ExceptionFrom(&MaxRetriesExceededError{Task: r.Task, ID: r.ID, Max: maxRetries})
		}
		w.log.Error("Task retry limit exceeded", "task", r.Name(), "id", r.ID, "retries", r.Retries, "max_retries", maxRetries)
		fm := w.failureMeta(r, exc, "")
		w.observeFailure(r, exc, fm.Traceback, 0)
		w.finish(r, fm, !ignore)
		if acksLate {
			w.ack(j.d)
		}
		return
	}
	eta := re.ETA
	if eta.IsZero() {
		delay := re.Countdown
		if delay == 0 {
			delay = j.opts.DefaultRetryDelay
		}
		if delay == 0 {
			delay = 180 * time.Second
		}
		eta = time.Now().Add(delay).UTC()
	}
	if err := w.republish(j, eta, re); err != nil {
		w.log.Error("Task retry could not be published", "task", r.Name(), "id", r.ID, "err", err)
		if acksLate {
			w.reject(j.d, true) // not lost: the broker redelivers the original
		} else if !ignore {
			w.store(w.failureMeta(r, results.ExceptionFrom(err), ""))
		}
		return
	}
	w.log.Info("Task retry", "task", r.Name(), "id", r.ID, "retries", r.Retries+1, "eta", eta, "reason", re.Err)
	w.observe(TaskRetried, r, func(e *TaskEvent) {
		reason := re.Err
		if reason == nil {
			reason = re
		}
		e.Exception = results.ExceptionFrom(reason)
		e.Traceback = fmt.Sprintf("Retry in %s: %v\n", time.Until(eta).Round(time.Millisecond), reason)
	})
	if !ignore {
		reason := re.Err
		if reason == nil {
			reason = re
		}
		m := w.meta(r, results.Retry, results.ExceptionFrom(reason))
		m.Traceback = fmt.Sprintf("Retry in %s: %v\n", time.Until(eta).Round(time.Millisecond), reason)
		// Celery records the retry message as a child of the task.
		m.Children = []any{[]any{[]any{r.ID, nil}, nil}}
		w.store(m)
	}
	if acksLate {
		w.ack(j.d)
	}
}

func (w *Worker) republish(j *job, eta time.Time, re *RetryError) error {
	m := *j.req.Message
	m.Retries++
	m.ETA = eta
	// As Celery's signature_from_request then send_task: the request's
	// own parent and root are kept, and only when it has none does the
	// running task (itself) become them.
	if m.ParentID == "" {
		m.ParentID = j.req.ID
	}
	if m.RootID == "" {
		m.RootID = j.req.ID
	}
	m.Headers = withoutDeathHeaders(m.Headers)
	if re.Args != nil {
		m.Args, m.ArgsRepr = re.Args, ""
	}
	if re.Kwargs != nil {
		m.Kwargs, m.KwargsRepr = re.Kwargs, ""
	}
	enc := protocol.Encoder{Compression: m.Compression, Protocol: 2}
	if m.ContentType == protocol.ContentTypeMsgpack {
		enc.Serializer = "msgpack"
	}
	raw, err := enc.Encode(&m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Same destination: on the default exchange the routing key is the queue.
	exchange, key := j.d.Exchange, j.d.RoutingKey
	if w.cfg.RetryRoute != nil { // native delayed delivery (quorum queues)
		exchange, key = w.cfg.RetryRoute(j.d, eta)
	}
	return w.broker.Publish(ctx, broker.Publishing{
		Raw: *raw, Exchange: exchange, RoutingKey: key, Mandatory: true,
	})
}

// deathHeaders are RabbitMQ's dead-lettering headers, which Celery strips
// from a retried task (Context._filter_x_death_headers) so that RabbitMQ's
// cycle detection does not drop it.
var deathHeaders = []string{
	"x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
	"x-last-death-exchange", "x-last-death-queue", "x-last-death-reason",
}

func withoutDeathHeaders(h map[string]any) map[string]any {
	var out map[string]any
	for _, k := range deathHeaders {
		if _, ok := h[k]; !ok {
			continue
		}
		if out == nil {
			out = make(map[string]any, len(h))
			for k, v := range h {
				out[k] = v
			}
		}
		delete(out, k)
	}
	if out == nil {
		return h
	}
	return out
}
