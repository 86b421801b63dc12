package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gocelery/gocelery/broker/dial"
	"github.com/gocelery/gocelery/control"
	"github.com/gocelery/gocelery/protocol"
)

// exitError ends the program with a given code (Celery's EX_UNAVAILABLE
// when no node replied).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// exUnavailable is sysexits' EX_UNAVAILABLE, what celery inspect exits with
// when no node replied.
const exUnavailable = 69

// remoteCommand is one inspect or control command: how its positional
// arguments map to keyword arguments, as Celery's Panel metadata says.
type remoteCommand struct {
	args     []string // names of positional arguments, in order
	variadic string   // name taking the remaining arguments
	help     string
}

var inspectCommands = map[string]remoteCommand{
	"ping":          {help: "ping worker(s)"},
	"stats":         {help: "worker statistics"},
	"active":        {args: []string{"safe"}, help: "tasks being executed"},
	"reserved":      {help: "tasks received, waiting to run"},
	"scheduled":     {help: "ETA/countdown tasks held"},
	"registered":    {variadic: "taskinfoitems", help: "registered tasks [attr...]"},
	"revoked":       {help: "revoked task ids"},
	"query_task":    {variadic: "ids", help: "query tasks by id: id1 [id2 ...]"},
	"active_queues": {help: "queues being consumed"},
	"clock":         {help: "the Lamport clock"},
	"report":        {help: "software report"},
	"conf":          {help: "configuration"},
}

var controlCommands = map[string]remoteCommand{
	"revoke":          {variadic: "task_id", help: "revoke task ids: id1 [id2 ...]"},
	"terminate":       {args: []string{"signal"}, variadic: "task_id", help: "terminate running tasks: <signal> id1 [id2 ...]"},
	"rate_limit":      {args: []string{"task_name", "rate_limit"}, help: "<task_name> <rate_limit (5/s | 5/m | 5/h)>"},
	"time_limit":      {args: []string{"task_name", "soft", "hard"}, help: "<task_name> <soft_secs> [hard_secs]"},
	"add_consumer":    {args: []string{"queue", "exchange", "exchange_type", "routing_key"}, help: "<queue> [exchange [type [routing_key]]]"},
	"cancel_consumer": {args: []string{"queue"}, help: "<queue>"},
	"shutdown":        {help: "warm shutdown of the worker(s)"},
	"enable_events":   {help: "send task events"},
	"disable_events":  {help: "stop sending task events"},
	"heartbeat":       {help: "send a worker-heartbeat event now"},
}

func runInspect(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	return runRemote(ctx, "inspect", inspectCommands, args, stdout, stderr)
}

func runControl(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	return runRemote(ctx, "control", controlCommands, args, stdout, stderr)
}

// runRemote is `celery inspect` / `celery control`: same arguments, same
// output, same exit code when nobody answers.
func runRemote(ctx context.Context, kind string, cmds map[string]remoteCommand, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(kind, flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokerURL := fs.String("broker", envOr("CELERY_BROKER_URL", "amqp://guest:guest@localhost:5672//"), "broker URL (amqp://, redis://, sentinel://, or a list amqp://h1//;amqp://h2//; env CELERY_BROKER_URL)")
	fs.StringVar(brokerURL, "b", *brokerURL, "shorthand for --broker")
	topts := make(map[string]any)
	fs.Var(dial.TransportOptionsFlag(topts), "broker-transport-option", "KEY=VALUE of broker_transport_options, repeatable (master_name=mymaster for sentinel://); VALUE may be JSON")
	strategy := fs.String("broker-failover-strategy", "round-robin", "order in which a broker URL list is tried: round-robin or shuffle")
	timeout := fs.Float64("timeout", 1.0, "seconds to wait for replies")
	fs.Float64Var(timeout, "t", 1.0, "shorthand for --timeout")
	dest := fs.String("destination", "", "comma-separated node names")
	fs.StringVar(dest, "d", "", "shorthand for --destination")
	asJSON := fs.Bool("json", false, "print the replies as JSON")
	fs.BoolVar(asJSON, "j", false, "shorthand for --json")
	cfg := celeryConfig{brokerOptions: topts}
	cfg.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: gocelery %s [flags] COMMAND [args]\n\ncommands:\n", kind)
		names := make([]string, 0, len(cmds))
		for n := range cmds {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(stderr, "  %-16s %s\n", n, cmds[n].help)
		}
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	// Flags may come before or after the command, as with Celery's CLI.
	var positional []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if err := cfg.apply(fs, stderr); err != nil {
		return err
	}
	if len(positional) == 0 {
		fs.Usage()
		return errors.New("name a command")
	}
	method := positional[0]
	meta, ok := cmds[method]
	if !ok {
		names := make([]string, 0, len(cmds))
		for n := range cmds {
			names = append(names, n)
		}
		sort.Strings(names)
		return fmt.Errorf("command %s not recognized. Available %s commands: %s", method, kind, strings.Join(names, ", "))
	}
	arguments, err := compileArguments(method, meta, positional[1:])
	if err != nil {
		return err
	}
	t, err := dial.Broker(ctx, *brokerURL, dial.Config{TransportOptions: topts, FailoverStrategy: *strategy})
	if err != nil {
		return err
	}
	defer t.Close()
	client := control.NewClient(t, control.ClientConfig{})
	defer client.Close()
	o := control.Options{Reply: true, Timeout: time.Duration(*timeout * float64(time.Second))}
	for _, d := range strings.Split(*dest, ",") {
		if d = strings.TrimSpace(d); d != "" {
			o.Destination = append(o.Destination, d)
		}
	}
	replies, err := client.Broadcast(ctx, method, arguments, o)
	if err != nil {
		return err
	}
	if len(replies) == 0 {
		return &exitError{code: exUnavailable, msg: "No nodes replied within time constraint"}
	}
	if *asJSON {
		merged := map[string]any{}
		for _, r := range replies {
			for k, v := range r {
				merged[k] = v
			}
		}
		b, err := protocol.AppendJSON(nil, merged)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	for _, r := range replies {
		for node, v := range r {
			status, body := pretty(v)
			fmt.Fprintf(stdout, "->  %s: %s\n%s\n", node, status, indent(body, 4))
		}
	}
	if kind == "inspect" {
		word := "nodes"
		if len(replies) == 1 {
			word = "node"
		}
		fmt.Fprintf(stdout, "\n%d %s online.\n", len(replies), word)
	}
	return nil
}

// compileArguments maps positional arguments to the command's keyword
// arguments, as Celery's _compile_arguments does.
func compileArguments(method string, meta remoteCommand, pos []string) (map[string]any, error) {
	out := map[string]any{}
	i := 0
	for ; i < len(pos) && i < len(meta.args); i++ {
		name := meta.args[i]
		switch name {
		case "soft", "hard":
			f, err := strconv.ParseFloat(pos[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %s must be seconds, got %q", method, name, pos[i])
			}
			out[name] = f
		case "safe":
			out[name] = pos[i] == "true" || pos[i] == "1" || pos[i] == "True"
		default:
			out[name] = pos[i]
		}
	}
	if meta.variadic != "" {
		list := []any{}
		for _, s := range pos[i:] {
			list = append(list, s)
		}
		out[meta.variadic] = list
	} else if i < len(pos) {
		return nil, fmt.Errorf("command %q takes arguments: %s", method, meta.help)
	}
	return out, nil
}

// pretty renders a reply as Celery's CLI does: lists as "* item", ok/error
// dicts as their message, other dicts as sorted, indented JSON.
func pretty(v any) (status, body string) {
	switch x := v.(type) {
	case []any:
		if len(x) == 0 {
			return "OK", "- empty -"
		}
		lines := make([]string, len(x))
		for i, item := range x {
			if s, ok := item.(string); ok {
				lines[i] = "* " + s
			} else {
				b, _ := json.Marshal(item)
				lines[i] = "* " + string(b)
			}
		}
		return "OK", strings.Join(lines, "\n")
	case map[string]any:
		if msg, ok := x["ok"]; ok {
			_, b := pretty(msg)
			return "OK", indent(b, 4)
		}
		if msg, ok := x["error"]; ok {
			_, b := pretty(msg)
			return "ERROR", indent(b, 4)
		}
		b, _ := json.MarshalIndent(x, "", "    ") // encoding/json sorts keys, as sort_keys=True
		return "OK", string(b)
	case string:
		return "OK", x
	case nil:
		return "OK", "None"
	}
	return "OK", fmt.Sprint(v)
}

func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = pad + l
	}
	return strings.Join(lines, "\n")
}
