package main

import (
	"context"
	"io"

	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/interop/tasks"
	"github.com/gocelery/gocelery/worker"
)

// runWorker runs a worker with the built-in interop.* tasks. Real workers
// are users' own binaries built on worker.Main (see the README); this one
// serves trials and the interop tests.
func runWorker(ctx context.Context, args []string, _ io.Reader, _, stderr io.Writer) error {
	return worker.Run(ctx, args, consumer.NewMux(), stderr, tasks.Setup)
}
