package interop

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp091 "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/broker/amqp"
	"github.com/gocelery/gocelery/broker/redis"
	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/interop/tasks"
	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/results"
)

// rpcBroker is a transport connection that consumes and publishes.
type rpcBroker interface {
	consumer.Broker
	Close() error
}

// The Go producer's AsyncResult over rpc://: tasks go out with reply_to
// set to the producer's ReplyQueue, and the states come back there, from
// a real Python Celery 5.7 worker (result_backend="rpc://") and from a Go
// worker (results.RPC), on both brokers.
func TestGoProducerRPCResults(t *testing.T) {
	celery := celeryBinary(t)
	for _, tc := range []struct {
		name, url string
		dial      func(ctx context.Context, url string) (rpcBroker, error)
	}{
		{"amqp", "amqp://guest:guest@127.0.0.1:5672//", func(ctx context.Context, url string) (rpcBroker, error) {
			return amqp.Dial(ctx, url, amqp.Config{})
		}},
		// DB 6 is this test's.
		{"redis", "redis://127.0.0.1:6379/6", func(ctx context.Context, url string) (rpcBroker, error) {
			return redis.Dial(ctx, url, redis.Config{})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			dial := func() rpcBroker {
				b, err := tc.dial(ctx, tc.url)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { b.Close() })
				return b
			}
			// The reply queue has a connection of its own, as in Celery.
			pub, replies := dial(), dial()
			rq, err := results.OpenReplyQueue(ctx, replies, results.ReplyQueueConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer rq.Close()
			if tc.name == "redis" {
				t.Cleanup(func() { flushRedisDB(t, tc.url) })
			}

			pyQueue := "rpc_py_" + uuid.NewString()[:8]
			goQueue := "rpc_go_" + uuid.NewString()[:8]
			// Registered first, so it runs once both workers have stopped: a
			// Celery worker whose queue is deleted under it declares it again.
			t.Cleanup(func() { deleteRPCQueues(tc.url, pyQueue, goQueue) })
			startRPCPythonWorker(t, celery, tc.url, pyQueue)
			startRPCGoWorker(t, ctx, dial(), goQueue)

			for _, side := range []struct{ name, queue, prefix string }{
				{"python", pyQueue, "pyinterop."},
				{"go", goQueue, "interop."},
			} {
				t.Run(side.name, func(t *testing.T) {
					p := producer.New(pub, rq, producer.Config{DefaultQueue: side.queue})
					r, err := p.SendTask(ctx, side.prefix+"add", []any{2, 3}, nil)
					if err != nil {
						t.Fatal(err)
					}
					if v, err := r.Get(ctx); err != nil || v != int64(5) {
						t.Fatalf("add: Get = %v, %v; want 5", v, err)
					}

					f, err := p.SendTask(ctx, side.prefix+"fail", []any{"rpc nope"}, nil)
					if err != nil {
						t.Fatal(err)
					}
					_, err = f.Get(ctx)
					var te *producer.TaskError
					if !errors.As(err, &te) || te.Type != "ValueError" || te.State != results.Failure || !strings.Contains(te.Traceback, "ValueError") {
						t.Fatalf("fail: Get error = %#v, want a ValueError FAILURE with its traceback", err)
					}

					pr, err := p.SendTask(ctx, side.prefix+"progress", []any{3}, map[string]any{"delay": 0.2})
					if err != nil {
						t.Fatal(err)
					}
					var progress []any
					for {
						state, err := pr.State(ctx)
						if err != nil {
							t.Fatal(err)
						}
						if state == "PROGRESS" {
							info, _ := pr.Info(ctx)
							if len(progress) == 0 || !equalJSON(progress[len(progress)-1], info) {
								progress = append(progress, info)
							}
						}
						if results.IsReady(state) {
							break
						}
						select {
						case <-ctx.Done():
							t.Fatalf("progress: not ready; PROGRESS seen %v", progress)
						case <-time.After(10 * time.Millisecond):
						}
					}
					if len(progress) == 0 {
						t.Fatal("progress: PROGRESS never seen")
					}
					if m, ok := progress[0].(map[string]any); !ok || m["total"] != int64(3) {
						t.Errorf("progress: PROGRESS meta %v, want {current, total: 3}", progress[0])
					}
					if v, err := pr.Get(ctx); err != nil || v != int64(3) {
						t.Errorf("progress: Get = %v, %v; want 3", v, err)
					}

					// Every chain step carries the reply queue (Celery's freeze), so
					// the step the worker sends last answers here too.
					ch, err := p.Apply(ctx, producer.Chain(producer.Sig(side.prefix+"add", 1, 2),
						producer.Sig(side.prefix+"add", 10), producer.Sig(side.prefix+"add", 100)), nil)
					if err != nil {
						t.Fatal(err)
					}
					if v, err := ch.Get(ctx); err != nil || v != int64(113) {
						t.Errorf("chain: Get = %v, %v; want 113", v, err)
					}
				})
			}
		})
	}
}

func equalJSON(a, b any) bool {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if !aok || !bok || len(am) != len(bm) {
		return false
	}
	for k, v := range am {
		if bm[k] != v {
			return false
		}
	}
	return true
}

// startRPCGoWorker runs the interop tasks in this process with the rpc://
// backend publishing on b.
func startRPCGoWorker(t *testing.T, ctx context.Context, b rpcBroker, queue string) {
	t.Helper()
	mux := consumer.NewMux()
	tasks.Register(mux, nil)
	backend := results.NewRPC(b, results.RPCConfig{})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	w, err := consumer.New(b, backend, mux, consumer.Config{
		Queues: []broker.Queue{{Name: queue}}, DefaultQueue: queue, Concurrency: 4, TrackStarted: true,
		Workflow: producer.NewWorkerWorkflow(b, backend, producer.Config{DefaultQueue: queue}, logger),
		Logger:   logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("go worker: %v", err)
		}
	})
}

// deleteRPCQueues removes the test's task queues and their exchanges from
// RabbitMQ (the reply queue is auto-delete).
func deleteRPCQueues(url string, queues ...string) {
	if !strings.HasPrefix(url, "amqp") {
		return
	}
	conn, err := amqp091.Dial(url)
	if err != nil {
		return
	}
	defer conn.Close()
	for _, q := range queues {
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(q, false, false, false)
			_ = ch.ExchangeDelete(q, false, false)
			ch.Close()
		}
	}
}

// flushRedisDB empties the test's own Redis database.
func flushRedisDB(t *testing.T, url string) {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Error(err)
		return
	}
	c := goredis.NewClient(opts)
	defer c.Close()
	if err := c.FlushDB(context.Background()).Err(); err != nil {
		t.Errorf("flushing %s: %v", url, err)
	}
}

// startRPCPythonWorker runs `celery -A pyinterop worker` with
// result_backend="rpc://" on queue until the test ends.
func startRPCPythonWorker(t *testing.T, celery, brokerURL, queue string) {
	t.Helper()
	startPythonWorkerOn(t, celery, brokerURL, "rpc://", queue, nil)
}
