package consumer

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
)

// BenchmarkETAHeldMemory reports the heap each held ETA task costs: the
// decoded message, its request and the delivery it stays unacked on. This
// is what ETATaskLimit multiplies.
func BenchmarkETAHeldMemory(b *testing.B) {
	const n = 10000
	fb := nopBroker{}
	mux := NewMux()
	mux.HandleFunc("proj.add", func(ctx context.Context, r *Request) (any, error) { return nil, nil })
	w, err := New(fb, nil, mux, Config{Queues: []broker.Queue{{Name: "q"}}, ETATaskLimit: n})
	if err != nil {
		b.Fatal(err)
	}
	raws := make([]*protocol.Raw, n)
	for i := range raws {
		raws[i], err = protocol.Encode(&protocol.Message{
			ID: "00000000-0000-0000-0000-" + strconv.Itoa(100000000000+i), Task: "proj.add",
			Args: []any{int64(i), int64(i)}, ETA: time.Now().Add(time.Hour),
			Properties: protocol.Properties{ReplyTo: "a0420ce6-9749-3314-bef0-7c24336e25a6"},
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	var perTask float64
	for b.Loop() {
		w.eta = newETAHeld(w)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i, raw := range raws {
			// The transport's copy of the body and headers is part of the cost.
			r := *raw
			r.Body = append([]byte(nil), raw.Body...)
			r.Headers = make(map[string]any, len(raw.Headers))
			for k, v := range raw.Headers {
				r.Headers[k] = v
			}
			w.dispatch(context.Background(), &broker.Delivery{Raw: r, Queue: "q", RoutingKey: "q", Tag: strconv.Itoa(i), Acker: fb})
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if w.eta.len() != n {
			b.Fatalf("held %d", w.eta.len())
		}
		perTask = float64(after.HeapAlloc-before.HeapAlloc) / n
	}
	b.ReportMetric(perTask, "B/held-task")
}

// nopBroker takes what the benchmark gives it and settles nothing.
type nopBroker struct{}

func (nopBroker) Declare(context.Context, ...broker.Queue) error { return nil }
func (nopBroker) Consume(context.Context, []broker.Queue, int) (<-chan *broker.Delivery, error) {
	return nil, nil
}
func (nopBroker) SetPrefetch(int) error                            { return nil }
func (nopBroker) Publish(context.Context, broker.Publishing) error { return nil }
func (nopBroker) Ack(*broker.Delivery) error                       { return nil }
func (nopBroker) Reject(*broker.Delivery, bool) error              { return nil }
