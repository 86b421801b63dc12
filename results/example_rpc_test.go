package results_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/gocelery/gocelery/broker/amqp"
	"github.com/gocelery/gocelery/results"
)

// rpc:// results: the client declares its reply queue and sends tasks with
// its name as reply_to (producer.New(b, replies, ...) does that); the
// worker publishes each state there. Python's AsyncResult reads the same
// messages with result_backend = "rpc://".
func ExampleReplyQueue() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const url = "amqp://guest:guest@127.0.0.1:5672//"

	// The client: a connection of its own for the reply queue.
	conn, err := amqp.Dial(ctx, url, amqp.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	replies, err := results.OpenReplyQueue(ctx, conn, results.ReplyQueueConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer replies.Close()

	// The worker side: the states of a task whose message said
	// reply_to=replies.ReplyTo().
	wb, err := amqp.Dial(ctx, url, amqp.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer wb.Close()
	backend := results.NewRPC(wb, results.RPCConfig{})
	for _, m := range []*results.Meta{
		{TaskID: "example-rpc", Status: "PROGRESS", Result: map[string]any{"done": 1}},
		{TaskID: "example-rpc", Status: results.Success, Result: int64(42)},
	} {
		m.ReplyTo = replies.ReplyTo()
		if err := backend.Store(ctx, m); err != nil {
			log.Fatal(err)
		}
	}

	m, err := replies.Wait(ctx, "example-rpc")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.Status, m.Result)
	// Output: SUCCESS 42
}
