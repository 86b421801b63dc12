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
)

// BenchmarkWorkerTask is the worker's own cost per task, the transport
// aside: decode, dispatch, tracking, the handler call, the result path
// with no backend, the ack. Compare allocs/op before and after a change
// on the dispatch and ack paths.
func BenchmarkWorkerTask(b *testing.B) {
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
	w, err := consumer.New(br, nil, mux, consumer.Config{Queues: []broker.Queue{{Name: "q"}}, Concurrency: 8,
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
