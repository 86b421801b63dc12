package amqp

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
)

// PublishAsync keeps many publishes in flight from one goroutine; each
// wait reports its own confirm. Publishes written but unconfirmed when the
// connection drops (a proxy holds them, then cuts the connection) are sent
// again by their wait on the next connection: every message reaches the
// queue, none twice.
func TestPublishAsyncConfirmsAndResendsAfterADrop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, proxy, a, msg := proxied(t, ctx, "async")
	q := msg("").RoutingKey
	send := func(prefix string, n int) []func(context.Context) error {
		waits := make([]func(context.Context) error, n)
		for i := range n {
			w, err := b.PublishAsync(ctx, msg(fmt.Sprintf("%s-%d", prefix, i)))
			if err != nil {
				t.Fatalf("PublishAsync %s-%d: %v", prefix, i, err)
			}
			waits[i] = w
		}
		return waits
	}
	for i, w := range send("a", 300) {
		if err := w(ctx); err != nil {
			t.Fatalf("wait a-%d: %v", i, err)
		}
	}

	proxy.hold(true)
	held := send("b", 50)
	proxy.drop()
	proxy.hold(false)
	for i, w := range held {
		if err := w(ctx); err != nil {
			t.Fatalf("wait b-%d after the drop: %v", i, err)
		}
	}

	// Unroutable mandatory messages are reported by their wait.
	w, err := b.PublishAsync(ctx, broker.Publishing{RoutingKey: unique("nobody"), Mandatory: true,
		Raw: protocol.Raw{ContentType: "application/json", Body: []byte(`[]`)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w(ctx); !errors.Is(err, broker.ErrUnroutable) {
		t.Fatalf("wait of an unroutable mandatory publish: %v, want broker.ErrUnroutable", err)
	}

	seen := map[string]int{}
	for {
		d, ok, err := a.channel().Get(q, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		seen[d.CorrelationId]++
	}
	lost, twice := 0, 0
	for _, p := range []struct {
		prefix string
		n      int
	}{{"a", 300}, {"b", 50}} {
		for i := range p.n {
			switch seen[fmt.Sprintf("%s-%d", p.prefix, i)] {
			case 0:
				lost++
			case 1:
			default:
				twice++
			}
		}
	}
	t.Logf("350 async publishes, 50 of them cut off by a connection drop: %d lost, %d twice, %d reconnects", lost, twice, b.Reconnects())
	if lost != 0 || twice != 0 || len(seen) != 350 {
		t.Errorf("lost %d, twice %d, distinct %d: want 0, 0, 350", lost, twice, len(seen))
	}
	if b.Reconnects() == 0 {
		t.Error("the drop did not make the broker reconnect: the test did not cut the connection")
	}
}
