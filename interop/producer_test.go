package interop

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gocelery/gocelery/broker/amqp"
	"github.com/gocelery/gocelery/broker/redis"
	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// producerBroker dials one transport for the producer tests.
type producerBroker struct {
	name, url string
	dial      func(ctx context.Context, url string) (producer.Broker, func(), error)
}

// producerBrokers are both transports, with the URLs the suites use.
func producerBrokers() []producerBroker {
	return []producerBroker{
		{"amqp", "amqp://guest:guest@127.0.0.1:5672//", func(ctx context.Context, url string) (producer.Broker, func(), error) {
			b, err := amqp.Dial(ctx, url, amqp.Config{})
			if err != nil {
				return nil, nil, err
			}
			return b, func() { b.Close() }, nil
		}},
		{"redis", "redis://127.0.0.1:6379/4", func(ctx context.Context, url string) (producer.Broker, func(), error) {
			b, err := redis.Dial(ctx, url, redis.Config{})
			if err != nil {
				return nil, nil, err
			}
			return b, func() { b.Close() }, nil
		}},
	}
}

// open starts a Python worker on queue and connects to the broker and the
// result backend, all closed when the test ends.
func (tc producerBroker) open(t *testing.T, ctx context.Context, celery, queue string) (producer.Broker, *results.Redis) {
	t.Helper()
	startPythonWorker(t, celery, tc.url, queue)
	b, closeBroker, err := tc.dial(ctx, tc.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeBroker)
	backend, err := results.OpenRedis(backendURL, results.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	return b, backend
}

// The Go producer's SendTask and AsyncResult against a real Python Celery
// 5.7 worker, on both brokers.
func TestProducerWithPythonWorker(t *testing.T) {
	celery := celeryBinary(t)
	for _, tc := range producerBrokers() {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			queue := "goprod_" + tc.name + "_" + uuid.NewString()[:8]
			b, backend := tc.open(t, ctx, celery, queue)
			p := producer.New(b, backend, producer.Config{DefaultQueue: queue})

			// A plain call, its state and result.
			r, err := p.SendTask(ctx, "pyinterop.add", []any{2, 3}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if v, err := r.Get(ctx); err != nil || v != int64(5) {
				t.Errorf("add = %v, %v", v, err)
			}
			if s, _ := r.State(ctx); s != results.Success {
				t.Errorf("state %s", s)
			}

			// A Python exception comes back as a Go error with its type.
			r, _ = p.SendTask(ctx, "pyinterop.fail", []any{"from go"}, nil)
			_, err = r.Get(ctx)
			var te *producer.TaskError
			if !errors.As(err, &te) || te.Type != "ValueError" || te.Message[0] != "from go" || te.Traceback == "" {
				t.Errorf("fail: %v", err)
			}

			// countdown, headers and the request Python saw.
			start := time.Now()
			r, _ = p.SendTask(ctx, "pyinterop.request", nil, nil, producer.Countdown(time.Second),
				producer.Headers(map[string]any{"x-tenant": "acme"}), producer.Parent("root-1", "parent-1"))
			v, err := r.Get(ctx)
			if err != nil {
				t.Fatal(err)
			}
			req := v.(map[string]any)
			if time.Since(start) < time.Second || req["root_id"] != "root-1" || req["parent_id"] != "parent-1" {
				t.Errorf("request after %v: %v", time.Since(start), req)
			}

			// Expired before it ran: REVOKED, raised as TaskRevokedError.
			r, _ = p.SendTask(ctx, "pyinterop.add", []any{1, 1}, nil, producer.Expires(time.Now().Add(-time.Second)))
			if _, err := r.Get(ctx); !errors.As(err, &te) || te.Type != "TaskRevokedError" {
				// RabbitMQ may drop it on its own (expiration property 0):
				// then nothing is ever stored, as with Celery.
				if tc.name != "amqp" || !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("expired: %v", err)
				}
			}

			// link: Python applies the callback with the result.
			cbID := uuid.NewString()
			r, _ = p.SendTask(ctx, "pyinterop.add", []any{2, 3}, nil, producer.Link(protocol.Signature{
				Task: "pyinterop.add", Args: []any{10}, Options: map[string]any{"task_id": cbID, "queue": queue},
			}))
			if _, err := r.Get(ctx); err != nil {
				t.Fatal(err)
			}
			if v, err := producer.NewAsyncResult(cbID, backend).Get(ctx); err != nil || v != int64(15) {
				t.Errorf("link callback = %v, %v", v, err)
			}

			// Custom states and retries, read from Go while Python runs them.
			r, _ = p.SendTask(ctx, "pyinterop.progress", []any{5, 0.2}, nil)
			waitFor(t, ctx, func() bool {
				info, _ := r.Info(ctx)
				m, _ := info.(map[string]any)
				s, _ := r.State(ctx)
				return s == "PROGRESS" && m["total"] == int64(5)
			})
			if v, err := r.Get(ctx); err != nil || v != int64(5) {
				t.Errorf("progress = %v, %v", v, err)
			}
			r, _ = p.SendTask(ctx, "pyinterop.retry", []any{2}, nil)
			if v, err := r.Get(ctx); err != nil || v != int64(2) {
				t.Errorf("retry = %v, %v", v, err)
			}
			r, _ = p.SendTask(ctx, "pyinterop.sleep", []any{0.1}, nil)
			if v, err := r.Get(ctx); err != nil || v != 0.1 {
				t.Errorf("sleep = %v, %v", v, err)
			}

			// The rest of the option set, as the Python task's request sees
			// it, through a msgpack + gzip producer.
			mp := producer.New(b, backend, producer.Config{DefaultQueue: queue, Serializer: "msgpack", Compression: "gzip"})
			eta := time.Now().Add(500 * time.Millisecond).UTC()
			r, err = mp.SendTask(ctx, "pyinterop.request", nil, nil,
				producer.ETA(eta), producer.ExpiresIn(time.Hour), producer.Retries(2),
				producer.TimeLimit(30*time.Second, 20*time.Second), producer.Priority(3), producer.InGroup("grp-1", 0))
			if err != nil {
				t.Fatal(err)
			}
			v, err = r.Get(ctx)
			if err != nil {
				t.Fatal(err)
			}
			req = v.(map[string]any)
			tl, _ := req["timelimit"].([]any)
			if req["retries"] != int64(2) || req["group"] != "grp-1" || req["eta"] == nil || req["expires"] == nil ||
				fmt.Sprint(tl) != "[30 20]" {
				t.Errorf("request seen by Python: %v", req)
			}
			r, err = mp.SendTask(ctx, "pyinterop.echo", []any{"a", int64(1) << 40}, map[string]any{"k": []any{1.5, nil}})
			if err != nil {
				t.Fatal(err)
			}
			if v, err = r.Get(ctx); err != nil {
				t.Fatal(err)
			}
			echo := v.(map[string]any)
			if args := echo["args"].([]any); len(args) != 2 || args[1] != int64(1)<<40 {
				t.Errorf("args through msgpack: %v", echo)
			}
			if tc.name == "amqp" {
				if di := req["delivery_info"].(map[string]any); di["priority"] != int64(3) {
					t.Errorf("priority: %v", di)
				}
			}

			// The bulk path: 200 tasks with their confirms in flight
			// together, each run once by Python with its own arguments.
			calls := make([]producer.Call, 200)
			for i := range calls {
				calls[i] = producer.Call{Name: "pyinterop.add", Args: []any{i, 1000}}
			}
			rs, err := p.SendTasks(ctx, calls)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range rs {
				if v, err := r.Get(ctx); err != nil || v != int64(i+1000) {
					t.Fatalf("bulk add %d = %v, %v", i, v, err)
				}
			}
			// SendTaskAsync then Sent: the confirm is waited for apart.
			r, err = p.SendTaskAsync(ctx, "pyinterop.add", []any{20, 22}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Sent(ctx); err != nil {
				t.Fatal(err)
			}
			if v, err := r.Get(ctx); err != nil || v != int64(42) {
				t.Errorf("async add = %v, %v", v, err)
			}
		})
	}
}
