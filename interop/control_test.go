package interop

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/control"
	"github.com/gocelery/gocelery/interop/tasks"
	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/results"
)

// AsyncResult.Revoke through control.Client: a Python worker discards a
// revoked countdown task, and a Go worker (with its pidbox node) cancels a
// running one; control.Client pings both. Both brokers.
func TestAsyncResultRevoke(t *testing.T) {
	celery := celeryBinary(t)
	for _, tc := range producerBrokers() {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			pyq := "gorevoke_py_" + tc.name + "_" + uuid.NewString()[:8]
			goq := "gorevoke_go_" + tc.name + "_" + uuid.NewString()[:8]
			b, backend := tc.open(t, ctx, celery, pyq)
			ct, ok := b.(control.Transport)
			if !ok {
				t.Fatalf("%T is not a control transport", b)
			}
			goHost := startGoWorkerWithNode(t, ctx, b, ct, backend, goq)
			client := control.NewClient(ct, control.ClientConfig{})
			defer client.Close()
			p := producer.New(b, backend, producer.Config{DefaultQueue: pyq, Revoker: client})

			// Both answer ping (the Go node may still be binding its queue
			// when the first one goes out).
			waitFor(t, ctx, func() bool {
				replies, err := client.Ping(ctx, control.Options{Destination: []string{goHost, pyq + "@interop"}, Timeout: 2 * time.Second})
				return err == nil && len(replies) == 2
			})

			// Python: revoked while held for its countdown, never runs.
			key := "gorevoke:" + uuid.NewString()
			r, err := p.SendTask(ctx, "pyinterop.counter", []any{key}, nil, producer.Countdown(2*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond) // received and held by the worker
			if err := r.Revoke(ctx, false); err != nil {
				t.Fatal(err)
			}
			var te *producer.TaskError
			if _, err := r.Get(ctx); !errors.As(err, &te) || te.Type != "TaskRevokedError" {
				t.Errorf("revoked Python task: %v", err)
			}
			time.Sleep(2500 * time.Millisecond)
			if n, _ := backend.Client().Exists(ctx, key).Result(); n != 0 {
				t.Error("the revoked Python task ran")
			}

			// Go: a running task is terminated.
			r, err = p.SendTask(ctx, "interop.sleep", []any{30}, nil, producer.Queue(goq))
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, ctx, func() bool {
				a, _ := client.Inspect(ctx, "active", nil, control.Options{Destination: []string{goHost}})
				list, _ := a[goHost].([]any)
				return len(list) == 1
			})
			start := time.Now()
			if err := r.Revoke(ctx, true); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Get(ctx); !errors.As(err, &te) || te.Type != "TaskRevokedError" || time.Since(start) > 5*time.Second {
				t.Errorf("terminated Go task after %v: %v", time.Since(start), err)
			}
		})
	}
}

// startGoWorkerWithNode runs the interop tasks in this process with a
// remote control node until the test ends, and returns its node name.
func startGoWorkerWithNode(t *testing.T, ctx context.Context, b producer.Broker, ct control.Transport, backend *results.Redis, queue string) string {
	t.Helper()
	cb := b.(consumer.Broker)
	mux := consumer.NewMux()
	tasks.Setup(mux, backend)
	host := queue + "@go"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	w, err := consumer.New(cb, backend, mux, consumer.Config{
		Queues: []broker.Queue{{Name: queue}}, DefaultQueue: queue, Hostname: host, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 2)
	go func() { done <- w.Run(wctx) }()
	go func() { done <- control.NewNode(ct, w.Remote(), control.NodeConfig{Logger: log}).Run(wctx) }()
	t.Cleanup(func() {
		stop()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("go worker: %v", err)
			}
		}
	})
	return host
}
