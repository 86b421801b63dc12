package results_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gocelery/gocelery/results"
)

// waitResult is what a Wait running in a goroutine returned.
type waitResult struct {
	meta *results.Meta
	err  error
}

func startWait(ctx context.Context, r *results.Redis, id string) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		m, err := r.Wait(ctx, id)
		ch <- waitResult{m, err}
	}()
	return ch
}

// TestWaitStoredLater: another goroutine stores STARTED, a custom state,
// then SUCCESS; Wait skips the unready states and returns SUCCESS as soon
// as it is published (well before the recheck interval).
func TestWaitStoredLater(t *testing.T) {
	tests := []struct {
		name  string
		final *results.Meta
	}{
		{"success", &results.Meta{TaskID: "w", Status: results.Success, Result: int64(42)}},
		{"failure", &results.Meta{TaskID: "w", Status: results.Failure, Result: errors.New("bad")}},
		{"revoked", &results.Meta{TaskID: "w", Status: results.Revoked, Result: results.TaskRevokedError("revoked"), NullChildren: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newBackend(t, results.Config{RecheckInterval: time.Minute})
			ctx := ctxTimeout(t, 20*time.Second)
			waited := startWait(ctx, r, "w")
			time.Sleep(200 * time.Millisecond) // let Wait subscribe and find nothing
			for _, m := range []*results.Meta{
				{TaskID: "w", Status: results.Started, Result: results.StartedResult(1, "w@h")},
				{TaskID: "w", Status: "PROGRESS", Result: map[string]any{"current": int64(1)}},
			} {
				if err := r.Store(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case got := <-waited:
				t.Fatalf("Wait returned before a ready state: %+v, %v", got.meta, got.err)
			case <-time.After(200 * time.Millisecond):
			}
			start := time.Now()
			if err := r.Store(ctx, tc.final); err != nil {
				t.Fatal(err)
			}
			select {
			case got := <-waited:
				if got.err != nil {
					t.Fatal(got.err)
				}
				if got.meta.Status != tc.final.Status || got.meta.TaskID != "w" {
					t.Errorf("Wait = %+v", got.meta)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("Wait took %v after the PUBLISH", d)
				}
			case <-ctx.Done():
				t.Fatal("Wait did not return after the state was stored")
			}
		})
	}
}

// TestWaitAlreadyStored: the result exists before Wait is called.
func TestWaitAlreadyStored(t *testing.T) {
	r, _ := newBackend(t, results.Config{RecheckInterval: time.Minute})
	ctx := ctxTimeout(t, 10*time.Second)
	if err := r.Store(ctx, &results.Meta{TaskID: "early", Status: results.Success, Result: "v"}); err != nil {
		t.Fatal(err)
	}
	m, err := r.Wait(ctx, "early")
	if err != nil {
		t.Fatal(err)
	}
	if m.Status != results.Success || m.Result != "v" {
		t.Errorf("Wait = %+v", m)
	}
}

// TestWaitTimeout: nothing is ever stored, so Wait ends with the context.
func TestWaitTimeout(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		started bool
		want    error
	}{
		{"nothing stored", 300 * time.Millisecond, false, context.DeadlineExceeded},
		{"stuck in STARTED", 300 * time.Millisecond, true, context.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newBackend(t, results.Config{RecheckInterval: 100 * time.Millisecond})
			if tc.started {
				if err := r.Store(context.Background(), &results.Meta{TaskID: "slow", Status: results.Started}); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			start := time.Now()
			m, err := r.Wait(ctx, "slow")
			if !errors.Is(err, tc.want) || m != nil {
				t.Fatalf("Wait = %+v, %v; want %v", m, err, tc.want)
			}
			if d := time.Since(start); d < tc.timeout || d > tc.timeout+2*time.Second {
				t.Errorf("Wait returned after %v, timeout %v", d, tc.timeout)
			}
		})
	}
	t.Run("cancel", func(t *testing.T) {
		r, _ := newBackend(t, results.Config{})
		ctx, cancel := context.WithCancel(context.Background())
		waited := startWait(ctx, r, "never")
		time.Sleep(100 * time.Millisecond)
		cancel()
		select {
		case got := <-waited:
			if !errors.Is(got.err, context.Canceled) {
				t.Errorf("Wait = %+v, %v; want context.Canceled", got.meta, got.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Wait ignored cancellation")
		}
	})
}

// TestWaitMissedPublish: the state appears without a PUBLISH (as if the
// message was lost while the subscription reconnected); the periodic
// re-read finds it.
func TestWaitMissedPublish(t *testing.T) {
	r, c := newBackend(t, results.Config{RecheckInterval: 200 * time.Millisecond})
	ctx := ctxTimeout(t, 10*time.Second)
	waited := startWait(ctx, r, "quiet")
	time.Sleep(100 * time.Millisecond)
	raw, err := (&results.Meta{TaskID: "quiet", Status: results.Success, Result: "found"}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, r.TaskKey("quiet"), raw, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-waited:
		if got.err != nil || got.meta.Result != "found" {
			t.Errorf("Wait = %+v, %v", got.meta, got.err)
		}
	case <-ctx.Done():
		t.Fatal("Wait never re-read the key")
	}
}

// TestWaitGarbageMessage: an unparsable message on the channel makes Wait
// consult the key instead of failing.
func TestWaitGarbageMessage(t *testing.T) {
	r, c := newBackend(t, results.Config{RecheckInterval: time.Minute})
	ctx := ctxTimeout(t, 10*time.Second)
	waited := startWait(ctx, r, "g")
	time.Sleep(200 * time.Millisecond)
	raw, _ := (&results.Meta{TaskID: "g", Status: results.Success, Result: "ok"}).Encode()
	if err := c.Set(ctx, r.TaskKey("g"), raw, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, r.TaskKey("g"), "garbage").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-waited:
		if got.err != nil || got.meta.Result != "ok" {
			t.Errorf("Wait = %+v, %v", got.meta, got.err)
		}
	case <-ctx.Done():
		t.Fatal("Wait did not return")
	}
}
