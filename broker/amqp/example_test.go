package amqp_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/broker/amqp"
	"github.com/gocelery/gocelery/protocol"
)

// A producer and a worker on one connection: declare a queue, publish a
// Celery task message with a confirm, consume it and acknowledge it.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := amqp.Dial(ctx, "amqp://guest:guest@127.0.0.1:5672//", amqp.Config{GlobalQoS: true})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	// A throwaway queue bound to RabbitMQ's own direct exchange; a Celery
	// worker's default would be broker.Queue{Name: "celery"}.
	q := broker.Queue{Name: fmt.Sprintf("example-%d", time.Now().UnixNano()), Exchange: "amq.direct", Transient: true, AutoDelete: true}
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
	if err := b.Publish(ctx, broker.Publishing{Raw: *raw, RoutingKey: q.Name, Mandatory: true}); err != nil {
		log.Fatal(err)
	}

	d := <-deliveries
	m, err := protocol.Decode(&d.Raw)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.Task, m.Args, m.TimeLimit.Hard)
	if err := d.Ack(); err != nil {
		log.Fatal(err)
	}
	// Output: proj.tasks.add [2 2] 30s
}
