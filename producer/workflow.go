package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// ChordBackend is what a worker needs from the result backend to join
// chords and fail chains; *results.Redis provides it.
type ChordBackend interface {
	Store(ctx context.Context, m *results.Meta) error
	ChordPartReturn(ctx context.Context, p results.ChordPart) (*results.ChordJoin, error)
	ChordExtendClaim(ctx context.Context, j *results.ChordJoin, seconds int) error
	ChordDone(ctx context.Context, j *results.ChordJoin) error
	ChordFailed(ctx context.Context, groupID string) error
}

// Workflow continues a canvas in a worker after one of its tasks ran, as
// Celery's tracer and result backend do: callbacks and the next chain
// step on success, the chord join for every outcome, and on failure the
// chain's remaining steps marked failed and the errbacks sent. It is what
// lets a chain or chord built in Python run through Go tasks.
type Workflow struct {
	p       *Producer
	backend ChordBackend // nil: no chords, no failed chain steps stored
	log     *slog.Logger
	join    joinTiming
}

// joinTiming is how the chord join retries an unreachable backend: from
// first, doubling up to max between attempts, for at most retryFor and
// until the caller's deadline less margin (left for publishing the body)
// and claimWait. claimWait is slept after giving up on recording a part:
// by then any dispatch claim a lost reply took has expired, so a copy of
// the task redelivered after ErrJoinUnavailable can take it.
type joinTiming struct {
	first, max, retryFor, margin, claimWait time.Duration
}

var defaultJoinTiming = joinTiming{
	first: 50 * time.Millisecond, max: time.Second, retryFor: 20 * time.Second,
	margin: 2 * time.Second, claimWait: 7 * time.Second, // results' claim lives 6 s
}

// NewWorkflow returns the workflow a worker uses; p publishes the next
// tasks and backend (nil for none) joins chords.
func NewWorkflow(p *Producer, backend ChordBackend, logger *slog.Logger) *Workflow {
	if logger == nil {
		logger = slog.Default()
	}
	return &Workflow{p: p, backend: backend, log: logger, join: defaultJoinTiming}
}

func rootOf(m *protocol.Message) string {
	if m.RootID != "" {
		return m.RootID
	}
	return m.ID
}

// Succeeded sends m's callbacks and the next step of its chain with value
// as their first argument. Celery does this before it stores SUCCESS, so
// a client that sees SUCCESS can already follow the children.
func (w *Workflow) Succeeded(ctx context.Context, m *protocol.Message, value any) error {
	parent := Parent(rootOf(m), m.ID)
	switch len(m.Callbacks) {
	case 0:
	case 1:
		if _, err := w.p.Apply(ctx, m.Callbacks[0], []any{value}, parent); err != nil {
			return fmt.Errorf("callback %s: %w", m.Callbacks[0].Task, err)
		}
	default:
		// Several callbacks run as one group; group callbacks each as
		// their own, as Celery does (issue #1936).
		var plain []protocol.Signature
		for _, cb := range m.Callbacks {
			if cb.SubtaskType == protocol.SubtaskGroup {
				if _, err := w.p.Apply(ctx, cb, []any{value}, parent); err != nil {
					return fmt.Errorf("callback group: %w", err)
				}
				continue
			}
			plain = append(plain, cb)
		}
		if len(plain) > 0 {
			if _, err := w.p.Apply(ctx, Group(plain...), []any{value}, parent); err != nil {
				return fmt.Errorf("callbacks: %w", err)
			}
		}
	}
	if n := len(m.Chain); n > 0 {
		next := m.Chain[n-1]
		rest := append([]protocol.Signature(nil), m.Chain[:n-1]...)
		if _, err := w.p.Apply(ctx, next, []any{value}, parent, ChainSteps(rest...)); err != nil {
			return fmt.Errorf("chain step %s: %w", next.Task, err)
		}
	}
	return nil
}

// Finished runs after a ready state (SUCCESS, FAILURE, REVOKED) of m was
// stored: it records m's part of its chord, publishing the body when m
// completes it, and for FAILURE it fails the rest of the chain and sends
// the errbacks.
func (w *Workflow) Finished(ctx context.Context, m *protocol.Message, state string, result any) error {
	var errs []error
	if m.Chord != nil && m.Group != "" {
		if err := w.chordPart(ctx, m, state, result); err != nil {
			errs = append(errs, err)
		}
	}
	if state == results.Failure {
		exc, _ := result.(*results.Exception)
		if exc == nil {
			if err, ok := result.(error); ok {
				exc = results.ExceptionFrom(err)
			} else {
				exc = results.ExceptionFrom(fmt.Errorf("%v", result))
			}
		}
		if err := w.failChain(ctx, m.Chain, exc); err != nil {
			errs = append(errs, err)
		}
		if err := w.errbacks(ctx, m.ID, rootOf(m), m.Errbacks); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// errbacks sends each errback as a task with the failed task's id as its
// argument, as Celery does for errbacks it cannot call in-process (every
// errback, seen from Go: the request, exc, traceback form is Python's).
func (w *Workflow) errbacks(ctx context.Context, taskID, rootID string, ebs []protocol.Signature) error {
	if len(ebs) == 0 {
		return nil
	}
	if _, err := w.p.Apply(ctx, Group(ebs...), []any{taskID}, Parent(rootID, taskID)); err != nil {
		return fmt.Errorf("errbacks of %s: %w", taskID, err)
	}
	return nil
}

// failChain stores FAILURE for every remaining chain step that has an id,
// and returns the parts of chord members among them, so nothing waits on
// a step that will never run (Celery's _fail_chain).
func (w *Workflow) failChain(ctx context.Context, chain []protocol.Signature, exc *results.Exception) error {
	if w.backend == nil {
		return nil
	}
	queue := append([]protocol.Signature(nil), chain...)
	var errs []error
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		id := s.ID()
		gid, _ := s.Options["group_id"].(string)
		if id != "" {
			meta := &results.Meta{TaskID: id, Status: results.Failure, Result: exc, GroupID: gid}
			if err := w.backend.Store(ctx, meta); err != nil {
				errs = append(errs, err)
			}
		}
		if c, ok := s.Options["chord"]; ok && c != nil && id != "" && gid != "" {
			body, err := protocol.SignatureFrom(c)
			if err == nil {
				pm := &protocol.Message{ID: id, Group: gid, Chord: &body}
				if n, ok := number(s.Options["group_index"]); ok {
					i := int(n)
					pm.GroupIndex = &i
				}
				err = w.chordPart(ctx, pm, results.Failure, exc)
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
		if s.SubtaskType == protocol.SubtaskChord {
			if body, err := s.Body(); err == nil {
				queue = append(queue, body)
			}
		}
	}
	return errors.Join(errs...)
}

// chordPart records m's outcome in its chord; the part that completes the
// chord publishes the body with the header's results, or fails it with a
// ChordError when a header task failed.
func (w *Workflow) chordPart(ctx context.Context, m *protocol.Message, state string, result any) error {
	if w.backend == nil {
		return errors.New("chord part: no result backend")
	}
	// One token for every attempt: a retry after a lost reply keeps the
	// dispatch claim its first attempt may have taken.
	part := results.ChordPart{
		GroupID: m.Group, TaskID: m.ID, GroupIndex: m.GroupIndex, State: state, Result: result,
		Token: results.NewChordToken(),
	}
	var j *results.ChordJoin
	err := w.retry(ctx, m.Group, "recording the chord part", true, func() error {
		var err error
		j, err = w.backend.ChordPartReturn(ctx, part)
		return err
	})
	if err != nil || !j.Complete {
		return err
	}
	body := *m.Chord
	if exc := j.Err(); exc != nil {
		w.log.Error("Chord failed", "group", m.Group, "error", exc.Error())
		err := w.chordError(ctx, body, exc)
		return errors.Join(err, w.retry(ctx, m.Group, "dropping the failed chord's size", false, func() error {
			return w.backend.ChordFailed(ctx, m.Group)
		}))
	}
	err = w.retry(ctx, m.Group, "extending the dispatch claim", true, func() error {
		return w.backend.ChordExtendClaim(ctx, j, 0)
	})
	if errors.Is(err, results.ErrChordClaimLost) {
		w.log.Warn("Chord body not published: the dispatch claim is no longer ours", "group", m.Group)
		return nil
	}
	if err != nil {
		return err
	}
	_, err = w.p.Apply(ctx, body, []any{j.Values()}, sentBy(m)) // the header task that completed the chord is its parent
	if err != nil {
		w.log.Error("Chord callback could not be published", "group", m.Group, "error", err)
		err = w.chordError(ctx, body, results.ChordError(fmt.Sprintf("Callback error: %s", err)))
	}
	// The "done" marker the cleanup leaves is what turns a late copy of a
	// header task into a no-op instead of a second body: retry it too.
	derr := w.retry(ctx, m.Group, "cleaning up the chord", false, func() error { return w.backend.ChordDone(ctx, j) })
	if derr != nil {
		w.log.Warn("Chord cleanup failed; its keys are left to expire", "group", m.Group, "error", derr)
	}
	return err
}

// ErrJoinUnavailable is returned by Workflow.Finished when the result
// backend stayed unreachable through every retry of the chord join: the
// part may not be recorded and the body not published. The message of
// the task should be left for redelivery (not acked) if it still can be;
// running the task again records its part once. Before returning it, the
// join waits for any dispatch claim it may hold to expire, so that the
// redelivered copy can complete the chord.
var ErrJoinUnavailable = errors.New("producer: chord join: result backend unavailable")

// retry runs op until it succeeds, fails for a reason other than an
// unreachable backend (results.ErrUnavailable), or the retry budget is
// spent (see joinTiming); then the error wraps ErrJoinUnavailable. Every
// chord operation is safe to repeat (the part is recorded once per task
// id and index, the claim is matched by token). With claimWait, a retry
// that gives up first waits for any claim it may hold to expire.
func (w *Workflow) retry(ctx context.Context, group, what string, claimWait bool, op func() error) error {
	jt := w.join
	reserve := jt.margin
	if claimWait {
		reserve += jt.claimWait
	}
	deadline := time.Now().Add(jt.retryFor)
	if d, ok := ctx.Deadline(); ok && d.Add(-reserve).Before(deadline) {
		deadline = d.Add(-reserve)
	}
	delay := jt.first
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil || !errors.Is(err, results.ErrUnavailable) {
			if err == nil && attempt > 1 {
				w.log.Info("Chord join: the result backend answered again", "group", group, "step", what, "attempts", attempt)
			}
			return err
		}
		if attempt == 1 {
			w.log.Warn("Chord join: result backend unavailable, retrying", "group", group, "step", what, "error", err)
		}
		wait := delay
		last := time.Until(deadline) < delay
		if last {
			w.log.Error("Chord join: result backend unavailable, giving up", "group", group, "step", what, "attempts", attempt, "error", err)
			err = fmt.Errorf("%w: %s of %s after %d attempts: %w", ErrJoinUnavailable, what, group, attempt, err)
			if !claimWait {
				return err
			}
			wait = jt.claimWait
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			if last {
				return err
			}
			return fmt.Errorf("%w: %s of %s: %w", ErrJoinUnavailable, what, group, errors.Join(err, ctx.Err()))
		}
		if last {
			return err
		}
		delay = min(delay*2, jt.max)
	}
}

// chordError fails a chord body that will not run: FAILURE on its id, its
// errbacks sent, its chain failed (Celery's chord_error_from_stack).
func (w *Workflow) chordError(ctx context.Context, body protocol.Signature, exc *results.Exception) error {
	if body.SubtaskType == protocol.SubtaskGroup {
		members, err := body.Tasks()
		if err != nil {
			return err
		}
		var errs []error
		for _, mb := range members {
			errs = append(errs, w.chordError(ctx, mb, exc))
		}
		return errors.Join(errs...)
	}
	id := body.ID()
	if id == "" {
		id = uuid.NewString()
	}
	var errs []error
	if err := w.backend.Store(ctx, &results.Meta{TaskID: id, Status: results.Failure, Result: exc}); err != nil {
		errs = append(errs, err)
	}
	ebs, err := sigsOpt(body.Options["link_error"])
	if err == nil {
		root, _ := body.Options["root_id"].(string)
		if root == "" {
			root = id
		}
		err = w.errbacks(ctx, id, root, ebs)
	}
	errs = append(errs, err)
	chain, err := sigsOpt(body.Options["chain"])
	if err == nil {
		err = w.failChain(ctx, chain, exc)
	}
	errs = append(errs, err)
	return errors.Join(errs...)
}
