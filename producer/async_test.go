package producer

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/gocelery/gocelery/broker"
)

// asyncRecorder is a recorder whose PublishAsync defers each confirm to
// the wait; publishes to the "refused" routing key are nacked.
type asyncRecorder struct {
	recorder
	waits atomic.Int32
}

var errRefused = errors.New("refused")

func (r *asyncRecorder) PublishAsync(ctx context.Context, p broker.Publishing) (func(context.Context) error, error) {
	if err := r.Publish(ctx, p); err != nil {
		return nil, err
	}
	return func(context.Context) error {
		r.waits.Add(1)
		if p.RoutingKey == "refused" {
			return errRefused
		}
		return nil
	}, nil
}

func TestSendTasksAndSent(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		calls      []Call
		wantErr    bool
		wantNil    []bool
		wantWaits  int32
		wantCopies int
	}{
		{"all confirmed", []Call{{Name: "a"}, {Name: "b", Args: []any{1}}}, false, []bool{false, false}, 2, 2},
		{"one refused", []Call{{Name: "a"}, {Name: "b", Options: []Option{Queue("refused")}}, {Name: "c"}},
			true, []bool{false, true, false}, 3, 3},
		{"empty", nil, false, nil, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &asyncRecorder{}
			p := New(b, nil, Config{DefaultQueue: "q"})
			rs, err := p.SendTasks(ctx, tc.calls)
			if (err != nil) != tc.wantErr || (err != nil && !errors.Is(err, errRefused)) {
				t.Fatalf("SendTasks error %v, want error %v", err, tc.wantErr)
			}
			for i, r := range rs {
				if (r == nil) != tc.wantNil[i] {
					t.Errorf("result %d: %v, want nil %v", i, r, tc.wantNil[i])
				}
			}
			if got := b.waits.Load(); got != tc.wantWaits {
				t.Errorf("waits %d, want %d", got, tc.wantWaits)
			}
			if len(b.sent) != tc.wantCopies {
				t.Errorf("%d messages published, want %d", len(b.sent), tc.wantCopies)
			}
		})
	}
}

// Sent keeps the outcome: a second call does not wait (or send) again.
func TestSentKeepsItsOutcome(t *testing.T) {
	ctx := context.Background()
	b := &asyncRecorder{}
	p := New(b, nil, Config{DefaultQueue: "refused"})
	r, err := p.SendTaskAsync(ctx, "t", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := r.Sent(ctx); !errors.Is(err, errRefused) {
			t.Fatalf("Sent: %v, want errRefused", err)
		}
	}
	if n := b.waits.Load(); n != 1 {
		t.Errorf("wait called %d times, want once", n)
	}
	// A broker without PublishAsync: SendTaskAsync is SendTask, Sent is nil.
	r, err = New(&recorder{}, nil, Config{DefaultQueue: "q"}).SendTaskAsync(ctx, "t", nil, nil)
	if err != nil || r.Sent(ctx) != nil {
		t.Fatalf("SendTaskAsync on a plain broker: %v, %v", err, r.Sent(ctx))
	}
}
