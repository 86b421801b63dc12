package results

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// stateWriter sends concurrent Store calls' scripts to Redis in shared
// round trips: group commit, as the AMQP ack frontier does it. No timer: a
// caller that finds no flush under way sends everything queued so far in
// one pipeline (its own state among them) and the others wait for it; a
// caller whose state missed that pipeline sends the next one. A lone
// writer pays one round trip as before; N concurrent ones pay about one
// between them. Each state is still its own storeScript call, so it is as
// atomic as before, and every Store returns only once its state is written
// (the worker acks a late-ack message after that).
type stateWriter struct {
	client redis.UniversalClient
	// maxBatch bounds one pipeline, so one flush cannot take so long that
	// the first states' callers wait on the last ones.
	maxBatch int

	mu       sync.Mutex
	cond     *sync.Cond
	queue    []*pendingState
	flushing bool
}

type pendingState struct {
	ctx     context.Context
	key     string
	data    []byte
	ttl     int64 // milliseconds, 0 = none
	written bool  // flushed (guarded by stateWriter.mu)
	n       int   // storeScript's reply
	err     error
}

func newStateWriter(client redis.UniversalClient) *stateWriter {
	w := &stateWriter{client: client, maxBatch: 256}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// store runs storeScript for key, batched with concurrent calls; done is
// false when Go must read the stored state itself (see storeScript).
func (w *stateWriter) store(ctx context.Context, key string, data []byte, expires time.Duration) (done bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err // as a plain call on a cancelled context fails (a soft time limit ends UpdateState)
	}
	p := &pendingState{ctx: ctx, key: key, data: data}
	if expires > 0 {
		p.ttl = expires.Milliseconds()
	}
	w.mu.Lock()
	w.queue = append(w.queue, p)
	for !p.written {
		if w.flushing {
			w.cond.Wait()
			continue
		}
		w.flushing = true
		batch := w.queue
		if len(batch) > w.maxBatch {
			batch = batch[:w.maxBatch:w.maxBatch]
			w.queue = append([]*pendingState(nil), w.queue[w.maxBatch:]...)
		} else {
			w.queue = nil
		}
		w.mu.Unlock()
		w.flush(ctx, batch)
		w.mu.Lock()
		for _, q := range batch {
			q.written = true
		}
		w.flushing = false
		w.cond.Broadcast()
	}
	w.mu.Unlock()
	if p.err != nil {
		return false, p.err
	}
	return p.n >= 0, nil
}

// flush sends batch in one pipeline. The flushing caller's context bounds
// a shared pipeline without its cancellation (the other states in it
// belong to callers who did not cancel); a state alone goes on its own
// caller's context.
func (w *stateWriter) flush(ctx context.Context, batch []*pendingState) {
	// A caller whose context ended while it queued gets its error, as a
	// call of its own would.
	live := batch[:0:0]
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.err = err
			continue
		}
		live = append(live, p)
	}
	batch = live
	if len(batch) == 0 {
		return
	}
	if len(batch) == 1 { // nothing to share: the plain call on its own context, with its script loading
		p := batch[0]
		p.n, p.err = storeScript.Run(p.ctx, w.client, []string{p.key}, p.data, p.ttl).Int()
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	cmds := make([]*redis.Cmd, len(batch))
	_, err := w.client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, p := range batch {
			cmds[i] = storeScript.EvalSha(ctx, pipe, []string{p.key}, p.data, p.ttl)
		}
		return nil
	})
	noScript := err != nil && isNoScript(err)
	for i, p := range batch {
		if e := cmds[i].Err(); e != nil && isNoScript(e) {
			noScript = true
			break
		}
		p.n, p.err = cmds[i].Int()
	}
	if !noScript {
		return
	}
	// The server lost the script (a restart, SCRIPT FLUSH, a failover to a
	// replica that never saw it): load it once and send the batch again.
	// storeScript is idempotent for a state already written (it writes the
	// same value again), so the states the first pipeline did run are safe.
	if err := storeScript.Load(ctx, w.client).Err(); err != nil {
		for _, p := range batch {
			p.n, p.err = 0, err
		}
		return
	}
	_, _ = w.client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, p := range batch {
			cmds[i] = storeScript.EvalSha(ctx, pipe, []string{p.key}, p.data, p.ttl)
		}
		return nil
	})
	for i, p := range batch {
		p.n, p.err = cmds[i].Int()
	}
}

func isNoScript(err error) bool { return strings.HasPrefix(err.Error(), "NOSCRIPT") }
