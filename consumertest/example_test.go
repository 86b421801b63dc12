package consumertest_test

import (
	"context"
	"fmt"

	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/consumertest"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// A handler under test, with no broker: Serve calls it as the worker does.
func ExampleServe() {
	type addArgs struct{ X, Y int }
	add := consumer.Func(func(ctx context.Context, a addArgs) (int, error) { return a.X + a.Y, nil })

	rec := consumertest.Serve(context.Background(), add, consumertest.NewRequest("proj.add", 2, 3))
	fmt.Println(rec.Result, rec.Err)
	// Output: 5 <nil>
}

// UpdateState calls are recorded in order, as Python's AsyncResult would
// see them while the task runs.
func ExampleRecorder() {
	h := consumer.HandlerFunc(func(ctx context.Context, r *consumer.Request) (any, error) {
		for i := 1; i <= 2; i++ {
			if err := r.UpdateState(ctx, "PROGRESS", map[string]any{"done": i}); err != nil {
				return nil, err
			}
		}
		return "ok", nil
	})
	rec := consumertest.Serve(context.Background(), h, consumertest.NewRequest("proj.report"))
	for _, s := range rec.States {
		fmt.Println(s.Status, s.Result)
	}
	fmt.Println(rec.Result)
	// Output:
	// PROGRESS map[done:1]
	// PROGRESS map[done:2]
	// ok
}

// A whole worker on the in-memory broker: acks, retries and stored states
// as the real worker gives them.
func ExampleStartWorker() {
	t := &exampleT{}
	mux := consumer.NewMux()
	mux.HandleFunc("proj.hello", func(ctx context.Context, r *consumer.Request) (any, error) {
		return "hello " + r.Args[0].(string), nil
	})
	b, be, _ := consumertest.StartWorker(t, mux, consumer.Config{})
	b.Send(t, "tag-1", &protocol.Message{ID: "id-1", Task: "proj.hello", Args: []any{"world"}})
	m := be.Wait(t, "id-1", results.Success)
	b.WaitEvent(t, "ack:tag-1")
	fmt.Println(m.Result)
	t.done()
	// Output: hello world
}

// exampleT stands in for *testing.T in an Example.
type exampleT struct{ cleanups []func() }

func (*exampleT) Helper()                      {}
func (*exampleT) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }
func (*exampleT) Errorf(f string, args ...any) { fmt.Printf(f+"\n", args...) }
func (e *exampleT) Cleanup(f func())           { e.cleanups = append(e.cleanups, f) }
func (e *exampleT) done() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
}
