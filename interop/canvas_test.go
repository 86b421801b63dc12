package interop

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/interop/tasks"
	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// Canvas built in Go: run by a real Python Celery 5.7 worker (pyinterop.*),
// by an in-process Go worker (interop.*), and by both in one workflow, on
// both brokers, with results read in Go.
func TestGoCanvas(t *testing.T) {
	celery := celeryBinary(t)
	for _, tc := range producerBrokers() {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			pyq := "gocanvas_py_" + tc.name + "_" + uuid.NewString()[:8]
			goq := "gocanvas_go_" + tc.name + "_" + uuid.NewString()[:8]
			b, backend := tc.open(t, ctx, celery, pyq)
			startGoWorker(t, ctx, b, backend, goq)
			p := producer.New(b, backend, producer.Config{DefaultQueue: pyq})
			py := func(name string, args ...any) protocol.Signature { return producer.Sig("pyinterop."+name, args...) }
			on := func(q string, s protocol.Signature) protocol.Signature {
				s.Options = map[string]any{"queue": q}
				return s
			}
			onGo := func(s protocol.Signature) protocol.Signature { return on(goq, s) }
			// get(t)(p.Apply(...)) waits for the result of an Apply.
			get := func(t *testing.T) func(*producer.AsyncResult, error) any {
				return func(r *producer.AsyncResult, err error) any {
					t.Helper()
					if err != nil {
						t.Fatal(err)
					}
					v, err := r.Get(ctx)
					if err != nil {
						t.Fatalf("result %s: %v", r.ID, err)
					}
					return v
				}
			}

			t.Run("chain", func(t *testing.T) {
				if v := get(t)(p.Apply(ctx, producer.Chain(py("add", 1, 1), py("add", 2), py("add", 3)), nil)); v != int64(7) {
					t.Errorf("chain = %v, want 7", v)
				}
			})
			t.Run("immutable", func(t *testing.T) {
				c := producer.Chain(py("add", 1, 1), producer.Si("pyinterop.add", 10, 10), py("add", 5))
				if v := get(t)(p.Apply(ctx, c, nil)); v != int64(25) {
					t.Errorf("chain with si = %v, want 25", v)
				}
			})
			t.Run("group", func(t *testing.T) {
				var sigs []protocol.Signature
				for i := range 10 {
					sigs = append(sigs, py("add", i, i))
				}
				g, err := p.Apply(ctx, producer.Group(sigs...), nil)
				if err != nil {
					t.Fatal(err)
				}
				for i, c := range g.Children {
					if v, err := c.Get(ctx); err != nil || v != int64(2*i) {
						t.Errorf("member %d = %v, %v", i, v, err)
					}
				}
				// GroupResult.save(): Python's GroupResult.restore reads it.
				if err := g.Save(ctx); err != nil {
					t.Fatal(err)
				}
				out, err := exec.Command("../.venv/bin/python", "-c", `
import sys; sys.path.insert(0, "python")
from celery import Celery
from celery.result import GroupResult
app = Celery(backend=sys.argv[1])
print(GroupResult.restore(sys.argv[2], app=app).join(timeout=10))`, backendURL, g.ID).CombinedOutput()
				if err != nil || strings.TrimSpace(string(out)) != "[0, 2, 4, 6, 8, 10, 12, 14, 16, 18]" {
					t.Errorf("GroupResult.restore in Python: %s %v", out, err)
				}
			})
			t.Run("chord", func(t *testing.T) {
				var header []protocol.Signature
				for i := range 10 {
					header = append(header, py("add", i, i))
				}
				if v := get(t)(p.Apply(ctx, producer.Chord(header, py("xsum")), nil)); v != int64(90) {
					t.Errorf("chord = %v, want 90", v)
				}
			})
			t.Run("chain group upgraded to chord", func(t *testing.T) {
				c := producer.Chain(py("add", 1, 1), producer.Group(py("add", 1), py("add", 2)), py("xsum"))
				if v := get(t)(p.Apply(ctx, c, nil)); v != int64(7) {
					t.Errorf("chain(task, group, task) = %v, want 7", v)
				}
			})
			t.Run("errback", func(t *testing.T) {
				key := "gocanvas:eb:" + uuid.NewString()
				r, err := p.SendTask(ctx, "pyinterop.fail", []any{"boom"}, nil, producer.LinkError(producer.Si("pyinterop.counter", key)))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := r.Get(ctx); err == nil {
					t.Fatal("fail succeeded")
				}
				waitFor(t, ctx, func() bool { n, _ := backend.Client().Get(ctx, key).Int(); return n == 1 })
			})
			t.Run("chord header failure", func(t *testing.T) {
				r, err := p.Apply(ctx, producer.Chord([]protocol.Signature{py("add", 1, 1), py("fail", "hdr")}, py("xsum")), nil)
				if err != nil {
					t.Fatal(err)
				}
				var te *producer.TaskError
				if _, err := r.Get(ctx); !errors.As(err, &te) || te.Type != "ChordError" {
					t.Errorf("chord body: %v, want ChordError", err)
				}
			})
			t.Run("mixed chain", func(t *testing.T) {
				// Steps name their queue: the Go worker sends a step that
				// names none to its own default queue, as a Python worker
				// sends it to its task_default_queue.
				c := producer.Chain(py("add", 1, 1), onGo(producer.Sig("interop.add", 2)),
					on(pyq, py("add", 3)), onGo(producer.Sig("interop.add", 4)))
				if v := get(t)(p.Apply(ctx, c, nil)); v != int64(11) {
					t.Errorf("Python->Go->Python->Go chain = %v, want 11", v)
				}
			})
			t.Run("chord of 1000 Go tasks", func(t *testing.T) {
				var header []protocol.Signature
				want := int64(0)
				for i := range 1000 {
					header = append(header, onGo(producer.Sig("interop.add", i, i)))
					want += int64(2 * i)
				}
				if v := get(t)(p.Apply(ctx, producer.Chord(header, onGo(producer.Sig("interop.xsum"))), nil)); v != want {
					t.Errorf("chord of 1000 = %v, want %d", v, want)
				}
			})
		})
	}
}

// startGoWorker runs the interop tasks in this process on queue until the
// test ends.
func startGoWorker(t *testing.T, ctx context.Context, b producer.Broker, backend *results.Redis, queue string) {
	t.Helper()
	cb, ok := b.(consumer.Broker)
	if !ok {
		t.Fatalf("%T cannot consume", b)
	}
	mux := consumer.NewMux()
	tasks.Setup(mux, backend)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	w, err := consumer.New(cb, backend, mux, consumer.Config{
		Queues: []broker.Queue{{Name: queue}}, Concurrency: 8, Logger: logger,
		Workflow: producer.NewWorkerWorkflow(cb, backend, producer.Config{DefaultQueue: queue}, logger),
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

func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met before the deadline")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
