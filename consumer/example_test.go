package consumer_test

import (
	"context"
	"fmt"

	"github.com/gocelery/gocelery/consumer"
)

// A worker's tasks are registered on a Mux, like HTTP handlers. Eager mode
// runs them in-process, as Celery's task_always_eager does.
func Example() {
	mux := consumer.NewMux()
	type addArgs struct{ X, Y int }
	mux.Handle("proj.add", consumer.Func(func(ctx context.Context, a addArgs) (int, error) {
		return a.X + a.Y, nil
	}))
	mux.HandleFunc("proj.progress", func(ctx context.Context, r *consumer.Request) (any, error) {
		// Python's AsyncResult sees state PROGRESS and this meta as .info.
		return 1, r.UpdateState(ctx, "PROGRESS", map[string]any{"current": 1, "total": 1})
	})
	// Middleware wraps every task, as net/http middleware does.
	mux.Use(func(next consumer.Handler) consumer.Handler {
		return consumer.HandlerFunc(func(ctx context.Context, r *consumer.Request) (any, error) {
			fmt.Println("running", r.Task)
			return next.ServeTask(ctx, r)
		})
	})

	eager := &consumer.Eager{Mux: mux}
	sum, err := eager.Apply(context.Background(), "proj.add", []any{2}, map[string]any{"y": 3})
	fmt.Println(sum, err)
	// Output:
	// running proj.add
	// 5 <nil>
}
