package broker

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// Native delayed delivery is how Celery >= 5.5 (kombu's
// native_delayed_delivery) delays countdown and ETA tasks on RabbitMQ
// when it uses quorum queues: 28 levels of queues whose message TTL is
// 2^level seconds dead-letter into each other, and the routing key spells
// the countdown in binary, one bit per level, before the real key. A
// message published to DelayedEntryExchange reaches the delivery exchange
// after its countdown, and the delivery exchange forwards it to the
// queue's own exchange.
const (
	// DelayedLevels is kombu's MAX_NUMBER_OF_BITS_TO_USE: countdowns up
	// to 2^28-1 seconds (about 8.5 years).
	DelayedLevels = 28
	// DelayedEntryExchange is where a delayed task is published, as
	// Celery's send_task does (it never uses a prefix there).
	DelayedEntryExchange = "celery_delayed_27"
	// DelayedDeliveryExchange receives the messages whose delay ran out.
	DelayedDeliveryExchange = "celery_delayed_delivery"
)

// ErrDelayOutOfRange is returned by DelayedRoutingKey for a countdown
// below one second or from 2^28 seconds on.
var ErrDelayOutOfRange = errors.New("broker: native delayed delivery needs a countdown of 1 s to 2^28-1 s")

// DelayLevelName is kombu's level_name: "celery_delayed_<level>", with
// "<prefix>_" before it when prefix is set.
func DelayLevelName(level int, prefix string) string {
	if prefix != "" {
		return prefix + "_celery_delayed_" + strconv.Itoa(level)
	}
	return "celery_delayed_" + strconv.Itoa(level)
}

// DelayDeliveryExchangeName is the delivery exchange for prefix.
func DelayDeliveryExchangeName(prefix string) string {
	if prefix != "" {
		return prefix + "_" + DelayedDeliveryExchange
	}
	return DelayedDeliveryExchange
}

// DelayedRoutingKey is kombu's calculate_routing_key: the countdown in
// whole seconds (truncated, as Celery's int(countdown); see RoundDelay)
// as 28 binary
// digits separated by dots, then routingKey. A delay prefix already on
// routingKey (a retried task carries its last delivery's key) is removed
// first, as kombu does.
func DelayedRoutingKey(countdown time.Duration, routingKey string) (string, error) {
	secs := int64(countdown / time.Second)
	if secs < 1 || secs >= 1<<DelayedLevels {
		return "", ErrDelayOutOfRange
	}
	if routingKey == "" {
		return "", errors.New("broker: native delayed delivery needs a non-empty routing key")
	}
	routingKey = StripDelay(routingKey)
	var b strings.Builder
	b.Grow(2*DelayedLevels + len(routingKey))
	for bit := DelayedLevels - 1; bit >= 0; bit-- {
		b.WriteByte('0' + byte(secs>>bit&1))
		b.WriteByte('.')
	}
	b.WriteString(routingKey)
	return b.String(), nil
}

// RoundDelay rounds the time left until an ETA to whole seconds: computed
// from a clock, a countdown of 2 s is 1.999 s when it is published, which
// DelayedRoutingKey would truncate to 1 s. The message keeps its ETA, so
// a worker that gets it up to half a second early still waits for it.
func RoundDelay(d time.Duration) time.Duration { return d.Round(time.Second) }

// StripDelay removes a native delayed delivery prefix (28 "0." or "1.")
// from a routing key, giving the key the task was sent with.
func StripDelay(routingKey string) string {
	if len(routingKey) < 2*DelayedLevels {
		return routingKey
	}
	for i := 0; i < 2*DelayedLevels; i += 2 {
		if c := routingKey[i]; (c != '0' && c != '1') || routingKey[i+1] != '.' {
			return routingKey
		}
	}
	return routingKey[2*DelayedLevels:]
}

// DelayBindingKey is the key kombu binds a queue's exchange (and the queue
// to it) with on the delivery exchange: "#.<key>", or the key itself when
// it starts with "#".
func DelayBindingKey(routingKey string) string {
	if strings.HasPrefix(routingKey, "#") {
		return routingKey
	}
	return "#." + routingKey
}

// IsQuorum reports whether q is declared as a quorum queue (Quorum, or
// x-queue-type: quorum among its arguments), as Celery's
// detect_quorum_queues looks for.
func (q Queue) IsQuorum() bool {
	if q.Quorum {
		return true
	}
	s, _ := q.Arguments["x-queue-type"].(string)
	return s == "quorum"
}

// PrimaryExchange is the exchange kombu's native delayed delivery uses for
// q: the first binding when Bindings is set (kombu's Queue.exchange, which
// Celery sets on every queue of task_queues), else Exchange and Kind().
func (q Queue) PrimaryExchange() (ex Exchange, key string) {
	if len(q.Bindings) > 0 {
		return q.Bindings[0].Exchange, q.Bindings[0].RoutingKey
	}
	return Exchange{Name: q.ExchangeName(), Kind: q.Kind(), Transient: q.Transient}, q.Key()
}
