package producer_test

import (
	"context"
	"fmt"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/protocol"
)

// printer is a broker that prints what it is asked to publish.
type printer struct{}

func (printer) Declare(context.Context, ...broker.Queue) error { return nil }

func (printer) Publish(_ context.Context, p broker.Publishing) error {
	m, err := protocol.Decode(&p.Raw)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s%v, then %d more step(s)\n", p.RoutingKey, m.Task, m.Args, len(m.Chain))
	return nil
}

// A Go service sends a task to the Python workers of another app, routed
// by task name as Celery's task_routes does.
func ExampleProducer_SendTask() {
	p := producer.New(printer{}, nil, producer.Config{
		DefaultQueue: "go",
		Routes:       []producer.Route{{Pattern: "reports.*", Queue: "reports"}},
	})
	_, err := p.SendTask(context.Background(), "reports.monthly", []any{2026, 11}, nil)
	fmt.Println(err)
	// Output:
	// reports reports.monthly[2026 11], then 0 more step(s)
	// <nil>
}

// A chain built in Go: only the first step is published; whichever
// worker (Go or Python) runs it sends the next with its result.
func ExampleProducer_Apply() {
	p := producer.New(printer{}, nil, producer.Config{DefaultQueue: "celery"})
	c := producer.Chain(
		producer.Sig("proj.add", 1, 1),
		producer.Sig("proj.add", 2),
		producer.Si("proj.notify", "done"), // immutable: ignores the result
	)
	r, err := p.Apply(context.Background(), c, nil)
	fmt.Println(err, r.ID != "")
	// Output:
	// celery proj.add[1 1], then 2 more step(s)
	// <nil> true
}

// A batch sent from one goroutine with the broker's confirms in flight
// together (on RabbitMQ, the broker's publish rate rather than a round
// trip per task); SendTasks returns once every message is confirmed.
func ExampleProducer_SendTasks() {
	p := producer.New(printer{}, nil, producer.Config{DefaultQueue: "celery"})
	calls := []producer.Call{
		{Name: "proj.resize", Args: []any{"a.png"}},
		{Name: "proj.resize", Args: []any{"b.png"}, Options: []producer.Option{producer.Queue("images")}},
	}
	rs, err := p.SendTasks(context.Background(), calls)
	fmt.Println(len(rs), err)
	// Output:
	// celery proj.resize[a.png], then 0 more step(s)
	// images proj.resize[b.png], then 0 more step(s)
	// 2 <nil>
}
