package results_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/gocelery/gocelery/results"
)

// A Go worker stores a task's states; a client waits for the final one.
// Python's AsyncResult(id).get() reads the same keys.
func Example() {
	ctx := context.Background()
	backend, err := results.OpenRedis("redis://127.0.0.1:6379/12", results.Config{
		KeyPrefix: "gocelery-example", // keys: gocelery-example_celery-task-meta-<id>
		Expires:   time.Minute,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer backend.Close()
	const id = "example-task"
	backend.Forget(ctx, id) // left over from an interrupted run
	defer backend.Forget(ctx, id)

	// The worker side, in another goroutine: STARTED, then SUCCESS.
	go func() {
		backend.Store(ctx, &results.Meta{TaskID: id, Status: results.Started,
			Result: results.StartedResult(4242, "gocelery@example")})
		time.Sleep(50 * time.Millisecond)
		backend.Store(ctx, &results.Meta{TaskID: id, Status: results.Success, Result: int64(5)})
	}()

	// The client side.
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := backend.Wait(waitCtx, id)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.Status, m.Result, m.Err())

	// A failure is stored as the Python exception the client will raise.
	backend.Forget(ctx, id)
	backend.Store(ctx, &results.Meta{TaskID: id, Status: results.Failure, Result: errors.New("no space left")})
	m, _ = backend.Get(ctx, id)
	fmt.Println(m.Status, m.Err())
	// Output:
	// SUCCESS 5 <nil>
	// FAILURE RuntimeError: no space left
}
