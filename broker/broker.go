// Package broker defines what travels between a message broker and the
// worker or producer: deliveries, publishings and queue declarations.
// Transports live in subpackages (broker/amqp, broker/redis); the packages
// that use a transport define the small interface they need.
package broker

import (
	"errors"

	"github.com/gocelery/gocelery/protocol"
)

// ErrClosed is returned by operations on a transport after Close.
var ErrClosed = errors.New("broker: closed")

// ErrUnroutable is returned by Publish when a mandatory message reached no
// queue: nothing is silently lost.
var ErrUnroutable = errors.New("broker: message unroutable")

// ErrStaleDelivery is returned by Ack or Reject on a delivery whose
// channel or connection has gone; the broker redelivers it.
var ErrStaleDelivery = errors.New("broker: delivery belongs to a closed channel")

// Queue declares a queue as Celery's kombu.Queue does. The zero values give
// Celery's defaults: a durable queue bound to a direct exchange of the same
// name with the queue name as routing key.
//
// Celery's remote-control and event queues, as a Go node declares them:
//
//	// <node>.celery.pidbox: receives every broadcast (fanout, key "")
//	Queue{Name: node + ".celery.pidbox", Exchange: "celery.pidbox", ExchangeType: "fanout",
//		Transient: true, AutoDelete: true, Exclusive: true,
//		Arguments: map[string]any{"x-expires": 10000, "x-message-ttl": 300000}}
//	// <oid>.reply.celery.pidbox: a control client's replies
//	Queue{Name: oid + ".reply.celery.pidbox", Exchange: "reply.celery.pidbox", RoutingKey: oid,
//		Transient: true, AutoDelete: true, Exclusive: true, Arguments: ...}
//	// celeryev.<uuid>: an event monitor; topic on AMQP, fanout on Redis
//	Queue{Name: "celeryev." + id, Exchange: "celeryev", ExchangeType: "topic", RoutingKey: "#",
//		Transient: true, AutoDelete: true, Exclusive: true,
//		Arguments: map[string]any{"x-expires": 60000, "x-message-ttl": 5000}}
//
// When the exchange's durability differs from the queue's (celeryev is a
// durable exchange with transient queues), declare the exchange first with
// the transport's DeclareExchange: a queue's declaration then uses the
// exchange as declared instead of deriving it from Transient.
type Queue struct {
	Name         string
	Exchange     string // "" means Name
	ExchangeType string // "direct" (default), "topic", "fanout"
	RoutingKey   string // "" means Name
	// Transient declares a non-durable queue and exchange.
	Transient  bool
	AutoDelete bool
	// Exclusive declares a queue only this connection may use, deleted
	// when it closes (AMQP; the transport declares it again after a
	// reconnect); pidbox and event queues are exclusive. Redis ignores
	// it, as kombu does.
	Exclusive bool
	// MaxPriority sets x-max-priority (RabbitMQ priorities, 0 = none).
	MaxPriority int
	// Quorum sets x-queue-type: quorum.
	Quorum bool
	// Arguments are extra x-arguments, passed as they are.
	Arguments map[string]any
	// Bindings, when set, are the queue's bindings exactly as kombu makes
	// them, in this order, instead of the one binding Exchange and Key()
	// imply: a key is taken verbatim (even ""), each exchange is declared
	// as given. A kombu.Queue with an exchange and bindings= has both. On
	// Redis each is a member of its exchange's binding set, as kombu's
	// queue_bind writes it; only direct and topic ones besides the
	// queue's own exchange.
	Bindings []Binding
}

// Binding binds a queue to an exchange with a routing key and arguments
// (kombu's binding, or a Queue's exchange, routing_key and
// binding_arguments).
type Binding struct {
	Exchange   Exchange
	RoutingKey string
	Arguments  map[string]any
}

// ExchangeName returns the exchange, defaulting to the queue name.
func (q Queue) ExchangeName() string {
	if q.Exchange == "" {
		return q.Name
	}
	return q.Exchange
}

// Key returns the binding routing key, defaulting to the queue name for
// direct and topic exchanges. A fanout queue keeps an empty key, as a bare
// kombu.Queue has: AMQP ignores it, but on Redis the key is part of the
// PUB/SUB channel ("/{db}.<exchange>" for "", "/{db}.<exchange>/<key>"
// otherwise), and Celery's pidbox queues are bound with "".
func (q Queue) Key() string {
	if q.RoutingKey == "" && q.Kind() != "fanout" {
		return q.Name
	}
	return q.RoutingKey
}

// Kind returns the exchange type, defaulting to "direct".
func (q Queue) Kind() string {
	if q.ExchangeType == "" {
		return "direct"
	}
	return q.ExchangeType
}

// Exchange declares an exchange on its own, as kombu's Exchange.declare
// does before publishing to it (events, remote control). Celery's, as
// Celery 5.7 declares them (declaring differently on RabbitMQ fails with
// PRECONDITION_FAILED when Celery declared first):
//
//	Exchange{Name: "celery.pidbox", Kind: "fanout", Transient: true}       // both transports
//	Exchange{Name: "reply.celery.pidbox", Kind: "direct", Transient: true} // both transports
//	Exchange{Name: "celeryev", Kind: "topic"}  // RabbitMQ: durable topic
//	Exchange{Name: "celeryev", Kind: "fanout"} // Redis: Celery makes it fanout there
type Exchange struct {
	Name string
	// Kind is "direct", "topic" or "fanout". On Redis a fanout exchange
	// is PUB/SUB: publishing to it is PUBLISH, as kombu does.
	Kind       string
	Transient  bool // not durable
	AutoDelete bool
}

// Acknowledger settles a delivery with the transport it came from.
type Acknowledger interface {
	Ack(d *Delivery) error
	Reject(d *Delivery, requeue bool) error
}

// Delivery is one message received from a queue.
type Delivery struct {
	protocol.Raw
	Queue       string // the queue it was consumed from
	Exchange    string
	RoutingKey  string
	Redelivered bool
	// Tag identifies the delivery to its transport (AMQP delivery tag,
	// kombu's delivery_tag UUID on Redis).
	Tag string
	// Acker settles the delivery; set by the transport.
	Acker Acknowledger
	// Transport-specific state (the AMQP channel generation, the Redis
	// envelope) lives behind Acker.
	Private any
}

// staleReporter is implemented by transports that can tell that a
// delivery is no longer this process's to run.
type staleReporter interface {
	Stale(d *Delivery) bool
}

// Stale reports whether the broker has already given the message back to
// its queue (the AMQP channel it came on is gone, or on Redis another
// consumer restored it): running it now would run it twice, because the
// broker redelivers it. Celery drops such requests on connection loss.
func (d *Delivery) Stale() bool {
	s, ok := d.Acker.(staleReporter)
	return ok && s.Stale(d)
}

// Ack acknowledges the delivery: the broker forgets the message.
func (d *Delivery) Ack() error { return d.Acker.Ack(d) }

// deferredAcker is implemented by transports that can coalesce acks.
type deferredAcker interface {
	AckDeferred(d *Delivery) error
}

// AckDeferred acknowledges the delivery, but lets the transport hold the
// ack for a moment (at most a millisecond or two, and never past Close)
// to send it with others in one frame. It suits an early ack, sent as a
// task starts: Celery's prefork worker also acks then asynchronously,
// once the child reports the task started. Transports without the
// capability ack at once, as Ack.
func (d *Delivery) AckDeferred() error {
	if a, ok := d.Acker.(deferredAcker); ok {
		return a.AckDeferred(d)
	}
	return d.Acker.Ack(d)
}

// Reject gives the message back to the broker (requeue) or drops it (to
// the queue's dead-letter exchange, when it has one).
func (d *Delivery) Reject(requeue bool) error { return d.Acker.Reject(d, requeue) }

// Publishing is a message to send.
type Publishing struct {
	protocol.Raw
	Exchange   string // "" is the default exchange: RoutingKey names the queue
	RoutingKey string
	// Mandatory makes an unroutable message an ErrUnroutable error
	// instead of a silent drop.
	Mandatory bool
}
