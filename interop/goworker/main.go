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
	"github.com/gocelery/gocelery/worker"
)

func main() {
	err := worker.Run(context.Background(), os.Args[1:], consumer.NewMux(), os.Stderr, tasks.Setup)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "goworker:", err)
		os.Exit(1)
	}
}
