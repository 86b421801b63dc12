package consumer

import (
	"context"
	"errors"
	"fmt"

	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
	"github.com/google/uuid"
)

// Eager runs tasks in-process without a broker, as Celery's
// task_always_eager does: for tests and local debugging. The message still
// goes through protocol encoding and decoding, so handlers see exactly the
// values a broker would give them. Retries run at once, in a loop.
type Eager struct {
	Mux *Mux
	// Backend, when set, receives the states UpdateState writes.
	Backend Backend
}

// Apply runs the task and returns its result or error. An unregistered
// name fails like Celery's NotRegistered.
func (e *Eager) Apply(ctx context.Context, task string, args []any, kwargs map[string]any) (any, error) {
	h, opts, ok := e.Mux.Lookup(task)
	if !ok {
		return nil, results.NotRegistered(task)
	}
	raw, err := protocol.Encode(&protocol.Message{ID: uuid.NewString(), Task: task, Args: args, Kwargs: kwargs})
	if err != nil {
		return nil, err
	}
	m, err := protocol.Decode(raw)
	if err != nil {
		return nil, err
	}
	maxRetries := 3
	if opts.MaxRetries != nil {
		maxRetries = *opts.MaxRetries
	}
	for {
		r := &Request{Message: m, Hostname: "eager", state: e}
		j := &job{req: r, h: h, opts: opts}
		o := safeCall(WithRequest(ctx, r), j)
		var re *RetryError
		switch {
		case o.err == nil:
			return o.value, nil
		case errors.Is(o.err, ErrIgnore):
			return nil, nil
		case errors.As(o.err, &re):
		case opts.AutoRetryFor != nil && opts.AutoRetryFor(o.err):
			re = &RetryError{Err: o.err}
		default:
			return nil, o.err
		}
		limit := maxRetries
		if re.MaxRetries != nil {
			limit = *re.MaxRetries
		}
		if limit >= 0 && m.Retries+1 > limit {
			if re.Err != nil {
				return nil, re.Err
			}
			return nil, &MaxRetriesExceededError{Task: task, ID: m.ID, Max: limit}
		}
		next := *m
		next.Retries++
		next.ParentID = m.ID
		if re.Args != nil {
			next.Args = re.Args
		}
		if re.Kwargs != nil {
			next.Kwargs = re.Kwargs
		}
		m = &next
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("consumer: eager retry: %w", err)
		}
	}
}

func (e *Eager) updateState(ctx context.Context, r *Request, state string, meta any) error {
	if e.Backend == nil {
		return nil
	}
	return e.Backend.Store(ctx, &results.Meta{TaskID: r.ID, Status: state, Result: meta})
}
