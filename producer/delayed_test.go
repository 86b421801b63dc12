package producer

import (
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
)

func TestNativeDelay(t *testing.T) {
	quorum := map[string]any{"x-queue-type": "quorum"}
	queues := []broker.Queue{
		{Name: "orders", Arguments: quorum, Bindings: []broker.Binding{{Exchange: broker.Exchange{Name: "shop", Kind: "topic"}, RoutingKey: "orders.#"}}},
		{Name: "plain", Arguments: quorum}, // direct exchange "plain": Celery only warns
	}
	p := New(nil, nil, Config{Queues: queues})
	three := time.Now().Add(3*time.Second + 100*time.Millisecond)
	prefix := "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.1."
	for _, tt := range []struct {
		exchange, key string
		eta           time.Time
		wantEx, want  string
	}{
		{"", "orders", three, broker.DelayedEntryExchange, prefix + "orders.#"},
		{"shop", "orders.eu", three, broker.DelayedEntryExchange, prefix + "orders.eu"},
		{"", "orders", time.Now().Add(500 * time.Millisecond), "", "orders"},
		{"", "orders", time.Time{}, "", "orders"},
		{"", "plain", three, "", "plain"},
		{"", "unknown", three, "", "unknown"},
		{"elsewhere", "k", three, "elsewhere", "k"},
	} {
		ex, key := p.nativeDelay(tt.exchange, tt.key, tt.eta)
		if ex != tt.wantEx || key != tt.want {
			t.Errorf("nativeDelay(%q, %q) = %q %q, want %q %q", tt.exchange, tt.key, ex, key, tt.wantEx, tt.want)
		}
	}
	// Without a quorum queue, Celery sends countdowns as they are.
	classic := New(nil, nil, Config{Queues: []broker.Queue{{Name: "orders", ExchangeType: "topic"}}})
	if ex, key := classic.nativeDelay("", "orders", three); ex != "" || key != "orders" {
		t.Errorf("classic queues: %q %q", ex, key)
	}
}
