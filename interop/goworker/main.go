// Command goworker is the Go worker of the interop tests: the interop.*
// task contract on gocelery's standard worker command line. It is also the
// example of a user's own worker binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/interop/tasks"
	"github.com/gocelery/gocelery/results"
	"github.com/gocelery/gocelery/worker"
)

func main() {
	mux := consumer.NewMux()
	err := worker.Run(context.Background(), os.Args[1:], mux, os.Stderr, func(mux *consumer.Mux, rb *results.Redis) {
		if rb != nil {
			tasks.Register(mux, rb.Client()) // interop.counter uses the backend's Redis
		} else {
			tasks.Register(mux, nil)
		}
	})
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "goworker:", err)
		os.Exit(1)
	}
}
