package consumer_test

import (
	"context"
	"errors"
	"strings"
	"sync"
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

type valueError struct{ msg string }

func (e valueError) Error() string                         { return e.msg }
func (e valueError) PythonException() (module, typ string) { return "builtins", "ValueError" }

func msg(id, task string, args ...any) *protocol.Message {
	return &protocol.Message{ID: id, Task: task, Args: args}
}

func TestSuccessEarlyAck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		acked := make(chan bool, 1)
		var b *consumertest.Broker
		mux.HandleFunc("add", func(ctx context.Context, r *consumer.Request) (any, error) {
			acked <- len(b.Acks()) == 1 // early ack happens before the handler runs
			return r.Args[0].(int64) + r.Args[1].(int64), nil
		})
		b, be, _ := consumertest.StartWorker(t, mux, consumer.Config{ResultExtended: true})
		b.Send(t, "1", msg("t1", "add", 2, 3))
		m := be.Wait(t, "t1", results.Success)
		if m.Result != int64(5) || !m.Extended || m.Name != "add" || m.Queue != "q" {
			t.Errorf("meta = %+v", m)
		}
		if !<-acked {
			t.Error("message not acked before the handler ran")
		}
	})
}

func TestAcksLateAfterHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		release := make(chan struct{})
		mux.HandleFunc("slow", func(ctx context.Context, r *consumer.Request) (any, error) {
			<-release
			return nil, nil
		}, consumer.TaskOptions{AcksLate: consumer.Bool(true)})
		b, be, _ := consumertest.StartWorker(t, mux, consumer.Config{})
		b.Send(t, "1", msg("t1", "slow"))
		time.Sleep(50 * time.Millisecond)
		early := len(b.Acks())
		if early != 0 {
			t.Fatal("acks_late task acked before it finished")
		}
		close(release)
		b.WaitEvent(t, "ack:1")
		be.Wait(t, "t1", results.Success)
	})
}

func TestFailureStoresPythonException(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		mux.HandleFunc("fail", func(ctx context.Context, r *consumer.Request) (any, error) {
			return nil, valueError{"bad input"}
		}, consumer.TaskOptions{AcksLate: consumer.Bool(true)})
		b, be, _ := consumertest.StartWorker(t, mux, consumer.Config{})
		b.Send(t, "1", msg("t1", "fail"))
		m := be.Wait(t, "t1", results.Failure)
		exc := m.Result.(*results.Exception)
		if exc.Type != "ValueError" || exc.Module != "builtins" || exc.Message[0] != "bad input" || m.Traceback == "" {
			t.Errorf("meta = %+v exc = %+v", m, exc)
		}
		b.WaitEvent(t, "ack:1") // late ack of a failure: acked (task_acks_on_failure_or_timeout)
	})
}

func TestRetryRepublishesSameID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		mux.HandleFunc("flaky", func(ctx context.Context, r *consumer.Request) (any, error) {
			return nil, consumer.Retry(2*time.Second, valueError{"try again"})
		}, consumer.TaskOptions{MaxRetries: consumer.Int(1)})
		b, be, _ := consumertest.StartWorker(t, mux, consumer.Config{})
		b.Send(t, "1", &protocol.Message{ID: "t1", Task: "flaky", RootID: "root", Properties: protocol.Properties{Priority: 3}})
		b.WaitEvent(t, "publish:q")
		m := be.Wait(t, "t1", results.Retry)
		if m.Result.(*results.Exception).Type != "ValueError" || len(m.Children) != 1 {
			t.Errorf("RETRY meta = %+v", m)
		}
		p := b.Published()[0]
		re, err := protocol.Decode(&p.Raw)
		if err != nil {
			t.Fatal(err)
		}
		if re.ID != "t1" || re.Retries != 1 || re.ParentID != "t1" || re.RootID != "root" || re.Properties.Priority != 3 || !p.Mandatory {
			t.Errorf("republished = %+v", re)
		}
		if d := time.Until(re.ETA); d < time.Second || d > 3*time.Second {
			t.Errorf("eta in %v, want ~2s", d)
		}
		// The second run is past max_retries=1: FAILURE with the reason.
		b.SendRaw("2", &p.Raw)
		// Its ETA is 2s away: the worker holds it, then runs it.
		f := be.Wait(t, "t1", results.Failure)
		if f.Result.(*results.Exception).Type != "ValueError" {
			t.Errorf("FAILURE = %+v", f.Result)
		}
	})
}

func TestUnknownTaskIsDeadLettered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, be, _ := consumertest.StartWorker(t, consumer.NewMux(), consumer.Config{})
		b.Send(t, "1", msg("t1", "apps.tasks.scheduled_job.calc_post_score"))
		m := be.Wait(t, "t1", results.Failure)
		exc := m.Result.(*results.Exception)
		if exc.Type != "NotRegistered" || exc.Module != "celery.exceptions" || exc.Message[0] != "apps.tasks.scheduled_job.calc_post_score" {
			t.Errorf("exception = %+v", exc)
		}
		b.WaitEvent(t, "ack:1")
		if len(b.Published()) != 1 || b.Published()[0].RoutingKey != "q.unregistered" || b.Published()[0].Headers["task"] != "apps.tasks.scheduled_job.calc_post_score" {
			t.Fatalf("dead-letter publish = %+v", b.Published())
		}
		if !strings.Contains(b.Published()[0].Headers["x-gocelery-reason"].(string), "not registered") || b.Declared()[0] != "q.unregistered" {
			t.Errorf("reason header / declare = %v %v", b.Published()[0].Headers["x-gocelery-reason"], b.Declared())
		}
	})
}

func TestUnknownTaskRequeuePolicy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, be, _ := consumertest.StartWorker(t, consumer.NewMux(), consumer.Config{Unknown: consumer.Requeue})
		b.Send(t, "1", msg("t1", "other.task"))
		b.WaitEvent(t, "reject:1:true")
		if s := be.States("t1"); len(s) != 0 {
			t.Errorf("states stored for a requeued unknown task: %v", s)
		}
	})
}

func TestMalformedMessagesAreDeadLettered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _, _ := consumertest.StartWorker(t, consumer.NewMux(), consumer.Config{})
		bad := []*protocol.Raw{
			{ContentType: "application/json", Headers: map[string]any{"task": "x", "id": "1"}, Body: []byte(`[[1], {`)},
			{ContentType: protocol.ContentTypePickle, Headers: map[string]any{"task": "x", "id": "2"}, Body: []byte("\x80\x04")},
			{ContentType: "application/json", Headers: map[string]any{}, Body: []byte(`"hello"`)},
		}
		for i, raw := range bad {
			tag := string(rune('a' + i))
			b.SendRaw(tag, raw)
			b.WaitEvent(t, "ack:"+tag)
		}
		if len(b.Published()) != 3 {
			t.Fatalf("published %d dead letters", len(b.Published()))
		}
		for _, p := range b.Published() {
			if p.RoutingKey != "q.malformed" || p.Headers["x-gocelery-reason"] == "" {
				t.Errorf("dead letter = %s %v", p.RoutingKey, p.Headers)
			}
		}
		if !strings.Contains(b.Published()[1].Headers["x-gocelery-reason"].(string), "pickle") {
			t.Errorf("pickle reason = %v", b.Published()[1].Headers["x-gocelery-reason"])
		}
	})
}

func TestExpiredTaskIsRevoked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		var ran atomic.Bool
		mux.HandleFunc("t", func(ctx context.Context, r *consumer.Request) (any, error) { ran.Store(true); return nil, nil })
		b, be, _ := consumertest.StartWorker(t, mux, consumer.Config{})
		b.Send(t, "1", &protocol.Message{ID: "t1", Task: "t", Expires: time.Now().Add(-time.Second)})
		m := be.Wait(t, "t1", results.Revoked)
		if exc := m.Result.(*results.Exception); exc.Type != "TaskRevokedError" || exc.Message[0] != "expired" {
			t.Errorf("REVOKED = %+v", exc)
		}
		b.WaitEvent(t, "ack:1")
		if ran.Load() {
			t.Error("expired task ran")
		}
	})
}

func TestETAHeldWithPrefetchRaised(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		ranAt := make(chan time.Time, 1)
		mux.HandleFunc("t", func(ctx context.Context, r *consumer.Request) (any, error) { ranAt <- time.Now(); return nil, nil })
		b, _, _ := consumertest.StartWorker(t, mux, consumer.Config{Concurrency: 2, PrefetchMultiplier: 4})
		eta := time.Now().Add(300 * time.Millisecond)
		b.Send(t, "1", &protocol.Message{ID: "t1", Task: "t", ETA: eta})
		time.Sleep(100 * time.Millisecond)
		if p := b.Prefetch(); p != 9 { // 2 x 4 + 1 held, as Celery's captured stats show
			t.Errorf("prefetch while holding = %d, want 9", p)
		}
		acked := len(b.Acks())
		if acked != 0 {
			t.Error("ETA task acked before it was due")
		}
		if at := <-ranAt; at.Before(eta) {
			t.Errorf("ran %v before its ETA", eta.Sub(at))
		}
		b.WaitEvent(t, "ack:1")
		time.Sleep(20 * time.Millisecond)
		if p := b.Prefetch(); p != 8 {
			t.Errorf("prefetch after = %d, want 8", p)
		}
	})
}

func TestETATaskLimitCapsPrefetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		mux.HandleFunc("t", func(ctx context.Context, r *consumer.Request) (any, error) { return nil, nil })
		b, _, w := consumertest.StartWorker(t, mux, consumer.Config{Concurrency: 1, PrefetchMultiplier: 1, ETATaskLimit: 3})
		for i := range 5 {
			b.Send(t, string(rune('a'+i)), &protocol.Message{ID: "e", Task: "t", ETA: time.Now().Add(time.Hour)})
		}
		deadline := time.Now().Add(2 * time.Second)
		for w.Stats().HeldETA < 5 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if p := b.Prefetch(); p != 1+3 {
			t.Errorf("prefetch = %d, want base 1 + limit 3", p)
		}
		if s := w.Stats(); s.Prefetch != 1+3 || s.HeldETA != 5 {
			t.Errorf("stats = %+v, want prefetch 4 (capped) with 5 held", s)
		}
	})
}

func TestTimeLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		mux.HandleFunc("soft", func(ctx context.Context, r *consumer.Request) (any, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		})
		block := make(chan struct{})
		defer close(block)
		mux.HandleFunc("hard", func(ctx context.Context, r *consumer.Request) (any, error) {
			<-block // ignores its context
			return nil, nil
		})
		mux.HandleFunc("ok", func(ctx context.Context, r *consumer.Request) (any, error) { return "fine", nil })
		b, be, w := consumertest.StartWorker(t, mux, consumer.Config{Concurrency: 1})
		b.Send(t, "1", &protocol.Message{ID: "s", Task: "soft", TimeLimit: protocol.TimeLimit{Soft: 50 * time.Millisecond}})
		if exc := be.Wait(t, "s", results.Failure).Result.(*results.Exception); exc.Type != "SoftTimeLimitExceeded" {
			t.Errorf("soft: %+v", exc)
		}
		b.Send(t, "2", &protocol.Message{ID: "h", Task: "hard", TimeLimit: protocol.TimeLimit{Hard: 50 * time.Millisecond}})
		if exc := be.Wait(t, "h", results.Failure).Result.(*results.Exception); exc.Type != "TimeLimitExceeded" || exc.Message[0] != 0.05 {
			t.Errorf("hard: %+v", exc)
		}
		// With concurrency 1 the worker is still healthy after abandoning "hard".
		b.Send(t, "3", msg("ok1", "ok"))
		be.Wait(t, "ok1", results.Success)
		if w.Stats().Abandoned != 1 {
			t.Errorf("abandoned = %d", w.Stats().Abandoned)
		}
	})
}

func TestPanicIsFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		mux.HandleFunc("boom", func(ctx context.Context, r *consumer.Request) (any, error) { panic("kaboom") })
		b, be, _ := consumertest.StartWorker(t, mux, consumer.Config{})
		b.Send(t, "1", msg("t1", "boom"))
		m := be.Wait(t, "t1", results.Failure)
		if !strings.Contains(m.Traceback, "kaboom") || !strings.Contains(m.Traceback, "goroutine") {
			t.Errorf("traceback = %q", m.Traceback)
		}
	})
}

func TestRejectIgnoreAndIgnoreResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		late := consumer.TaskOptions{AcksLate: consumer.Bool(true)}
		mux.HandleFunc("requeue", func(ctx context.Context, r *consumer.Request) (any, error) {
			return nil, &consumer.RejectError{Reason: "later", Requeue: true}
		}, late)
		mux.HandleFunc("drop", func(ctx context.Context, r *consumer.Request) (any, error) {
			return nil, &consumer.RejectError{Reason: "nope", Requeue: false}
		}, late)
		mux.HandleFunc("ignore", func(ctx context.Context, r *consumer.Request) (any, error) { return nil, consumer.ErrIgnore }, late)
		mux.HandleFunc("quiet", func(ctx context.Context, r *consumer.Request) (any, error) { return 1, nil })
		b, be, _ := consumertest.StartWorker(t, mux, consumer.Config{})
		b.Send(t, "1", msg("r1", "requeue"))
		b.WaitEvent(t, "reject:1:true")
		b.Send(t, "2", msg("r2", "drop"))
		b.WaitEvent(t, "reject:2:false")
		if exc := be.Wait(t, "r2", results.Failure).Result.(*results.Exception); exc.Type != "Reject" {
			t.Errorf("reject FAILURE = %+v", exc)
		}
		b.Send(t, "3", msg("i1", "ignore"))
		b.WaitEvent(t, "ack:3")
		b.Send(t, "4", &protocol.Message{ID: "q1", Task: "quiet", IgnoreResult: true})
		b.WaitEvent(t, "ack:4")
		time.Sleep(50 * time.Millisecond)
		for _, id := range []string{"r1", "i1", "q1"} {
			if s := be.States(id); len(s) != 0 {
				t.Errorf("%s stored %v", id, s)
			}
		}
	})
}

func TestUpdateStateAndTrackStarted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		mux.HandleFunc("progress", func(ctx context.Context, r *consumer.Request) (any, error) {
			for i := 1; i <= 2; i++ {
				if err := consumer.RequestFrom(ctx).UpdateState(ctx, "PROGRESS", map[string]any{"current": i, "total": 2}); err != nil {
					return nil, err
				}
			}
			return 2, nil
		})
		b, be, _ := consumertest.StartWorker(t, mux, consumer.Config{TrackStarted: true})
		b.Send(t, "1", msg("p1", "progress"))
		be.Wait(t, "p1", results.Success)
		got := strings.Join(be.States("p1"), ",")
		if got != "STARTED,PROGRESS,PROGRESS,SUCCESS" {
			t.Errorf("states = %s", got)
		}
	})
}

func TestWarmShutdownRequeuesHeldAndWaitsForRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		started, finish := make(chan struct{}), make(chan struct{})
		mux.HandleFunc("long", func(ctx context.Context, r *consumer.Request) (any, error) {
			close(started)
			<-finish
			return "done", nil
		}, consumer.TaskOptions{AcksLate: consumer.Bool(true)})
		mux.HandleFunc("later", func(ctx context.Context, r *consumer.Request) (any, error) { return nil, nil })
		b, be := consumertest.NewBroker(), consumertest.NewBackend()
		cancel, done := runOneSlot(t, b, be, mux)
		b.Send(t, "1", msg("l1", "long"))
		b.Send(t, "2", &protocol.Message{ID: "e1", Task: "later", ETA: time.Now().Add(time.Hour)})
		<-started
		time.Sleep(50 * time.Millisecond)
		cancel()
		b.WaitEvent(t, "reject:2:true") // the held ETA task goes back to the queue
		select {
		case <-done:
			t.Fatal("Run returned while a task was running")
		case <-time.After(100 * time.Millisecond):
		}
		close(finish)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if be.Wait(t, "l1", results.Success).Result != "done" {
			t.Error("running task did not finish")
		}
		if len(b.Acks()) != 1 || b.Acks()[0] != "1" {
			t.Errorf("acks = %v", b.Acks())
		}
	})
}

func TestColdShutdownCancelsHandlers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		started := make(chan struct{})
		cancelled := make(chan struct{})
		mux.HandleFunc("long", func(ctx context.Context, r *consumer.Request) (any, error) {
			close(started)
			<-ctx.Done()
			close(cancelled)
			return nil, ctx.Err()
		}, consumer.TaskOptions{AcksLate: consumer.Bool(true)})
		b, be := consumertest.NewBroker(), consumertest.NewBackend()
		w, _ := consumer.New(b, be, mux, consumer.Config{Queues: []broker.Queue{{Name: "q"}}, Concurrency: 1, ShutdownTimeout: time.Hour})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		b.Send(t, "1", msg("l1", "long"))
		<-started
		cancel()
		w.Kill()
		select {
		case <-cancelled:
		case <-time.After(5 * time.Second):
			t.Fatal("handler context not cancelled on cold shutdown")
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestNoQueuesIsAnError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		if _, err := consumer.New(consumertest.NewBroker(), nil, consumer.NewMux(), consumer.Config{}); err == nil || !strings.Contains(err.Error(), "no queues") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestFuncBindsArgs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type args struct {
			X     int               `json:"x"`
			Y     float64           `json:"y"`
			When  time.Time         `json:"when"`
			Tags  []string          `json:"tags"`
			Extra map[string]string `json:"extra"`
		}
		h := consumer.Func(func(ctx context.Context, a args) (string, error) {
			return a.When.Format(time.DateOnly) + ":" + strings.Join(a.Tags, "+"), nil
		})
		when := time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)
		tests := []struct {
			args    []any
			kwargs  map[string]any
			want    any
			wantErr string
		}{
			{[]any{int64(1), 2.5, when}, map[string]any{"tags": []any{"a", "b"}}, "2030-01-02:a+b", ""},
			{nil, map[string]any{"x": int64(1), "when": when}, "2030-01-02:", ""},
			{[]any{int64(1), 2.5, when, []any{}, map[string]any{}, "extra"}, nil, nil, "takes 5 positional arguments but 6 were given"},
			{[]any{int64(1)}, map[string]any{"x": int64(2)}, nil, "multiple values for argument 'x'"},
			{nil, map[string]any{"z": int64(2)}, nil, "unexpected keyword argument 'z'"},
			{[]any{"not a number"}, nil, nil, "cannot unmarshal"},
		}
		for _, tt := range tests {
			r := &consumer.Request{Message: &protocol.Message{Task: "t", Args: tt.args, Kwargs: tt.kwargs}}
			got, err := h.ServeTask(context.Background(), r)
			if tt.wantErr != "" {
				var ae *consumer.ArgumentError
				if !errors.As(err, &ae) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("%v %v: err = %v, want %q", tt.args, tt.kwargs, err, tt.wantErr)
				}
				continue
			}
			if err != nil || got != tt.want {
				t.Errorf("%v %v: got %v, %v", tt.args, tt.kwargs, got, err)
			}
		}
	})
}

func TestEagerApply(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		mux.HandleFunc("add", func(ctx context.Context, r *consumer.Request) (any, error) {
			return r.Args[0].(int64) + r.Args[1].(int64), nil
		})
		mux.HandleFunc("retry", func(ctx context.Context, r *consumer.Request) (any, error) {
			if r.Retries < 2 {
				return nil, consumer.Retry(time.Hour, nil) // eager retries run at once
			}
			return r.Retries, nil
		}, consumer.TaskOptions{MaxRetries: consumer.Int(5)})
		mux.HandleFunc("forever", func(ctx context.Context, r *consumer.Request) (any, error) {
			return nil, consumer.Retry(0, valueError{"still bad"})
		})
		e := &consumer.Eager{Mux: mux}
		ctx := context.Background()
		if v, err := e.Apply(ctx, "add", []any{2, 3}, nil); err != nil || v != int64(5) {
			t.Errorf("add = %v, %v", v, err)
		}
		if v, err := e.Apply(ctx, "retry", nil, nil); err != nil || v != 2 {
			t.Errorf("retry = %v, %v", v, err)
		}
		if _, err := e.Apply(ctx, "forever", nil, nil); err == nil || err.Error() != "still bad" {
			t.Errorf("forever = %v", err)
		}
		var exc *results.Exception
		if _, err := e.Apply(ctx, "missing", nil, nil); !errors.As(err, &exc) || exc.Type != "NotRegistered" {
			t.Errorf("missing = %v", err)
		}
	})
}

// gatedBackend blocks every Store until open is closed, counting the
// stores under way.
type gatedBackend struct {
	*consumertest.Backend
	open    chan struct{}
	waiting atomic.Int32
}

func (g *gatedBackend) Store(ctx context.Context, m *results.Meta) error {
	g.waiting.Add(1)
	<-g.open
	return g.Backend.Store(ctx, m)
}

// An early-acked task's slot is free again once its handler returns: the
// next task runs while the last one's result is still being written,
// Concurrency still bounds the handlers, and a warm shutdown waits for the
// writes. A late-ack task keeps its slot until its result is stored and
// it is acked.
func TestSlotFreedWhileResultIsStored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		var running, most, ran atomic.Int32
		mux.HandleFunc("t", func(ctx context.Context, r *consumer.Request) (any, error) {
			n := running.Add(1)
			if n > most.Load() {
				most.Store(n)
			}
			time.Sleep(time.Millisecond)
			running.Add(-1)
			ran.Add(1)
			return nil, nil
		})
		var lateRan atomic.Int32
		mux.HandleFunc("late", func(ctx context.Context, r *consumer.Request) (any, error) {
			lateRan.Add(1)
			return nil, nil
		}, consumer.TaskOptions{AcksLate: consumer.Bool(true)})
		b := consumertest.NewBroker()
		be := &gatedBackend{Backend: consumertest.NewBackend(), open: make(chan struct{})}
		cancel, done := runOneSlot(t, b, be, mux)
		var opened sync.Once
		openStores := func() { opened.Do(func() { close(be.open) }) }
		defer func() { // a failed check must not leave the bubble blocked
			openStores()
			cancel()
			<-done
		}()
		const n = 3
		for i := range n {
			b.Send(t, string(rune('1'+i)), msg(string(rune('a'+i)), "t"))
		}
		time.Sleep(time.Second) // the bubble's clock: moves once all else is blocked
		if ran.Load() != n || be.waiting.Load() != n {
			t.Fatalf("with every store blocked: %d of %d handlers ran, %d stores waiting; want all", ran.Load(), n, be.waiting.Load())
		}
		if most.Load() != 1 {
			t.Errorf("%d handlers ran at once with Concurrency 1", most.Load())
		}
		if acks := b.Acks(); len(acks) != n {
			t.Fatalf("early acks = %v, want %d", acks, n)
		}
		b.Send(t, "L1", msg("l1", "late"))
		b.Send(t, "L2", msg("l2", "late"))
		time.Sleep(time.Second)
		if lateRan.Load() != 1 || be.waiting.Load() != n+1 {
			t.Fatalf("late-ack tasks: %d ran, %d stores waiting; want 1 and %d (the slot held until the ack)", lateRan.Load(), be.waiting.Load(), n+1)
		}
		if acks := b.Acks(); len(acks) != n {
			t.Fatalf("acks_late message acked before its result was stored: %v", acks)
		}
		cancel()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("Run returned while results were still being stored")
		default:
		}
		openStores()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		done <- nil // for the deferred receive
		if acks := b.Acks(); len(acks) != n+1 || acks[n] != "L1" {
			t.Errorf("acks = %v, want %d early and L1", acks, n)
		}
		for i := range n {
			if got := be.States(string(rune('a' + i))); len(got) != 1 || got[0] != results.Success {
				t.Errorf("task %c: states %v, want [SUCCESS]", 'a'+i, got)
			}
		}
	})
}

// runOneSlot runs a worker with Concurrency 1 on queue "q" until cancel;
// done receives what Run returned.
func runOneSlot(t *testing.T, b *consumertest.Broker, be consumer.Backend, mux *consumer.Mux) (cancel context.CancelFunc, done chan error) {
	t.Helper()
	w, err := consumer.New(b, be, mux, consumer.Config{Queues: []broker.Queue{{Name: "q"}}, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return cancel, done
}
