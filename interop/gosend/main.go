// Command gosend sends one task with the Go producer, configured from the
// same Celery-named config file as the workers (its task_queues tell the
// producer how the queues are declared, and whether countdowns go through
// native delayed delivery). The interop tests use it for Go -> Python.
//
//	gosend --config worker.yaml --task interop.counter --queue orders --kwargs '{"key": "k"}' --countdown 2s
//
// It prints the task id.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/gocelery/gocelery/config"
	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/worker"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gosend:", err)
		os.Exit(1)
	}
}

func run() error {
	path := flag.String("config", "", "Celery-named config file (required)")
	task := flag.String("task", "", "task name")
	queue := flag.String("queue", "", "queue (default task_default_queue)")
	exchange := flag.String("exchange", "", "exchange, with --routing-key, instead of a queue")
	key := flag.String("routing-key", "", "routing key for --exchange")
	kwargs := flag.String("kwargs", "{}", "keyword arguments, a JSON object")
	countdown := flag.Duration("countdown", 0, "countdown")
	flag.Parse()
	f, err := config.Load(*path)
	if err != nil {
		return err
	}
	var kw map[string]any
	if err := json.Unmarshal([]byte(*kwargs), &kw); err != nil {
		return fmt.Errorf("--kwargs: %w", err)
	}
	queues, err := f.Topology.Declared(nil)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := worker.DialBroker(ctx, f.BrokerURL, worker.DialConfig{})
	if err != nil {
		return err
	}
	defer b.Close()
	p := producer.New(b, nil, producer.Config{DefaultQueue: f.Topology.DefaultQueue, Queues: queues})
	var opts []producer.Option
	switch {
	case *exchange != "":
		opts = append(opts, producer.Exchange(*exchange, *key))
	case *queue != "":
		opts = append(opts, producer.Queue(*queue))
	}
	if *countdown > 0 {
		opts = append(opts, producer.Countdown(*countdown))
	}
	r, err := p.SendTask(ctx, *task, nil, kw, opts...)
	if err != nil {
		return err
	}
	fmt.Println(r.ID)
	return nil
}
