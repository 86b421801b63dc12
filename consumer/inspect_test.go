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

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRevokeBeforeRunAndTerminate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		started := make(chan string, 10)
		mux.HandleFunc("block", func(ctx context.Context, r *consumer.Request) (any, error) {
			started <- r.ID
			<-ctx.Done()
			return nil, ctx.Err()
		})
		mux.HandleFunc("add", func(ctx context.Context, r *consumer.Request) (any, error) { return int64(1), nil })
		b, be, w := consumertest.StartWorker(t, mux, consumer.Config{})

		// Revoked before it arrives: discarded at receipt, REVOKED, acked.
		w.Remote().Revoke(context.Background(), []string{"t-early"}, false)
		be.Wait(t, "t-early", results.Revoked)
		b.Send(t, "1", msg("t-early", "add"))
		b.WaitEvent(t, "ack:1")
		if !w.Remote().IsRevoked("t-early") {
			t.Error("t-early not remembered as revoked")
		}

		// Running: terminate cancels its context; REVOKED terminated.
		b.Send(t, "2", msg("t-run", "block"))
		if id := <-started; id != "t-run" {
			t.Fatalf("started %s", id)
		}
		if a := w.Remote().Active(); len(a) != 1 || a[0].ID != "t-run" || a[0].TimeStart.IsZero() || !a[0].Acknowledged {
			t.Fatalf("active = %+v", a)
		}
		if got := w.Remote().Revoke(context.Background(), []string{"t-run"}, true); len(got) != 1 {
			t.Fatalf("terminated %v", got)
		}
		// A task running here records its own outcome, as in Celery 5.7:
		// one REVOKED, "terminated", when its handler returns.
		m := be.Wait(t, "t-run", results.Revoked)
		if exc, _ := m.Result.(*results.Exception); exc == nil || exc.Message[0] != "terminated" {
			t.Errorf("stored %+v", m.Result)
		}
		waitFor(t, "no active task", func() bool { return len(w.Remote().Active()) == 0 })
		if got := be.States("t-run"); len(got) != 1 {
			t.Errorf("states of t-run %v, want one REVOKED", got)
		}
	})
}

// The revoke command stores REVOKED only where no worker has taken the task
// over, as Celery 5.7's _revoke: over PENDING (nothing stored), RECEIVED,
// RETRY or REJECTED, never over a ready state or another worker's STARTED
// or custom state.
func TestRevokeStoresOnlyOverStatesNobodyOwns(t *testing.T) {
	for _, tc := range []struct {
		before string // "" stores nothing first
		stored bool
	}{
		{"", true},
		{results.Retry, true},
		{results.Started, false},
		{"PROGRESS", false},
		{results.Success, false},
		{results.Failure, false},
	} {
		t.Run("over "+tc.before, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				_, be, w := consumertest.StartWorker(t, consumer.NewMux(), consumer.Config{})
				ctx := context.Background()
				if tc.before != "" {
					if err := be.Store(ctx, &results.Meta{TaskID: "t-1", Status: tc.before}); err != nil {
						t.Fatal(err)
					}
				}
				w.Remote().Revoke(ctx, []string{"t-1"}, false)
				m, _ := be.Get(ctx, "t-1")
				if got := m.Status == results.Revoked; got != tc.stored {
					t.Errorf("revoke over %q left %s, want REVOKED stored %v", tc.before, m.Status, tc.stored)
				}
				if !w.Remote().IsRevoked("t-1") {
					t.Error("t-1 not flagged as revoked")
				}
			})
		})
	}
}

func TestScheduledAndReserved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		release := make(chan struct{})
		mux.HandleFunc("block", func(ctx context.Context, r *consumer.Request) (any, error) { <-release; return nil, nil })
		b, _, w := consumertest.StartWorker(t, mux, consumer.Config{Concurrency: 1})
		defer close(release)
		eta := msg("t-eta", "block")
		eta.ETA = time.Now().Add(time.Hour)
		b.Send(t, "1", eta)
		b.Send(t, "2", msg("t-a", "block"))
		b.Send(t, "3", msg("t-b", "block"))
		waitFor(t, "one active, one reserved, one scheduled", func() bool {
			return len(w.Remote().Active()) == 1 && len(w.Remote().Reserved()) == 1 && len(w.Remote().Scheduled()) == 1
		})
		if s := w.Remote().Scheduled()[0]; s.ID != "t-eta" || s.ETA.IsZero() {
			t.Errorf("scheduled %+v", s)
		}
		q := w.Remote().Query([]string{"t-a", "t-b", "t-eta", "nope"})
		if len(q) != 3 || q["t-a"].State != consumer.StateActive || q["t-b"].State != consumer.StateReserved {
			t.Errorf("query = %v", q)
		}
		if n := w.Remote().TotalByTask()["block"]; n != 3 {
			t.Errorf("total = %d", n)
		}
	})
}

func TestRateLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		mux.HandleFunc("add", func(ctx context.Context, r *consumer.Request) (any, error) { return int64(1), nil })
		b, be, w := consumertest.StartWorker(t, mux, consumer.Config{Concurrency: 4})
		if err := w.Remote().SetRateLimit("nope", "1/s"); !errors.Is(err, consumer.ErrUnknownTask) {
			t.Errorf("unknown task: %v", err)
		}
		if err := w.Remote().SetRateLimit("add", "10/x"); !errors.Is(err, consumer.ErrBadRateLimit) {
			t.Errorf("bad limit: %v", err)
		}
		if err := w.Remote().SetRateLimit("add", "600/m"); err != nil { // 10/s
			t.Fatal(err)
		}
		if got := w.Remote().Registered(); len(got) != 1 || got[0].RateLimit != "600/m" {
			t.Errorf("registered = %+v", got)
		}
		start := time.Now()
		for i, id := range []string{"r1", "r2", "r3", "r4"} {
			b.Send(t, string(rune('a'+i)), msg(id, "add"))
		}
		for _, id := range []string{"r1", "r2", "r3", "r4"} {
			be.WaitAny(t, id, results.Success)
		}
		// Four starts at 10/s with a burst of 1 need at least 300 ms.
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Errorf("4 tasks at 10/s ran in %v", d)
		}
		if err := w.Remote().SetRateLimit("add", ""); err != nil || w.Remote().RateLimit("add") != "" {
			t.Errorf("disabling: %v", err)
		}
	})
}

func TestParseRateLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, tc := range []struct {
			in   string
			want float64
			bad  bool
		}{
			{"10/s", 10, false}, {"120/m", 2, false}, {"3600/h", 1, false}, {"5", 5, false},
			{"", 0, false}, {"0", 0, false}, {"1/d", 0, true}, {"x/s", 0, true}, {"-1/s", 0, true},
		} {
			got, err := consumer.ParseRateLimit(tc.in)
			if (err != nil) != tc.bad || got != tc.want {
				t.Errorf("ParseRateLimit(%q) = %v, %v", tc.in, got, err)
			}
		}
	})
}

func TestAddAndCancelQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		_, _, w := consumertest.StartWorker(t, mux, consumer.Config{Queues: []broker.Queue{{Name: "a"}, {Name: "b"}}})
		waitFor(t, "consuming", w.Consuming)
		if err := w.Remote().AddQueue(broker.Queue{Name: "c"}); err != nil {
			t.Fatal(err)
		}
		if err := w.Remote().AddQueue(broker.Queue{Name: "a"}); !errors.Is(err, consumer.ErrAlreadyConsume) {
			t.Errorf("adding a consumed queue: %v", err)
		}
		if err := w.Remote().CancelQueue("a"); err != nil {
			t.Fatal(err)
		}
		if err := w.Remote().CancelQueue("zzz"); !errors.Is(err, consumer.ErrUnknownQueue) {
			t.Errorf("cancel unknown: %v", err)
		}
		var names []string
		for _, q := range w.Remote().Queues() {
			names = append(names, q.Name)
		}
		if len(names) != 2 || names[0] != "c" || names[1] != "b" {
			t.Errorf("queues after add c, cancel a: %v", names)
		}
	})
}

func TestShutdownCommand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		_, _, w := consumertest.StartWorker(t, mux, consumer.Config{})
		waitFor(t, "consuming", w.Consuming)
		go func() { _ = w.Shutdown(context.Background()) }()
		waitFor(t, "stopped consuming", func() bool { return !w.Consuming() })
	})
}
