package results_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/broker/amqp"
	brokerredis "github.com/gocelery/gocelery/broker/redis"
	"github.com/gocelery/gocelery/results"
)

// rpcRedisDB is the Redis broker database of the rpc:// tests; nothing
// else uses it.
const rpcRedisDB = 8

// rpcTransport is a broker whose connections publish and consume.
type rpcTransport interface {
	results.Publisher
	results.ReplyBroker
	Close() error
}

func rpcTransports(t *testing.T) []struct {
	name string
	dial func(t *testing.T) rpcTransport
} {
	return []struct {
		name string
		dial func(t *testing.T) rpcTransport
	}{
		{"amqp", func(t *testing.T) rpcTransport {
			b, err := amqp.Dial(context.Background(), "amqp://guest:guest@127.0.0.1:5672//", amqp.Config{})
			if err != nil {
				t.Fatalf("RabbitMQ: %v", err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		}},
		{"redis", func(t *testing.T) rpcTransport {
			b, err := brokerredis.Dial(context.Background(), fmt.Sprintf("redis://%s/%d", redisAddr(), rpcRedisDB), brokerredis.Config{})
			if err != nil {
				t.Fatalf("Redis: %v", err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		}},
	}
}

// A worker's RPC backend and a client's ReplyQueue on separate
// connections of a real broker: every state of 200 tasks, sent from 8
// goroutines at once, reaches the client under its own task id, and none
// is lost or mixed up.
func TestRPCRoundTrip(t *testing.T) {
	for _, tc := range rpcTransports(t) {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if tc.name == "redis" {
				c := newClient(t, rpcRedisDB)
				t.Cleanup(func() { c.FlushDB(context.Background()) })
			}
			worker, client := tc.dial(t), tc.dial(t)
			name := "rpc-test-" + uuid.NewString()
			q, err := results.OpenReplyQueue(ctx, client, results.ReplyQueueConfig{Name: name, Expires: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			backend := results.NewRPC(worker, results.RPCConfig{})

			const tasks, senders = 200, 8
			var wg sync.WaitGroup
			for s := range senders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := s; i < tasks; i += senders {
						id := fmt.Sprintf("%s-%d", name, i)
						for _, m := range []*results.Meta{
							{TaskID: id, Status: results.Started, Result: results.StartedResult(1, "w@h")},
							{TaskID: id, Status: "PROGRESS", Result: map[string]any{"current": int64(i)}},
							{TaskID: id, Status: results.Success, Result: int64(i)},
						} {
							m.ReplyTo = q.ReplyTo()
							if err := backend.Store(ctx, m); err != nil {
								t.Error(err)
								return
							}
						}
					}
				}()
			}
			for i := range tasks {
				id := fmt.Sprintf("%s-%d", name, i)
				m, err := q.Wait(ctx, id)
				if err != nil {
					t.Fatalf("task %d: %v", i, err)
				}
				if m.Status != results.Success || m.Result != int64(i) || m.TaskID != id || m.DateDone.IsZero() {
					t.Fatalf("task %d: %+v", i, m)
				}
			}
			wg.Wait()
			if tc.name == "amqp" {
				// The queue is auto-delete: it goes once its consumer does.
				q.Close()
				waitQueueGone(t, ctx, worker.(*amqp.Broker), name)
			}
		})
	}
}

// waitQueueGone waits until RabbitMQ no longer has the queue: publishing
// to it mandatory is then unroutable.
func waitQueueGone(t *testing.T, ctx context.Context, b *amqp.Broker, name string) {
	t.Helper()
	for {
		err := b.Publish(ctx, broker.Publishing{RoutingKey: name, Mandatory: true})
		if errors.Is(err, broker.ErrUnroutable) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatal("the reply queue outlived its consumer")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// BenchmarkRPCRoundTrip is one state published by a worker's RPC backend
// and read by a client's ReplyQueue on RabbitMQ, 8 publishers at once.
func BenchmarkRPCRoundTrip(b *testing.B) {
	ctx := context.Background()
	dial := func() *amqp.Broker {
		c, err := amqp.Dial(ctx, "amqp://guest:guest@127.0.0.1:5672//", amqp.Config{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return c
	}
	worker, client := dial(), dial()
	q, err := results.OpenReplyQueue(ctx, client, results.ReplyQueueConfig{Expires: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	backend := results.NewRPC(worker, results.RPCConfig{})
	var next atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("bench-%d", next.Add(1))
			m := &results.Meta{TaskID: id, Status: results.Success, Result: int64(1), ReplyTo: q.ReplyTo()}
			if err := backend.Store(ctx, m); err != nil {
				b.Error(err)
				return
			}
			if _, err := q.Wait(ctx, id); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
