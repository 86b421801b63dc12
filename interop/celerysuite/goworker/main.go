// Command goworker is the Go worker that Celery's own integration suite
// runs against (interop/celerysuite): t/integration/tasks.py's tasks in Go
// on gocelery's standard worker command line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/interop/celerysuite/tasks"
	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/results"
	"github.com/gocelery/gocelery/worker"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "goworker:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	o, err := worker.ParseFlags("worker", args, io.Discard)
	if err != nil {
		return worker.Run(ctx, args, consumer.NewMux(), os.Stderr, nil) // prints the usage error
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: o.LogLevel}))
	// The tasks that send canvases themselves (chain_add, chord_add,
	// build_chain_inside_task, add_to_chord) publish on a connection of
	// their own, as a Python task's app.send_task does.
	pb, err := worker.DialBroker(ctx, o.BrokerURL, worker.DialConfig{Logger: log})
	if err != nil {
		return fmt.Errorf("producer broker: %w", err)
	}
	defer pb.Close()
	setup := func(mux *consumer.Mux, backend *results.Redis) {
		if backend == nil {
			log.Error("the suite's tasks need the Redis result backend")
			os.Exit(2)
		}
		p := producer.New(pb, backend, producer.Config{Origin: o.Config.Hostname})
		tasks.Register(mux, tasks.Deps{Redis: backend.Client(), Producer: p, Logger: log})
	}
	return worker.Run(ctx, args, consumer.NewMux(), os.Stderr, setup)
}
