// Command gocelery works with Celery messages, workers and schedules from Go.
//
// Usage:
//
//	gocelery demo [--keep-running]     broker, worker and producer in one process, no services needed
//	gocelery worker -Q queue [flags]   a worker with the built-in interop.* tasks
//	gocelery decode [flags] [file|-]   print a captured task message as Celery sees it
//	gocelery beat [flags]              the periodic task scheduler (run any number of replicas)
//	gocelery beat list|add|enable|disable|remove|run-now   manage the periodic tasks in Redis
//	gocelery inspect COMMAND [-d node,...]  celery inspect: ping, stats, active, registered, ...
//	gocelery control COMMAND [args]         celery control: revoke, terminate, rate_limit, shutdown, ...
//
// Run "gocelery help" for the list of commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one subcommand: it reads its own flags from args.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"demo", "run a broker, a Go worker and a producer in this process, and show tasks moving through states", runDemo},
		{"worker", "run a worker with the built-in interop.* tasks (your own tasks: build a binary with worker.Main)", runWorker},
		{"decode", "print a captured task message (Redis envelope, AMQP body, fixture) as Celery sees it", runDecode},
		{"beat", "run the periodic task scheduler (replicas safe), or list|add|enable|disable|remove|run-now its entries", runBeat},
		{"inspect", "ask workers (Go or Python) what they are doing: ping, stats, active, registered, ... (celery inspect)", runInspect},
		{"control", "tell workers (Go or Python) to revoke, rate_limit, add_consumer, shutdown, ... (celery control)", runControl},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			if err := c.run(ctx, args[1:], stdin, stdout, stderr); err != nil {
				fmt.Fprintf(stderr, "gocelery %s: %v\n", c.name, err)
				var ee *exitError
				if errors.As(err, &ee) {
					return ee.code
				}
				return 1
			}
			return 0
		}
	}
	fmt.Fprintf(stderr, "gocelery: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: gocelery <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
}
