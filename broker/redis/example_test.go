package redis_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/broker/redis"
	"github.com/gocelery/gocelery/protocol"
)

// A producer and a worker on one Redis database: publish a Celery task
// message as Celery's send_task does, consume it and acknowledge it.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Database 10, and a key prefix (kombu's global_keyprefix) to keep
	// the example apart; a Celery worker's defaults would be
	// "redis://127.0.0.1:6379/0" and no prefix.
	b, err := redis.Dial(ctx, "redis://127.0.0.1:6379/10", redis.Config{KeyPrefix: "gocelery-example:"})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	q := broker.Queue{Name: "celery"}
	deliveries, err := b.Consume(ctx, []broker.Queue{q}, 4)
	if err != nil {
		log.Fatal(err)
	}

	raw, err := protocol.Encode(&protocol.Message{
		ID:        "example-1",
		Task:      "proj.tasks.add",
		Args:      []any{2, 2},
		TimeLimit: protocol.TimeLimit{Hard: 30 * time.Second, Soft: 20 * time.Second},
	})
	if err != nil {
		log.Fatal(err)
	}
	// Celery publishes tasks for direct queues on the anonymous exchange:
	// the routing key names the queue.
	if err := b.Publish(ctx, broker.Publishing{Raw: *raw, RoutingKey: q.Name}); err != nil {
		log.Fatal(err)
	}

	d := <-deliveries
	m, err := protocol.Decode(&d.Raw)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.Task, m.Args, m.TimeLimit.Hard, d.Queue)
	if err := d.Ack(); err != nil {
		log.Fatal(err)
	}
	// Output: proj.tasks.add [2 2] 30s celery
}
