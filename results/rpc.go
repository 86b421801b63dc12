package results

import (
	"context"
	"fmt"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
)

// Publisher sends a message on the broker; broker/amqp and broker/redis
// provide it.
type Publisher interface {
	Publish(ctx context.Context, p broker.Publishing) error
}

// RPCConfig mirror the Celery settings of the rpc:// backend that change
// what a worker publishes.
type RPCConfig struct {
	// Persistent is result_persistent: states are published with
	// delivery_mode 2, so a durable reply queue keeps them across a
	// broker restart. Celery's default is false (delivery_mode 1).
	Persistent bool
}

// RPC is the worker side of Celery's rpc:// result backend (RPCBackend):
// instead of storing a state, Store publishes it as a message to the
// queue the task message named in reply_to, on the default exchange, with
// the task id as correlation_id. The body is the same meta the Redis
// backend stores, so Python's AsyncResult.get() and .state read it as if a
// Python worker had sent it. Nothing is kept anywhere else: a state sent
// while its client is gone is lost, as with Celery.
//
// The client side, which declares the reply queue and reads the states,
// is [ReplyQueue]. RPC is safe for concurrent use.
type RPC struct {
	pub  Publisher
	mode int
}

// NewRPC returns an rpc:// backend publishing on pub, usually the worker's
// own broker connection (Celery publishes results from its producer pool).
func NewRPC(pub Publisher, opts RPCConfig) *RPC {
	mode := 1
	if opts.Persistent {
		mode = 2
	}
	return &RPC{pub: pub, mode: mode}
}

// Store publishes m to m.ReplyTo, as RPCBackend.store_result does. A Meta
// without ReplyTo (a task sent with no reply_to, or a REVOKED written by
// the revoke command outside any request) has nowhere to go and is
// dropped, as Celery does. For ready states a zero m.DateDone is set to
// now, in UTC, on m itself. The publish is not mandatory: a reply queue
// whose client went away swallows the state without an error, as
// RabbitMQ's default exchange does for Celery.
func (r *RPC) Store(ctx context.Context, m *Meta) error {
	if m == nil || m.TaskID == "" || m.Status == "" {
		return fmt.Errorf("%w: task id and status are required", ErrInvalidMeta)
	}
	if m.ReplyTo == "" {
		return nil
	}
	if m.DateDone.IsZero() && IsReady(m.Status) {
		m.DateDone = time.Now().UTC()
	}
	body, err := m.Encode()
	if err != nil {
		return err
	}
	correlationID := m.CorrelationID
	if correlationID == "" {
		correlationID = m.TaskID
	}
	p := broker.Publishing{
		Raw: protocol.Raw{
			ContentType:     protocol.ContentTypeJSON,
			ContentEncoding: "utf-8",
			Headers:         map[string]any{},
			Properties:      protocol.Properties{CorrelationID: correlationID, DeliveryMode: r.mode},
			Body:            body,
		},
		RoutingKey: m.ReplyTo,
	}
	if err := r.pub.Publish(ctx, p); err != nil {
		return fmt.Errorf("results: sending state of task %q to reply queue %q: %w", m.TaskID, m.ReplyTo, err)
	}
	return nil
}
