package amqp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Failover strategies for a broker URL list (Celery's
// broker_failover_strategy).
const (
	RoundRobin = "round-robin"
	Shuffle    = "shuffle"
)

// parseURLs reads Celery's broker URL list, "amqp://h1//;amqp://h2//":
// the alternates of one broker (the nodes of a cluster), as kombu's
// Connection takes them. A single URL is a list of one.
func parseURLs(raw string) ([]target, error) {
	var ts []target
	for _, part := range strings.Split(raw, ";") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		t, err := parseURL(part)
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("%w: empty URL", ErrURL)
	}
	return ts, nil
}

// failover picks the node each dial tries first. kombu cycles through
// its alternates on every connection error; here a dial tries every node
// once, starting with the one after the node of the last connection (a
// reconnect means that node failed), and remembers which one answered.
type failover struct {
	mu      sync.Mutex
	targets []target
	next    int
}

func newFailover(ts []target, strategy string) (*failover, error) {
	ts = append([]target(nil), ts...)
	switch strategy {
	case "", RoundRobin:
	case Shuffle:
		rand.Shuffle(len(ts), func(i, j int) { ts[i], ts[j] = ts[j], ts[i] })
	default:
		return nil, fmt.Errorf("%w: broker_failover_strategy %q (want %s or %s)", ErrURL, strategy, RoundRobin, Shuffle)
	}
	return &failover{targets: ts}, nil
}

// order returns the targets in the order this dial tries them.
func (f *failover) order() []target {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]target, 0, len(f.targets))
	for i := range f.targets {
		out = append(out, f.targets[(f.next+i)%len(f.targets)])
	}
	return out
}

// connected records that t answered: the next dial starts after it.
func (f *failover) connected(t target) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, x := range f.targets {
		if x.dialURL == t.dialURL {
			f.next = (i + 1) % len(f.targets)
			return
		}
	}
}

// dial connects to the first node of the list that answers.
func (b *Broker) dial(ctx context.Context) (*amqp.Connection, error) {
	var errs []error
	for _, t := range b.failover.order() {
		conn, err := b.dialTarget(ctx, t)
		if err == nil {
			if len(b.failover.targets) > 1 {
				b.logger.Info("amqp: connected", "node", t.redacted)
			}
			b.failover.connected(t)
			return conn, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", t.redacted, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// RemoteAddr is the address of the node the Broker is connected to now,
// nil while it is disconnected: with a URL list, which node that is.
func (b *Broker) RemoteAddr() net.Addr {
	s := b.conn.current()
	if s == nil {
		return nil
	}
	return s.conn.RemoteAddr()
}
