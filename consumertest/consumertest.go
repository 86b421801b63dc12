// Package consumertest provides utilities for testing Go task handlers and
// workers, in the spirit of net/http/httptest: an in-memory broker and
// result backend, a request builder, and a recorder of what a handler did.
//
// A handler is tested in three lines:
//
//	rec := consumertest.Serve(ctx, handler, consumertest.NewRequest("proj.add", 2, 3))
//	if rec.Err != nil || rec.Result != int64(5) { ... }
//
// and a whole worker (acks, retries, ETA, states) with StartWorker. The
// fakes are for unit tests only: the interop suites run the worker against
// real RabbitMQ, Redis and Python Celery.
package consumertest

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// NewRequest returns a request for task with positional args, as a
// worker would hand it to a handler: the message goes through protocol
// encoding and decoding, so the handler sees the types a real message
// gives (int64, float64, []any, map[string]any).
func NewRequest(task string, args ...any) *consumer.Request {
	return RequestFor(&protocol.Message{Task: task, Args: args})
}

// RequestFor returns the request for m (kwargs, headers, retries, eta and
// the rest set as the test wants), encoded and decoded as NewRequest does.
// An empty ID gets a fresh one. It panics if m cannot be encoded: a test
// that builds an impossible message is wrong.
func RequestFor(m *protocol.Message) *consumer.Request {
	c := *m
	if c.ID == "" {
		c.ID = uuid.NewString()
	}
	raw, err := protocol.Encode(&c)
	if err != nil {
		panic("consumertest: encoding the request: " + err.Error())
	}
	dec, err := protocol.Decode(raw)
	if err != nil {
		panic("consumertest: decoding the request: " + err.Error())
	}
	return &consumer.Request{Message: dec, Queue: "celery", RoutingKey: "celery", Hostname: "consumertest@localhost"}
}

// Recorder is what one handler call did: its result or error, and the
// states it stored with UpdateState, in order.
type Recorder struct {
	Result any
	Err    error
	// States holds each UpdateState call's meta (Status, Result).
	States []*results.Meta

	mu sync.Mutex
}

// Store records an UpdateState call; it makes Recorder a consumer.Backend.
func (rec *Recorder) Store(_ context.Context, m *results.Meta) error {
	rec.mu.Lock()
	rec.States = append(rec.States, m)
	rec.mu.Unlock()
	return nil
}

// Serve calls h for r as the worker does (the request in the context,
// UpdateState recorded) and returns what happened. A panic is recovered
// into Err, as the worker stores it as FAILURE. Time limits, retries and
// acks are the worker's: use StartWorker to test those.
func Serve(ctx context.Context, h consumer.Handler, r *consumer.Request) (rec *Recorder) {
	rec = &Recorder{}
	r = r.WithBackend(rec)
	defer func() {
		if p := recover(); p != nil {
			rec.Err = &PanicError{Value: p}
		}
	}()
	rec.Result, rec.Err = h.ServeTask(consumer.WithRequest(ctx, r), r)
	return rec
}

// PanicError is a handler panic that Serve recovered.
type PanicError struct{ Value any }

func (e *PanicError) Error() string { return "consumertest: handler panicked" }

// Backend is an in-memory result backend that records every state the
// worker stores; it implements consumer.Backend.
type Backend struct {
	mu     sync.Mutex
	metas  []*results.Meta
	stored chan *results.Meta
}

// NewBackend returns an empty Backend.
func NewBackend() *Backend { return &Backend{stored: make(chan *results.Meta, 10000)} }

// Store records m.
func (b *Backend) Store(_ context.Context, m *results.Meta) error {
	b.mu.Lock()
	b.metas = append(b.metas, m)
	b.mu.Unlock()
	select {
	case b.stored <- m:
	default: // a test that stores more than it waits for
	}
	return nil
}

// Get returns the last state stored for taskID, or PENDING, as a result
// backend reads it.
func (b *Backend) Get(_ context.Context, taskID string) (*results.Meta, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := len(b.metas) - 1; i >= 0; i-- {
		if b.metas[i].TaskID == taskID {
			return b.metas[i], nil
		}
	}
	return &results.Meta{TaskID: taskID, Status: results.Pending}, nil
}

// Metas returns every state stored so far, in order.
func (b *Backend) Metas() []*results.Meta {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*results.Meta(nil), b.metas...)
}

// States returns the statuses stored for id, in order.
func (b *Backend) States(id string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.metas {
		if m.TaskID == id {
			out = append(out, m.Status)
		}
	}
	return out
}

// Wait waits up to five seconds for the next stored state of id with
// status and returns it; it fails the test on time-out.
func (b *Backend) Wait(t TB, id, status string) *results.Meta {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case m := <-b.stored:
			if m.TaskID == id && m.Status == status {
				return m
			}
		case <-timeout:
			t.Fatalf("consumertest: timed out waiting for %s %s (stored: %v)", id, status, b.States(id))
			return nil
		}
	}
}

// WaitAny waits up to five seconds until some state stored for id has
// status, whether or not an earlier Wait consumed it.
func (b *Backend) WaitAny(t TB, id, status string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, s := range b.States(id) {
			if s == status {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumertest: timed out waiting for %s %s (stored: %v)", id, status, b.States(id))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TB is the part of testing.TB the kit uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Cleanup(func())
}
