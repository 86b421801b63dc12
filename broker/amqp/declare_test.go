package amqp

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
)

// TestBindingsAndDelayedDelivery: a quorum queue with kombu-style
// bindings is declared and routed through each binding; native delayed
// delivery is set up twice without error (RabbitMQ accepts the same
// declarations again), skips a direct exchange, and a message published to
// celery_delayed_27 with a 1 s key reaches the queue after a second.
func TestBindingsAndDelayedDelivery(t *testing.T) {
	b := dial(t, Config{StaticPrefetch: true})
	a := newAdmin(t)
	q, ex, direct := unique("bind-q"), unique("bind-ex"), unique("bind-direct")
	a.cleanup([]string{q, direct}, []string{ex, direct})
	quorum := broker.Queue{Name: q, Arguments: map[string]any{"x-queue-type": "quorum"}, Bindings: []broker.Binding{
		{Exchange: broker.Exchange{Name: ex, Kind: "topic"}, RoutingKey: "a.*"},
		{Exchange: broker.Exchange{Name: ex, Kind: "topic"}, RoutingKey: "b.#"},
	}}
	plain := broker.Queue{Name: direct}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Declare(ctx, quorum, plain); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		skipped, err := b.SetupNativeDelayedDelivery(ctx, "quorum", []broker.Queue{quorum, plain})
		if err != nil {
			t.Fatal(err)
		}
		if len(skipped) != 1 || skipped[0].Name != direct {
			t.Fatalf("skipped %v, want the direct queue", skipped)
		}
	}
	deliveries := consume(t, b, 4, quorum)
	for _, key := range []string{"a.x", "b.y.z"} {
		p := text(key, "bound")
		p.Exchange = ex
		publish(t, b, p)
		if d := recv(t, deliveries); d.RoutingKey != key {
			t.Errorf("got key %q, want %q", d.RoutingKey, key)
		} else if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	key, err := broker.DelayedRoutingKey(time.Second, "a.delayed")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p := text(key, "delayed")
	p.Exchange = broker.DelayedEntryExchange
	publish(t, b, p)
	d := recv(t, deliveries)
	if waited := time.Since(start); waited < 900*time.Millisecond {
		t.Errorf("delayed message arrived after %s, want about 1 s", waited)
	}
	if broker.StripDelay(d.RoutingKey) != "a.delayed" {
		t.Errorf("delayed delivery key %q", d.RoutingKey)
	}
	_ = d.Ack()
	// Static prefetch: a raise after the first Consume changes nothing.
	if err := b.SetPrefetch(40); err != nil {
		t.Fatal(err)
	}
	b.qosMu.Lock()
	got := b.prefetch
	b.qosMu.Unlock()
	if got != 4 {
		t.Errorf("prefetch %d after SetPrefetch(40), want the static 4", got)
	}
}

// TestMismatchError: RabbitMQ's refusal of an inequivalent argument comes
// back as a *MismatchError naming the queue, argument and both values.
func TestMismatchError(t *testing.T) {
	b := dial(t, Config{})
	a := newAdmin(t)
	q := unique("mismatch")
	a.cleanup([]string{q}, []string{q})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Declare(ctx, broker.Queue{Name: q, Exchange: ""}); err != nil {
		t.Fatal(err)
	}
	err := b.Declare(ctx, broker.Queue{Name: q, Quorum: true})
	m := (*MismatchError)(nil)
	if !errors.As(err, &m) {
		t.Fatalf("Declare: %v, want a *MismatchError", err)
	}
	if m.Kind != "queue" || m.Name != q || m.Arg != "x-queue-type" || m.Current != "none" ||
		m.Declared != "the value 'quorum' of type 'longstr'" {
		t.Errorf("MismatchError %+v", m)
	}
}
