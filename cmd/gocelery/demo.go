package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/broker"
	brokerredis "github.com/gocelery/gocelery/broker/redis"
	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/interop/tasks"
	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// demoQueue is the queue the demo worker consumes.
const demoQueue = "demo"

// demoTask is one task the demo sends, and what it expects to see.
type demoTask struct {
	label     string
	msg       *protocol.Message
	final     string // the state it must end in
	sentAt    time.Time
	states    []string
	lastState string
	result    any
	doneAt    time.Duration
}

// runDemo starts an embedded Redis-protocol server, a Go worker and a
// producer, and shows tasks moving through Celery's states. Nothing is
// needed but Go: the "server" is miniredis, in this process.
func runDemo(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keep := fs.Bool("keep-running", false, "after the demo, keep the broker and worker up for a Python client until interrupted")
	addr := fs.String("addr", "127.0.0.1:0", "address of the embedded Redis-protocol server")
	verbose := fs.Bool("v", false, "show the worker's log")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	srv := miniredis.NewMiniRedis()
	if err := srv.StartAddr(*addr); err != nil {
		return fmt.Errorf("embedded redis: %w", err)
	}
	defer srv.Close()
	brokerURL := "redis://" + srv.Addr() + "/0"
	backendURL := "redis://" + srv.Addr() + "/1"

	logOut := io.Discard
	if *verbose {
		logOut = stderr
	}
	log := slog.New(slog.NewTextHandler(logOut, nil))

	bclient := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), DB: 0})
	defer bclient.Close()
	b := brokerredis.New(bclient, 0, brokerredis.Config{Logger: log})
	defer b.Close()
	backend, err := results.OpenRedis(backendURL, results.Config{})
	if err != nil {
		return err
	}
	defer backend.Close()

	mux := consumer.NewMux()
	tasks.Register(mux, backend.Client())
	w, err := consumer.New(b, backend, mux, consumer.Config{
		Queues: []broker.Queue{{Name: demoQueue}}, Concurrency: 4,
		TrackStarted: true, ResultExtended: true, Logger: log, ShutdownTimeout: 5 * time.Second,
		Workflow: producer.NewWorkerWorkflow(b, backend, producer.Config{DefaultQueue: demoQueue}, log),
	})
	if err != nil {
		return err
	}
	wctx, stopWorker := context.WithCancel(ctx)
	workerDone := make(chan error, 1)
	go func() { workerDone <- w.Run(wctx) }()
	defer func() {
		stopWorker()
		<-workerDone
	}()

	fmt.Fprintf(stdout, "gocelery demo: embedded Redis-protocol broker at %s (results in %s)\n", brokerURL, backendURL)
	fmt.Fprintf(stdout, "Go worker consuming queue %q with tasks %s\n\n", demoQueue, strings.Join(mux.Names(), ", "))

	// Subscribe before sending, as Celery's result consumer does, so no
	// state is missed.
	sub := backend.Client().PSubscribe(ctx, backend.TaskKey("*"))
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		return fmt.Errorf("subscribe to results: %w", err)
	}
	sent := demoTasks()
	start := time.Now()
	for _, t := range sent {
		if err := publish(ctx, b, t.msg); err != nil {
			return err
		}
		t.sentAt = time.Now()
		t.lastState = results.Pending
		fmt.Fprintf(stdout, "%7.3fs  sent      %-34s %s\n", time.Since(start).Seconds(), t.label, shortID(t.msg.ID))
	}
	fmt.Fprintln(stdout)
	if err := watch(ctx, sub, sent, start, stdout); err != nil {
		return err
	}
	summary(stdout, sent)
	failed := 0
	for _, t := range sent {
		if t.lastState != t.final {
			failed++
		}
	}

	fmt.Fprintf(stdout, "\nPoint a Python Celery app at it (pip install celery redis):\n\n")
	fmt.Fprintf(stdout, "    from celery import Celery\n")
	fmt.Fprintf(stdout, "    app = Celery(broker=%q, backend=%q)\n", brokerURL, backendURL)
	fmt.Fprintf(stdout, "    print(app.send_task(\"interop.add\", (2, 3), queue=%q).get(timeout=10))\n\n", demoQueue)
	if *keep {
		fmt.Fprintln(stdout, "Running until interrupted (Ctrl-C)...")
		<-ctx.Done()
	} else {
		fmt.Fprintln(stdout, "(run with --keep-running to keep the broker and worker up for it)")
	}
	if failed > 0 {
		return fmt.Errorf("%d task(s) did not end in their expected state", failed)
	}
	return nil
}

func demoTasks() []*demoTask {
	msg := func(task string, args []any, kwargs map[string]any) *protocol.Message {
		return &protocol.Message{ID: uuid.NewString(), Task: task, Args: args, Kwargs: kwargs, Origin: "gocelery-demo"}
	}
	eta := msg("interop.add", []any{int64(40), int64(2)}, nil)
	eta.ETA = time.Now().Add(1500 * time.Millisecond).UTC()
	return []*demoTask{
		{label: "interop.add(2, 3)", msg: msg("interop.add", []any{int64(2), int64(3)}, nil), final: results.Success},
		{label: "interop.echo(datetime, Decimal)", msg: msg("interop.echo", []any{time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), protocol.Decimal("1.10")}, nil), final: results.Success},
		{label: "interop.fail('boom')", msg: msg("interop.fail", []any{"boom"}, nil), final: results.Failure},
		{label: "interop.retry(2)", msg: msg("interop.retry", []any{int64(2)}, nil), final: results.Success},
		{label: "interop.progress(5, delay=0.2)", msg: msg("interop.progress", []any{int64(5)}, map[string]any{"delay": 0.2}), final: results.Success},
		{label: "interop.add(40, 2), countdown 1.5s", msg: eta, final: results.Success},
		{label: "other.app.task (not registered)", msg: msg("apps.tasks.scheduled_job.calc_post_score", nil, nil), final: results.Failure},
	}
}

func publish(ctx context.Context, b *brokerredis.Broker, m *protocol.Message) error {
	raw, err := protocol.Encode(m)
	if err != nil {
		return err
	}
	return b.Publish(ctx, broker.Publishing{Raw: *raw, RoutingKey: demoQueue})
}

// watch follows every state the worker stores, through the backend's
// PUBLISH on celery-task-meta-<id> (what Celery's result consumer listens
// to), until all tasks are ready or 20 s pass.
func watch(ctx context.Context, sub *goredis.PubSub, sent []*demoTask, start time.Time, out io.Writer) error {
	byID := map[string]*demoTask{}
	for _, t := range sent {
		byID[t.msg.ID] = t
	}
	pending := len(sent)
	record := func(m *results.Meta) {
		t := byID[m.TaskID]
		if t == nil || results.IsReady(t.lastState) {
			return
		}
		t.states = append(t.states, m.Status)
		t.lastState, t.result = m.Status, m.Result
		fmt.Fprintf(out, "%7.3fs  %-9s %-34s %s\n", time.Since(start).Seconds(), m.Status, t.label, describe(m))
		if results.IsReady(m.Status) {
			t.doneAt = time.Since(t.sentAt)
			pending--
		}
	}
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	msgs := sub.Channel()
	for pending > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout.C:
			return errors.New("demo: tasks did not finish within 20 s")
		case msg, ok := <-msgs:
			if !ok {
				return errors.New("demo: result subscription closed")
			}
			m, err := results.DecodeMeta([]byte(msg.Payload))
			if err != nil {
				return err
			}
			record(m)
		}
	}
	return nil
}

func describe(m *results.Meta) string {
	switch {
	case m.Status == results.Started:
		return ""
	case results.IsException(m.Status):
		if exc, ok := m.Result.(*results.Exception); ok {
			return exc.Error()
		}
	}
	return protocol.Repr(m.Result)
}

func summary(out io.Writer, sent []*demoTask) {
	fmt.Fprintf(out, "\n%-36s %-9s %-9s %s\n", "task", "state", "took", "states seen")
	byTime := append([]*demoTask(nil), sent...)
	sort.SliceStable(byTime, func(i, j int) bool { return byTime[i].doneAt < byTime[j].doneAt })
	ok := 0
	for _, t := range byTime {
		mark := "ok"
		if t.lastState != t.final {
			mark = "UNEXPECTED, wanted " + t.final
		} else {
			ok++
		}
		fmt.Fprintf(out, "%-36s %-9s %7.3fs  %s  %s\n", t.label, t.lastState, t.doneAt.Seconds(), strings.Join(t.states, " > "), mark)
	}
	fmt.Fprintf(out, "\n%d of %d tasks ended as expected; the unregistered one is in queue %q, not lost.\n", ok, len(sent), demoQueue+".unregistered")
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
