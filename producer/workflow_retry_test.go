package producer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// flakyJoin is a ChordBackend whose chord part fails as unreachable for
// its first `down` calls, then completes the chord.
type flakyJoin struct {
	down, calls int
	tokens      map[string]bool
	done        int
}

func (f *flakyJoin) Store(context.Context, *results.Meta) error { return nil }
func (f *flakyJoin) ChordPartReturn(_ context.Context, p results.ChordPart) (*results.ChordJoin, error) {
	f.calls++
	f.tokens[p.Token] = true
	if f.calls <= f.down {
		return nil, fmt.Errorf("chord part: %w: %w", results.ErrUnavailable, io.ErrUnexpectedEOF)
	}
	return &results.ChordJoin{GroupID: p.GroupID, Complete: true, Results: []results.ChordResult{{TaskID: p.TaskID, State: results.Success, Result: int64(1)}}}, nil
}
func (f *flakyJoin) ChordExtendClaim(context.Context, *results.ChordJoin, int) error { return nil }
func (f *flakyJoin) ChordDone(context.Context, *results.ChordJoin) error             { f.done++; return nil }
func (f *flakyJoin) ChordFailed(context.Context, string) error                       { return nil }

func chordPartMessage() *protocol.Message {
	body := Sig("proj.xsum")
	return &protocol.Message{ID: "part", Group: "g", GroupIndex: new(int), Chord: &body}
}

// A join that fails as unreachable is retried with the same claim token,
// and the body is published once it answers; past the caller's deadline
// the error is ErrJoinUnavailable, for the consumer to leave the message
// for redelivery.
func TestChordJoinRetry(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Run("recovers", func(t *testing.T) {
		rec := &recorder{}
		f := &flakyJoin{down: 3, tokens: map[string]bool{}}
		w := NewWorkflow(New(rec, nil, Config{}), f, quiet)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Finished(ctx, chordPartMessage(), results.Success, int64(1)); err != nil {
			t.Fatal(err)
		}
		if f.calls != 4 || len(f.tokens) != 1 || len(rec.sent) != 1 || f.done != 1 {
			t.Errorf("calls %d, tokens %d, bodies published %d, cleanups %d; want 4, 1, 1, 1", f.calls, len(f.tokens), len(rec.sent), f.done)
		}
	})
	t.Run("gives up", func(t *testing.T) {
		rec := &recorder{}
		f := &flakyJoin{down: 1 << 30, tokens: map[string]bool{}}
		w := NewWorkflow(New(rec, nil, Config{}), f, quiet)
		w.join = joinTiming{first: 10 * time.Millisecond, max: 50 * time.Millisecond, retryFor: time.Minute,
			margin: 100 * time.Millisecond, claimWait: 300 * time.Millisecond}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		err := w.Finished(ctx, chordPartMessage(), results.Success, int64(1))
		if !errors.Is(err, ErrJoinUnavailable) || !errors.Is(err, results.ErrUnavailable) {
			t.Fatalf("err = %v, want ErrJoinUnavailable wrapping results.ErrUnavailable", err)
		}
		if f.calls < 2 || len(rec.sent) != 0 {
			t.Errorf("calls %d, bodies published %d; want retries and no body", f.calls, len(rec.sent))
		}
		if ctx.Err() != nil {
			t.Error("the retries used the margin left for the caller")
		}
		// Retries until 1 s - margin - claimWait, then the claim wait: a
		// claim taken by a lost reply has expired when the error returns.
		if took := time.Since(start); took < 850*time.Millisecond {
			t.Errorf("gave up after %s, want the retries (600 ms) and the claim wait (300 ms)", took)
		}
	})
}
