package amqp

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocelery/gocelery/broker"
)

// MismatchError is a declaration RabbitMQ refused because the queue or
// exchange exists with another value of one argument (PRECONDITION_FAILED,
// "inequivalent arg"): whoever declared first (a Python app, another
// worker) declared it differently, and nothing can consume it until the
// two agree.
type MismatchError struct {
	Kind     string // "queue" or "exchange"
	Name     string
	Arg      string // "x-queue-type", "x-max-priority", "durable", "type", ...
	Declared string // what this process declared, in RabbitMQ's words
	Current  string // what the broker has
	Err      error  // the broker's error
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("amqp: %s %q exists with %s %s, this process declared %s", e.Kind, e.Name, e.Arg, e.Current, e.Declared)
}

func (e *MismatchError) Unwrap() error { return e.Err }

// RabbitMQ's text, as rabbit_misc:assert_args_equivalence and
// assert_field_equivalence write it.
var inequivalentRe = regexp.MustCompile(`inequivalent arg '([^']*)' for (queue|exchange) '((?:[^']|'')*)' in vhost '[^']*': received (.*) but current is (.*)$`)

// mismatchOf recognizes an "inequivalent arg" refusal.
func mismatchOf(err error) *MismatchError {
	e := (*amqp.Error)(nil)
	if !errors.As(err, &e) || e.Code != amqp.PreconditionFailed {
		return nil
	}
	m := inequivalentRe.FindStringSubmatch(e.Reason)
	if m == nil {
		return nil
	}
	return &MismatchError{Kind: m[2], Name: m[3], Arg: m[1], Declared: m[4], Current: m[5], Err: err}
}

func queueError(name string, err error) error {
	if m := mismatchOf(err); m != nil {
		return m
	}
	return fmt.Errorf("amqp: declare queue %q: %w", name, err)
}

// declareBindingsOn declares q as kombu's Queue.declare does for a queue
// with explicit bindings: the first binding's exchange (kombu's
// queue.exchange), the queue, then each binding's exchange and binding in
// order.
func declareBindingsOn(ch *amqp.Channel, q broker.Queue, args amqp.Table) error {
	first := q.Bindings[0].Exchange
	if first.Name != "" {
		if err := declareExchangeOn(ch, first); err != nil {
			return err
		}
	}
	if _, err := ch.QueueDeclare(q.Name, !q.Transient, q.AutoDelete, q.Exclusive, false, args); err != nil {
		return queueError(q.Name, err)
	}
	for i, bd := range q.Bindings {
		if bd.Exchange.Name == "" {
			continue // the default exchange binds every queue by itself
		}
		if i > 0 {
			if err := declareExchangeOn(ch, bd.Exchange); err != nil {
				return err
			}
		}
		var bargs amqp.Table
		if len(bd.Arguments) > 0 {
			t, err := toTable(bd.Arguments)
			if err != nil {
				return fmt.Errorf("amqp: bind queue %q to %q: %w", q.Name, bd.Exchange.Name, err)
			}
			bargs = t
		}
		if err := ch.QueueBind(q.Name, bd.RoutingKey, bd.Exchange.Name, false, bargs); err != nil {
			return fmt.Errorf("amqp: bind queue %q to %q (key %q): %w", q.Name, bd.Exchange.Name, bd.RoutingKey, err)
		}
	}
	return nil
}

// SetupNativeDelayedDelivery does what Celery's worker does at start when
// it finds quorum queues (kombu's
// declare_native_delayed_delivery_exchanges_and_queues, then
// bind_queue_to_native_delayed_delivery_exchange for each queue): it
// declares the 28 level exchanges and queues (queueType "quorum" or
// "classic", broker_native_delayed_delivery_queue_type) and the delivery
// exchange, and binds each queue's exchange to the delivery exchange. A
// queue whose exchange is direct cannot be reached that way: it is
// returned in skipped, for Celery's warning. All of it is durable, so it
// is done once, not after reconnects.
func (b *Broker) SetupNativeDelayedDelivery(ctx context.Context, queueType string, queues []broker.Queue) (skipped []broker.Queue, err error) {
	if queueType != "classic" && queueType != "quorum" {
		return nil, fmt.Errorf("amqp: native delayed delivery: queue type must be classic or quorum, got %q", queueType)
	}
	s, err := b.conn.wait(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("amqp: native delayed delivery: %w", err)
	}
	defer ch.Close()
	key := "1.#"
	for level := broker.DelayedLevels - 1; level >= 0; level-- {
		name := broker.DelayLevelName(level, "")
		if err := declareExchangeOn(ch, broker.Exchange{Name: name, Kind: "topic"}); err != nil {
			return nil, err
		}
		dlx := broker.DelayDeliveryExchangeName("")
		if level > 0 {
			dlx = broker.DelayLevelName(level-1, "")
		}
		args := amqp.Table{
			"x-queue-type":           queueType,
			"x-overflow":             "reject-publish",
			"x-message-ttl":          int64(1<<level) * 1000,
			"x-dead-letter-exchange": dlx,
		}
		if queueType == "quorum" {
			args["x-dead-letter-strategy"] = "at-least-once"
		}
		if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
			return nil, queueError(name, err)
		}
		if err := ch.QueueBind(name, key, name, false, nil); err != nil {
			return nil, fmt.Errorf("amqp: native delayed delivery: bind %q: %w", name, err)
		}
		key = "*." + key
	}
	key = "0.#"
	for level := broker.DelayedLevels - 1; level > 0; level-- {
		// exchange.bind(destination, key, source): level-1 receives the
		// messages whose bit for this level is 0.
		if err := ch.ExchangeBind(broker.DelayLevelName(level-1, ""), key, broker.DelayLevelName(level, ""), false, nil); err != nil {
			return nil, fmt.Errorf("amqp: native delayed delivery: bind level %d: %w", level, err)
		}
		key = "*." + key
	}
	delivery := broker.DelayDeliveryExchangeName("")
	if err := declareExchangeOn(ch, broker.Exchange{Name: delivery, Kind: "topic"}); err != nil {
		return nil, err
	}
	if err := ch.ExchangeBind(delivery, key, broker.DelayLevelName(0, ""), false, nil); err != nil {
		return nil, fmt.Errorf("amqp: native delayed delivery: bind %q: %w", delivery, err)
	}
	for _, q := range queues {
		ex, rk := q.PrimaryExchange()
		if ex.Name == "" {
			continue
		}
		if ex.Kind == "direct" || ex.Kind == "" {
			skipped = append(skipped, q)
			continue
		}
		bk := broker.DelayBindingKey(rk)
		if err := ch.ExchangeBind(ex.Name, bk, delivery, false, nil); err != nil {
			return skipped, fmt.Errorf("amqp: native delayed delivery: bind exchange %q: %w", ex.Name, err)
		}
		if err := ch.QueueBind(q.Name, bk, ex.Name, false, nil); err != nil {
			return skipped, fmt.Errorf("amqp: native delayed delivery: bind queue %q: %w", q.Name, err)
		}
	}
	return skipped, nil
}
