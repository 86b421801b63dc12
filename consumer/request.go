package consumer

import (
	"context"
	"errors"
	"time"

	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// Request is the task request a handler serves: the decoded message plus
// where it came from. It corresponds to Celery's task.request.
type Request struct {
	*protocol.Message
	// Queue is the queue the message was consumed from; Exchange and
	// RoutingKey are its delivery info.
	Queue       string
	Exchange    string
	RoutingKey  string
	Redelivered bool
	// Hostname is the worker's node name ("gocelery@host").
	Hostname string

	state    stateWriter
	received time.Time // when the worker took the message
}

// stateWriter stores custom states for UpdateState; the worker provides it.
type stateWriter interface {
	updateState(ctx context.Context, r *Request, state string, meta any) error
}

// UpdateState stores a custom state (for example "PROGRESS") with meta as
// its result, as Celery's Task.update_state does; Python's AsyncResult
// sees it as .state and .info.
func (r *Request) UpdateState(ctx context.Context, state string, meta any) error {
	if r.state == nil {
		return errors.New("consumer: UpdateState: request has no result backend")
	}
	return r.state.updateState(ctx, r, state, meta)
}

// WithBackend returns a copy of r whose UpdateState stores into b: for
// running a handler outside a worker (tests, see package consumertest).
func (r *Request) WithBackend(b Backend) *Request {
	c := *r
	c.state = backendState{b}
	return &c
}

// backendState stores UpdateState's states in a Backend, as the worker does.
type backendState struct{ b Backend }

func (s backendState) updateState(ctx context.Context, r *Request, state string, meta any) error {
	return s.b.Store(ctx, &results.Meta{TaskID: r.ID, Status: state, Result: meta, GroupID: r.Group, ParentID: r.ParentID})
}

// DeliveryInfo returns Celery's request.delivery_info.
func (r *Request) DeliveryInfo() map[string]any {
	return map[string]any{
		"exchange": r.Exchange, "routing_key": r.RoutingKey,
		"priority": int64(r.Properties.Priority), "redelivered": r.Redelivered,
	}
}

type requestKey struct{}

// WithRequest returns ctx carrying r; the worker does this for handlers, so
// code deep in a task can find its request.
func WithRequest(ctx context.Context, r *Request) context.Context {
	return context.WithValue(protocol.WithMessage(ctx, r.Message), requestKey{}, r)
}

// RequestFrom returns the request carried by ctx, or nil.
func RequestFrom(ctx context.Context) *Request {
	r, _ := ctx.Value(requestKey{}).(*Request)
	return r
}
