package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/interop/tasks"
	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
	"github.com/gocelery/gocelery/worker"
)

// chordBench runs chord([interop.add(i, i) for i < n], interop.xsum()) built
// by the Go producer through an in-process Go worker, and prints the time
// from apply to the body's result and the time the join part of it took.
func chordBench(brokerURL, redisURL string, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b, err := worker.DialBroker(ctx, brokerURL, worker.DialConfig{})
	if err != nil {
		return err
	}
	defer b.Close()
	backend, err := results.OpenRedis(redisURL, results.Config{})
	if err != nil {
		return err
	}
	defer backend.Close()
	q := fmt.Sprintf("bench.chord.%d", os.Getpid())
	defer deleteQueue(brokerURL, q)
	mux := consumer.NewMux()
	tasks.Setup(mux, backend)
	timed := &timedBackend{ChordBackend: backend}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	w, err := consumer.New(b, backend, mux, consumer.Config{
		Queues: []broker.Queue{{Name: q}}, DefaultQueue: q, Logger: logger,
		Workflow: producer.NewWorkflow(producer.New(b, backend, producer.Config{DefaultQueue: q}), timed, logger),
	})
	if err != nil {
		return err
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() { stop(); <-done }()

	p := producer.New(b, backend, producer.Config{DefaultQueue: q})
	header := make([]protocol.Signature, n)
	for i := range header {
		header[i] = producer.Sig("interop.add", i, i)
	}
	start := time.Now()
	r, err := p.Apply(ctx, producer.Chord(header, producer.Sig("interop.xsum")), nil)
	if err != nil {
		return err
	}
	sent := time.Since(start)
	if _, err := r.Get(ctx); err != nil {
		return err
	}
	total := time.Since(start)
	fmt.Printf("chord of %d interop.add + interop.xsum, Go producer and Go worker (concurrency %d): sent in %v, body result after %v; "+
		"join: %v in %d chord_part_return calls (%.0f µs each)\n",
		n, w.Concurrency(), sent.Round(time.Millisecond), total.Round(time.Millisecond),
		timed.total().Round(time.Millisecond), timed.calls(), float64(timed.total().Microseconds())/float64(max(timed.calls(), 1)))
	return nil
}

// timedBackend measures the chord join's Redis calls.
type timedBackend struct {
	producer.ChordBackend
	mu    sync.Mutex
	sum   time.Duration
	count int
}

func (t *timedBackend) ChordPartReturn(ctx context.Context, p results.ChordPart) (*results.ChordJoin, error) {
	start := time.Now()
	j, err := t.ChordBackend.ChordPartReturn(ctx, p)
	d := time.Since(start)
	t.mu.Lock()
	t.sum += d
	t.count++
	t.mu.Unlock()
	return j, err
}

func (t *timedBackend) total() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sum
}

func (t *timedBackend) calls() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.count
}
