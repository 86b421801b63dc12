package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/consumertest"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// A request whose message the broker has given back (its channel was
// lost) is delivered again, so the copy in the worker must not run,
// wherever it waits: for a free slot, for its ETA, or for its rate limit.
// Before the fix each of these ran twice after a reconnect.
func TestStaleRequestsDoNotRun(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup sends "victim" (tag "v") so that it waits, marks it stale,
		// then lets it go on.
		setup func(t *testing.T, b *consumertest.Broker, w *consumer.Worker, release chan struct{})
	}{
		{"waiting for a slot", func(t *testing.T, b *consumertest.Broker, _ *consumer.Worker, release chan struct{}) {
			b.Send(t, "blocker", msg("b1", "block"))
			b.Send(t, "v", msg("v1", "victim"))
			time.Sleep(50 * time.Millisecond)
			b.MarkStale("v")
			close(release)
		}},
		{"held for its ETA", func(t *testing.T, b *consumertest.Broker, _ *consumer.Worker, release chan struct{}) {
			close(release)
			b.Send(t, "v", &protocol.Message{ID: "v1", Task: "victim", ETA: time.Now().Add(300 * time.Millisecond)})
			time.Sleep(50 * time.Millisecond)
			b.MarkStale("v")
		}},
		{"waiting for its rate limit", func(t *testing.T, b *consumertest.Broker, w *consumer.Worker, release chan struct{}) {
			close(release)
			if err := w.Remote().SetRateLimit("victim", "2/s"); err != nil {
				t.Fatal(err)
			}
			b.Send(t, "first", msg("f1", "victim"))
			b.WaitEvent(t, "ack:first")
			b.Send(t, "v", msg("v1", "victim")) // waits ~0.5 s for a token
			time.Sleep(100 * time.Millisecond)
			b.MarkStale("v")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mux := consumer.NewMux()
				release := make(chan struct{})
				var ran atomic.Int32
				mux.HandleFunc("block", func(ctx context.Context, r *consumer.Request) (any, error) { <-release; return nil, nil })
				mux.HandleFunc("victim", func(ctx context.Context, r *consumer.Request) (any, error) {
					if r.ID == "v1" {
						ran.Add(1)
					}
					return nil, nil
				})
				b, be, w := consumertest.StartWorker(t, mux, consumer.Config{Concurrency: 1, PrefetchMultiplier: 4})
				tc.setup(t, b, w, release)
				time.Sleep(1500 * time.Millisecond)
				if n := ran.Load(); n != 0 {
					t.Fatalf("the stale copy ran %d times", n)
				}
				if st := be.States("v1"); len(st) != 0 {
					t.Errorf("states stored for the stale copy: %v", st)
				}
				settled := slices.Contains(b.Acks(), "v")
				_, rejected := b.Rejected("v")
				if settled || rejected {
					t.Error("the stale copy was settled")
				}
				if s := w.Stats(); s.HeldETA != 0 || s.Reserved != 0 || s.Prefetch != 4 {
					t.Errorf("stats after the drop = %+v, want nothing held and the base prefetch", s)
				}
			})
		})
	}
}

// Cold shutdown with a running late-ack task, as Celery settles a job
// whose pool process died (WorkerLostError).
func TestColdShutdownIsWorkerLost(t *testing.T) {
	for _, tc := range []struct {
		name               string
		acksLate, rejectWL bool
		wantEvent          string
		wantStored         bool
	}{
		{"acks_late + reject_on_worker_lost: requeued, nothing stored", true, true, "reject:1:true", false},
		{"acks_late: FAILURE WorkerLostError, acked", true, false, "ack:1", true},
		{"early ack: FAILURE WorkerLostError", false, false, "ack:1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mux := consumer.NewMux()
				started := make(chan struct{})
				mux.HandleFunc("long", func(ctx context.Context, r *consumer.Request) (any, error) {
					close(started)
					<-ctx.Done()
					return nil, ctx.Err()
				})
				b, be := consumertest.NewBroker(), consumertest.NewBackend()
				w, err := consumer.New(b, be, mux, consumer.Config{Queues: []broker.Queue{{Name: "q"}}, Concurrency: 1,
					AcksLate: tc.acksLate, RejectOnWorkerLost: tc.rejectWL, ShutdownTimeout: time.Hour})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- w.Run(ctx) }()
				b.Send(t, "1", msg("l1", "long"))
				<-started
				cancel()
				w.Kill()
				b.WaitEvent(t, tc.wantEvent)
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				st := be.States("l1")
				if !tc.wantStored {
					if len(st) != 0 {
						t.Fatalf("stored %v, want nothing", st)
					}
					return
				}
				if !slices.Equal(st, []string{results.Failure}) {
					t.Fatalf("stored %v, want one FAILURE", st)
				}
				exc := be.Metas()[0].Result.(*results.Exception)
				if exc.Type != "WorkerLostError" || exc.Module != "billiard.exceptions" {
					t.Errorf("exception = %+v", exc)
				}
			})
		})
	}
}

// Soft shutdown (worker_soft_shutdown_timeout): Kill first lets running
// tasks finish for the timeout; one that finishes in time succeeds, one
// that does not is then interrupted and requeued; a second Kill skips
// what is left of the wait.
func TestSoftShutdown(t *testing.T) {
	for _, tc := range []struct {
		name       string
		taskTakes  time.Duration
		secondKill bool
		want       string
	}{
		{"finishes within the soft timeout", 100 * time.Millisecond, false, "ack:1"},
		{"outlasts it: requeued", time.Hour, false, "reject:1:true"},
		{"second kill cuts the wait", 200 * time.Millisecond, true, "reject:1:true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mux := consumer.NewMux()
				started := make(chan struct{})
				mux.HandleFunc("long", func(ctx context.Context, r *consumer.Request) (any, error) {
					close(started)
					select {
					case <-time.After(tc.taskTakes):
						return "done", nil
					case <-ctx.Done():
						return nil, ctx.Err()
					}
				})
				b, be := consumertest.NewBroker(), consumertest.NewBackend()
				w, _ := consumer.New(b, be, mux, consumer.Config{Queues: []broker.Queue{{Name: "q"}}, Concurrency: 1,
					AcksLate: true, RejectOnWorkerLost: true, ShutdownTimeout: time.Hour,
					SoftShutdownTimeout: 500 * time.Millisecond})
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- w.Run(ctx) }()
				b.Send(t, "1", msg("l1", "long"))
				<-started
				cancel()
				begin := time.Now()
				w.Kill()
				if tc.secondKill {
					w.Kill()
				}
				b.WaitEvent(t, tc.want)
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				took := time.Since(begin)
				switch {
				case tc.want == "ack:1":
					be.Wait(t, "l1", results.Success)
				case tc.secondKill && took > 400*time.Millisecond:
					t.Errorf("second kill: shutdown took %v, want well under the 500 ms soft timeout", took)
				case !tc.secondKill && took < 450*time.Millisecond:
					t.Errorf("interrupted after %v, before the 500 ms soft timeout", took)
				}
			})
		})
	}
}

// Handlers left running past their hard limit are capped: past
// MaxAbandoned the worker stops and Run says why, so a supervisor
// restarts it instead of goroutines and connections growing without bound.
func TestAbandonedHandlersAreCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		hang := make(chan struct{})
		defer close(hang)
		mux.HandleFunc("hangs", func(ctx context.Context, r *consumer.Request) (any, error) { <-hang; return nil, nil },
			consumer.TaskOptions{TimeLimit: 50 * time.Millisecond})
		b, be := consumertest.NewBroker(), consumertest.NewBackend()
		w, _ := consumer.New(b, be, mux, consumer.Config{Queues: []broker.Queue{{Name: "q"}}, Concurrency: 2, MaxAbandoned: 2, ShutdownTimeout: time.Second})
		done := make(chan error, 1)
		go func() { done <- w.Run(context.Background()) }()
		for i, id := range []string{"h1", "h2", "h3"} {
			b.Send(t, string(rune('1'+i)), msg(id, "hangs"))
			be.Wait(t, id, results.Failure) // TimeLimitExceeded
		}
		select {
		case err := <-done:
			if !errors.Is(err, consumer.ErrAbandonedLimit) {
				t.Fatalf("Run = %v, want ErrAbandonedLimit", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the worker kept running with 3 abandoned handlers, cap 2")
		}
		if s := w.Stats(); s.Abandoned != 3 {
			t.Errorf("abandoned = %d", s.Abandoned)
		}
	})
}

// add_consumer starts a new Consume, which sets the base prefetch: the
// raise for held ETA tasks must come back, or a window full of them
// starves the pool (before the fix nothing more was delivered).
func TestAddQueueKeepsTheETARaise(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		mux.HandleFunc("t", func(ctx context.Context, r *consumer.Request) (any, error) { return nil, nil })
		b, _, w := consumertest.StartWorker(t, mux, consumer.Config{Concurrency: 1, PrefetchMultiplier: 1})
		b.Send(t, "1", &protocol.Message{ID: "e1", Task: "t", ETA: time.Now().Add(time.Hour)})
		waitTrue(t, "prefetch raised", func() bool { return b.Prefetch() == 2 })
		if err := w.Remote().AddQueue(broker.Queue{Name: "other"}); err != nil {
			t.Fatal(err)
		}
		if p := b.Prefetch(); p != 2 {
			t.Fatalf("prefetch after add_consumer = %d, want 2 (1 + 1 held)", p)
		}
		if err := w.Remote().CancelQueue("other"); err != nil {
			t.Fatal(err)
		}
		if p := w.Stats().Prefetch; p != 2 || b.Prefetch() != 2 {
			t.Fatalf("prefetch after cancel_consumer = %d (broker %d), want 2", p, b.Prefetch())
		}
	})
}

// An unregistered task whose dead-letter move fails is requeued and comes
// back: FAILURE is stored once, when the move lands, and a dead-letter
// queue deleted under the worker is declared again.
func TestUnknownTaskDeadLetterRetryStoresOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, be, _ := consumertest.StartWorker(t, consumer.NewMux(), consumer.Config{})
		b.FailPublishes(1) // as if q.unregistered had been deleted
		raw, err := protocol.Encode(msg("u1", "other.app.task"))
		if err != nil {
			t.Fatal(err)
		}
		b.SendRaw("1", raw)
		b.WaitEvent(t, "reject:1:true") // requeued after the failed move
		b.SendRaw("2", raw)             // the broker delivers it again
		b.WaitEvent(t, "ack:2")
		time.Sleep(50 * time.Millisecond)
		if st := be.States("u1"); !slices.Equal(st, []string{results.Failure}) {
			t.Fatalf("stored %v, want FAILURE once", st)
		}
		n := 0
		for _, q := range b.Declared() {
			if q == "q.unregistered" {
				n++
			}
		}
		if n != 2 || len(b.Published()) != 1 {
			t.Errorf("declared q.unregistered %d times (want 2: again after it vanished), published %d", n, len(b.Published()))
		}
	})
}

// A retry keeps the request's parent and root, as Celery's
// signature_from_request does, and drops RabbitMQ's x-death headers so
// that its cycle detection does not drop the retried message.
func TestRetryKeepsParentAndDropsDeathHeaders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		mux.HandleFunc("flaky", func(ctx context.Context, r *consumer.Request) (any, error) {
			return nil, consumer.Retry(time.Hour, errors.New("again"))
		})
		b, _, _ := consumertest.StartWorker(t, mux, consumer.Config{})
		b.Send(t, "1", &protocol.Message{ID: "t1", Task: "flaky", RootID: "root", ParentID: "parent",
			Headers: map[string]any{"x-death": []any{map[string]any{"count": 1}}, "x-first-death-queue": "q", "mine": "kept"}})
		b.WaitEvent(t, "publish:q")
		p := b.Published()[0]
		re, err := protocol.Decode(&p.Raw)
		if err != nil {
			t.Fatal(err)
		}
		if re.ParentID != "parent" || re.RootID != "root" {
			t.Errorf("parent %q root %q, want the request's own", re.ParentID, re.RootID)
		}
		if _, ok := re.Headers["x-death"]; ok || re.Headers["x-first-death-queue"] != nil || re.Headers["mine"] != "kept" {
			t.Errorf("headers = %v", re.Headers)
		}
	})
}

func waitTrue(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// unreachableWorkflow fails every chord join as producer.Workflow does when
// the result backend stays unreachable through its retries.
type unreachableWorkflow struct{}

func (unreachableWorkflow) Succeeded(context.Context, *protocol.Message, any) error { return nil }
func (unreachableWorkflow) Finished(context.Context, *protocol.Message, string, any) error {
	return fmt.Errorf("chord join: %w", results.ErrUnavailable)
}

// A chord part whose join cannot reach the result backend is not acked: a
// late-ack message goes back to the queue, so the part is recorded and the
// body published when it runs again (before the fix it was acked and the
// chord never completed).
func TestChordJoinUnavailableRedelivers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		mux.HandleFunc("part", func(ctx context.Context, r *consumer.Request) (any, error) { return 1, nil })
		b, be, _ := consumertest.StartWorker(t, mux, consumer.Config{AcksLate: true, Workflow: unreachableWorkflow{}})
		b.Send(t, "1", &protocol.Message{ID: "p1", Task: "part", Group: "g1",
			Chord: &protocol.Signature{Task: "body", Options: map[string]any{"task_id": "b1"}}})
		b.WaitEvent(t, "reject:1:true")
		be.WaitAny(t, "p1", results.Success)
		if acks := b.Acks(); len(acks) != 0 {
			t.Errorf("acked %v", acks)
		}
	})
}

// On quorum queues the prefetch stays fixed (Celery's static QoS): held
// ETA tasks do not raise it, and Stats reports the prefetch in force.
func TestStaticPrefetchIsNotRaised(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		mux.HandleFunc("t", func(ctx context.Context, r *consumer.Request) (any, error) { return nil, nil })
		b, _, w := consumertest.StartWorker(t, mux, consumer.Config{Concurrency: 1, PrefetchMultiplier: 4, StaticPrefetch: true})
		b.Send(t, "1", &protocol.Message{ID: "e1", Task: "t", ETA: time.Now().Add(time.Hour)})
		time.Sleep(100 * time.Millisecond)
		if s := w.Stats(); s.HeldETA != 1 || s.Prefetch != 4 || b.Prefetch() != 4 {
			t.Fatalf("stats %+v, broker prefetch %d; want 1 held and prefetch 4", s, b.Prefetch())
		}
	})
}

// A redelivered copy of an attempt this worker early-acked lost its ack
// with the connection: it is acked, not run again (Celery runs it twice).
// A retry of it (one more retry), a copy of a task never started here,
// and a late-ack task (at least once) run.
func TestRedeliveredEarlyAckedCopyNotRunTwice(t *testing.T) {
	for _, tc := range []struct {
		name     string
		acksLate bool
		again    *protocol.Message // redelivered after "v1" ran
		wantRuns int
	}{
		{name: "same attempt", again: &protocol.Message{ID: "v1", Task: "victim"}, wantRuns: 1},
		{name: "its retry", again: &protocol.Message{ID: "v1", Task: "victim", Retries: 1}, wantRuns: 2},
		{name: "another task", again: &protocol.Message{ID: "other", Task: "victim"}, wantRuns: 2},
		{name: "late ack", acksLate: true, again: &protocol.Message{ID: "v1", Task: "victim"}, wantRuns: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mux := consumer.NewMux()
				var runs atomic.Int32
				mux.HandleFunc("victim", func(ctx context.Context, r *consumer.Request) (any, error) {
					runs.Add(1)
					return nil, nil
				})
				b, _, _ := consumertest.StartWorker(t, mux, consumer.Config{Concurrency: 2, AcksLate: tc.acksLate})
				b.Send(t, "first", &protocol.Message{ID: "v1", Task: "victim"})
				b.WaitEvent(t, "ack:first")
				b.Redeliver(t, "again", tc.again)
				b.WaitEvent(t, "ack:again")
				synctest.Wait()
				if n := int(runs.Load()); n != tc.wantRuns {
					t.Fatalf("handler ran %d times, want %d", n, tc.wantRuns)
				}
			})
		})
	}
}
