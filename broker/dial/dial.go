// Package dial turns a Celery broker URL into a transport: amqp://,
// amqps:// and pyamqp:// (and a ;-separated failover list of them) open
// broker/amqp, redis://, rediss:// and sentinel:// open broker/redis. It is
// the one place that knows the schemes, so a tool that only needs a broker
// (gocelery inspect, control, beat) links the transports and nothing of
// the worker's program (metrics, events).
package dial

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/broker/amqp"
	"github.com/gocelery/gocelery/broker/redis"
	"github.com/gocelery/gocelery/internal/redisurl"
)

// Transport is what both transports provide: consuming and publishing
// tasks, events and remote control, and health.
type Transport interface {
	Declare(ctx context.Context, qs ...broker.Queue) error
	DeclareExchange(ctx context.Context, ex broker.Exchange) error
	Consume(ctx context.Context, queues []broker.Queue, prefetch int) (<-chan *broker.Delivery, error)
	SetPrefetch(n int) error
	Publish(ctx context.Context, p broker.Publishing) error
	Connected() bool
	Reconnects() int64
	Close() error
}

// Config are the transport settings a URL does not carry.
type Config struct {
	Logger *slog.Logger
	// GlobalQoS applies the prefetch to the whole AMQP channel, as a
	// worker wants on classic queues; StaticPrefetch keeps the first
	// prefetch (Celery's worker on quorum queues: per-consumer QoS,
	// without GlobalQoS, and no raise for ETA tasks).
	GlobalQoS      bool
	StaticPrefetch bool
	// VisibilityTimeout and RestoreInterval are kombu's Redis settings.
	VisibilityTimeout, RestoreInterval time.Duration
	// TransportOptions are broker_transport_options (master_name and
	// sentinel_kwargs for sentinel:// URLs).
	TransportOptions map[string]any
	// FailoverStrategy is broker_failover_strategy for an AMQP URL list:
	// "round-robin" (or "") or "shuffle".
	FailoverStrategy string
}

// Broker connects to the broker a Celery broker URL names: amqp://,
// amqps://, pyamqp://, redis://, rediss://, or Celery's Sentinel list
// sentinel://host:26379;sentinel://host2:26379 (o.TransportOptions must
// name master_name). A ";"-separated list of AMQP URLs is a failover
// list, tried in o.FailoverStrategy's order.
func Broker(ctx context.Context, url string, o Config) (Transport, error) {
	scheme, _, _ := strings.Cut(url, "://")
	var t Transport
	var err error
	switch scheme {
	case "amqp", "amqps", "pyamqp":
		t, err = amqp.Dial(ctx, url, amqp.Config{Logger: o.Logger, GlobalQoS: o.GlobalQoS, StaticPrefetch: o.StaticPrefetch,
			FailoverStrategy: o.FailoverStrategy})
	case "redis", "rediss", "sentinel":
		t, err = redis.Dial(ctx, url, redis.Config{Logger: o.Logger, VisibilityTimeout: o.VisibilityTimeout, RestoreInterval: o.RestoreInterval,
			TransportOptions: o.TransportOptions})
	default:
		return nil, fmt.Errorf("broker: unsupported URL scheme %q (amqp://, pyamqp://, redis://, rediss://, sentinel://)", scheme)
	}
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	return t, nil
}

// TransportOptionsFlag is a repeatable KEY=VALUE flag filling m, as Celery's
// broker_transport_options: VALUE is JSON when it parses as JSON (2.5,
// true, {"password": "x"}), else a plain string.
func TransportOptionsFlag(m map[string]any) flag.Value { return optionsFlag(m) }

type optionsFlag map[string]any

func (f optionsFlag) String() string {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return strings.Join(keys, ",")
}

func (f optionsFlag) Set(kv string) error { return redisurl.ParseOption(f, kv) }
