package producer

import (
	"time"

	"github.com/gocelery/gocelery/broker"
)

// queueNamed returns the declaration of a queue of Config.Queues.
func (p *Producer) queueNamed(name string) (broker.Queue, bool) {
	for _, q := range p.cfg.Queues {
		if q.Name == name {
			return q, true
		}
	}
	return broker.Queue{}, false
}

// exchangeKind is the type of a named exchange among Config.Queues'
// bindings ("" when unknown).
func (p *Producer) exchangeKind(name string) string {
	for _, q := range p.cfg.Queues {
		if len(q.Bindings) == 0 && q.ExchangeName() == name {
			return q.Kind()
		}
		for _, b := range q.Bindings {
			if b.Exchange.Name == name {
				return b.Exchange.Kind
			}
		}
	}
	return ""
}

// nativeDelay routes a task with an ETA as Celery >= 5.5's send_task does
// when its queues include a quorum queue: a countdown of at least a second
// to a queue (or exchange) whose exchange is not direct goes to
// celery_delayed_27 with the countdown spelt in the routing key, so that
// RabbitMQ holds it, not the worker. Anything else keeps its destination
// (and its ETA header, which the worker honours).
func (p *Producer) nativeDelay(exchange, key string, eta time.Time) (string, string) {
	if !p.quorum || eta.IsZero() {
		return exchange, key
	}
	countdown := time.Until(eta)
	if countdown < time.Second {
		// Below a second the worker's own ETA wait is as good; Celery's
		// send_task fails there (kombu refuses int(countdown) == 0).
		return exchange, key
	}
	countdown = broker.RoundDelay(countdown)
	rk := key
	if exchange == "" {
		q, ok := p.queueNamed(key)
		if !ok {
			return exchange, key
		}
		var ex broker.Exchange
		ex, rk = q.PrimaryExchange()
		if ex.Kind == "direct" || ex.Name == "" {
			return exchange, key
		}
	} else if k := p.exchangeKind(exchange); k == "" || k == "direct" {
		return exchange, key
	}
	dk, err := broker.DelayedRoutingKey(countdown, rk)
	if err != nil {
		return exchange, key
	}
	return broker.DelayedEntryExchange, dk
}
