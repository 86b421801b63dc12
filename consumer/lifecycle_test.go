package consumer_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/consumertest"
	"github.com/gocelery/gocelery/results"
)

// A Worker runs once: a second Run, or a Run after Shutdown, returns
// ErrWorkerClosed (it used to panic with "send on closed channel").
func TestRunTwiceIsErrWorkerClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		w, err := consumer.New(consumertest.NewBroker(), nil, mux, consumer.Config{Queues: []broker.Queue{{Name: "q"}}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		waitFor(t, "consuming", w.Consuming)
		if err := w.Run(context.Background()); !errors.Is(err, consumer.ErrWorkerClosed) {
			t.Fatalf("Run while running = %v", err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err := w.Run(context.Background()); !errors.Is(err, consumer.ErrWorkerClosed) {
			t.Fatalf("Run after Run = %v", err)
		}

		never, _ := consumer.New(consumertest.NewBroker(), nil, mux, consumer.Config{Queues: []broker.Queue{{Name: "q"}}})
		if err := never.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := never.Run(context.Background()); !errors.Is(err, consumer.ErrWorkerClosed) {
			t.Fatalf("Run after Shutdown = %v", err)
		}
	})
}

// Shutdown(ctx) is warm until ctx ends, then cold: with a deadline
// shorter than a running late-ack task it returns at the deadline with
// ctx's error, and the task's message goes back to the queue
// (reject_on_worker_lost) with nothing stored. A task that finishes in
// time is acked and Shutdown returns nil.
func TestShutdownBoundedByContext(t *testing.T) {
	for _, tc := range []struct {
		name     string
		task     time.Duration
		deadline time.Duration
		wantErr  error
		want     string
	}{
		{"task outlasts the deadline", time.Hour, 200 * time.Millisecond, context.DeadlineExceeded, "reject:1:true"},
		{"task finishes in time", 50 * time.Millisecond, 5 * time.Second, nil, "ack:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mux := consumer.NewMux()
				started := make(chan struct{})
				mux.HandleFunc("long", func(ctx context.Context, r *consumer.Request) (any, error) {
					close(started)
					select {
					case <-time.After(tc.task):
						return "done", nil
					case <-ctx.Done():
						return nil, ctx.Err()
					}
				})
				b, be := consumertest.NewBroker(), consumertest.NewBackend()
				w, _ := consumer.New(b, be, mux, consumer.Config{Queues: []broker.Queue{{Name: "q"}}, Concurrency: 1,
					AcksLate: true, RejectOnWorkerLost: true, ShutdownTimeout: time.Hour})
				done := make(chan error, 1)
				go func() { done <- w.Run(context.Background()) }()
				b.Send(t, "1", msg("l1", "long"))
				<-started
				ctx, cancel := context.WithTimeout(context.Background(), tc.deadline)
				defer cancel()
				begin := time.Now()
				err := w.Shutdown(ctx)
				took := time.Since(begin)
				if !errors.Is(err, tc.wantErr) && err != tc.wantErr {
					t.Fatalf("Shutdown = %v, want %v", err, tc.wantErr)
				}
				if tc.wantErr != nil && (took < tc.deadline || took > tc.deadline+time.Second) {
					t.Errorf("Shutdown returned after %v, deadline %v", took, tc.deadline)
				}
				b.WaitEvent(t, tc.want)
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				st := be.States("l1")
				if tc.wantErr != nil && len(st) != 0 {
					t.Errorf("interrupted task stored %v", st)
				}
				if tc.wantErr == nil && (len(st) != 1 || st[0] != results.Success) {
					t.Errorf("finished task stored %v", st)
				}
			})
		})
	}
}
