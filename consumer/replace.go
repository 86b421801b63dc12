package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// ReplaceError asks the worker to replace the task with a signature, as
// Celery's Task.replace does. Build it with Replace.
type ReplaceError struct {
	Sig protocol.Signature
}

func (e *ReplaceError) Error() string { return "replaced by " + e.Sig.Task }

// Replace returns the error a handler returns to replace its task with sig
// (a task, chain, group or chord), as `return self.replace(sig)` in Celery:
// the replacement inherits the task's id (its last step, or its body, takes
// it), callbacks, errbacks, chord membership, root id and the rest of its
// chain, and carries replaced_task_nesting + 1. The task itself stores no
// result: the replacement's is the one its callers read. A group is
// replaced by a chord whose body is celery.accumulate, so workers must
// have it registered (see Accumulate).
//
//	return nil, consumer.Replace(producer.Chain(producer.Sig("proj.add", 1, 2), producer.Sig("proj.mul", 3)))
func Replace(sig protocol.Signature) error { return &ReplaceError{Sig: sig} }

// AccumulateTask is the name of Celery's built-in accumulate task.
const AccumulateTask = "celery.accumulate"

// Accumulate is Celery's celery.accumulate: it returns its args as a list,
// or args[index] with the index keyword. Register it under AccumulateTask
// on workers whose tasks replace themselves with groups.
func Accumulate(ctx context.Context, r *Request) (any, error) {
	args := r.Args
	if args == nil {
		args = []any{}
	}
	idx, ok := r.Kwargs["index"]
	if !ok || idx == nil {
		return args, nil
	}
	i, ok := idx.(int64)
	if !ok {
		return nil, &ArgumentError{Msg: fmt.Sprintf("list indices must be integers, not %T", idx)}
	}
	if i < 0 {
		i += int64(len(args))
	}
	if i < 0 || i >= int64(len(args)) {
		return nil, &indexError{"tuple index out of range"}
	}
	return args[i], nil
}

type indexError struct{ msg string }

func (e *indexError) Error() string                         { return e.msg }
func (e *indexError) PythonException() (module, typ string) { return "builtins", "IndexError" }

// Replacer sends a replacement for the task of m, as Task.replace builds
// it; *producer.Workflow implements it.
type Replacer interface {
	Replace(ctx context.Context, m *protocol.Message, sig protocol.Signature) error
}

// ErrNoReplacer is stored when a handler replaces itself on a worker whose
// Workflow cannot send replacements.
var ErrNoReplacer = errors.New("consumer: the worker's Workflow cannot replace tasks")

func isReplace(err error) bool {
	var re *ReplaceError
	return errors.As(err, &re)
}

// replaced finishes a task whose handler returned a *ReplaceError: the
// replacement is sent and the task ends as Celery's Ignore ends it (no
// state stored, no callbacks: they moved to the replacement). If the
// replacement cannot be sent the task fails with that error, as the
// exception raised by Task.replace fails it in Celery.
func (w *Worker) replaced(j *job, err error, ignore, acksLate bool) {
	r := j.req
	var re *ReplaceError
	errors.As(err, &re)
	rp, ok := w.cfg.Workflow.(Replacer)
	if !ok {
		err = ErrNoReplacer
	} else {
		ctx, cancel := context.WithTimeout(WithRequest(context.Background(), r), 30*time.Second)
		err = rp.Replace(ctx, r.Message, re.Sig)
		cancel()
	}
	if err == nil {
		w.log.Info("Task replaced", "task", r.Name(), "id", r.ID, "by", re.Sig.Task)
		if acksLate {
			w.ack(j.d)
		}
		return
	}
	w.log.Error(fmt.Sprintf("Task %s[%s] could not be replaced: %v", r.Name(), r.ID, err))
	exc := results.ExceptionFrom(err)
	fm := w.failureMeta(r, exc, "")
	w.observeFailure(r, exc, fm.Traceback, 0)
	w.finish(r, fm, !ignore)
	if acksLate {
		if pick(w.cfg.AcksOnFailure, true) {
			w.ack(j.d)
		} else {
			w.reject(j.d, false)
		}
	}
}
