package consumer_test

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/consumertest"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// BenchmarkWorkerTask is the worker's own cost per task, the transport
// aside: decode, dispatch, tracking, the handler call, the result path
// (no backend, or one that only encodes the state as the Redis backend
// does), the ack. Compare allocs/op before and after a change on the
// dispatch and ack paths.
func BenchmarkWorkerTask(b *testing.B) {
	b.Run("no backend", func(b *testing.B) { benchWorkerTask(b, nil) })
	b.Run("encoding backend", func(b *testing.B) { benchWorkerTask(b, encodingBackend{}) })
}

// encodingBackend encodes each state and drops it.
type encodingBackend struct{}

func (encodingBackend) Store(_ context.Context, m *results.Meta) error {
	_, err := m.Encode()
	return err
}

func benchWorkerTask(b *testing.B, be consumer.Backend) {
	raw, err := protocol.Encode(&protocol.Message{
		ID: "00000000-0000-0000-0000-000000000000", Task: "proj.add", Args: []any{int64(2), int64(3)},
		TimeLimit: protocol.TimeLimit{Hard: 30 * time.Second},
	})
	if err != nil {
		b.Fatal(err)
	}
	mux := consumer.NewMux()
	var done atomic.Int64
	finished := make(chan struct{})
	target := int64(b.N)
	mux.HandleFunc("proj.add", func(ctx context.Context, r *consumer.Request) (any, error) {
		if done.Add(1) == target {
			close(finished)
		}
		return int64(5), nil
	})
	br := consumertest.NewBroker()
	w, err := consumer.New(br, be, mux, consumer.Config{Queues: []broker.Queue{{Name: "q"}}, Concurrency: 8,
		Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = w.Run(ctx) }()
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		for i := range b.N {
			br.SendRaw(strconv.Itoa(i), raw)
		}
	}()
	<-finished
	b.StopTimer()
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
