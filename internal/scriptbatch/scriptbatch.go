// Package scriptbatch sends concurrent calls of one Redis Lua script in
// shared round trips: group commit, as the AMQP ack frontier does it. No
// timer: a caller that finds no flush under way sends everything queued so
// far in one pipeline (its own call among them) and the others wait for
// it; a call that missed that pipeline goes in the next one. A lone caller
// pays one round trip as before; N concurrent ones about one between them.
// Each call is still its own script run, as atomic as before, and Run
// returns only once its own reply is in.
package scriptbatch

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Batcher batches the calls of one script on one client. The zero value
// is not usable; make one with New.
type Batcher struct {
	client redis.UniversalClient
	script *redis.Script
	// maxBatch bounds one pipeline, so one flush cannot keep its first
	// callers waiting on a long tail.
	maxBatch int

	mu       sync.Mutex
	cond     *sync.Cond
	queue    []*call
	flushing bool
}

type call struct {
	ctx  context.Context
	keys []string
	args []any
	cmd  *redis.Cmd
	done bool // guarded by Batcher.mu
}

// New returns a Batcher for script on client, at most maxBatch calls a
// pipeline.
func New(client redis.UniversalClient, script *redis.Script, maxBatch int) *Batcher {
	b := &Batcher{client: client, script: script, maxBatch: max(maxBatch, 1)}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// Run runs the script with keys and args, batched with concurrent calls,
// and returns its reply as script.Run would. A call on a context that has
// ended fails with its error, as a plain call would.
func (b *Batcher) Run(ctx context.Context, keys []string, args ...any) *redis.Cmd {
	if err := ctx.Err(); err != nil {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(err)
		return cmd
	}
	c := &call{ctx: ctx, keys: keys, args: args}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	for !c.done {
		if b.flushing {
			b.cond.Wait()
			continue
		}
		b.flushing = true
		batch := b.queue
		if len(batch) > b.maxBatch {
			batch = batch[:b.maxBatch:b.maxBatch]
			b.queue = append([]*call(nil), b.queue[b.maxBatch:]...)
		} else {
			b.queue = nil
		}
		b.mu.Unlock()
		b.flush(ctx, batch)
		b.mu.Lock()
		for _, q := range batch {
			q.done = true
		}
		b.flushing = false
		b.cond.Broadcast()
	}
	b.mu.Unlock()
	return c.cmd
}

// flush sends batch. A call alone goes on its own caller's context; a
// shared pipeline on the flushing caller's context without its
// cancellation (the other calls in it belong to callers who did not
// cancel), bounded to ten seconds.
func (b *Batcher) flush(ctx context.Context, batch []*call) {
	live := batch[:0:0]
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.cmd = redis.NewCmd(c.ctx)
			c.cmd.SetErr(err)
			continue
		}
		live = append(live, c)
	}
	switch len(live) {
	case 0:
		return
	case 1: // nothing to share: the plain call, with its script loading
		c := live[0]
		c.cmd = b.script.Run(c.ctx, b.client, c.keys, c.args...)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if b.send(ctx, live) {
		return
	}
	// The server lost the script (a restart, SCRIPT FLUSH, a failover to a
	// replica that never saw it): load it and send the batch again. A
	// NOSCRIPT reply means that call did not run, so only those go again.
	if err := b.script.Load(ctx, b.client).Err(); err != nil {
		for _, c := range live {
			if isNoScript(c.cmd.Err()) {
				c.cmd.SetErr(err)
			}
		}
		return
	}
	var again []*call
	for _, c := range live {
		if isNoScript(c.cmd.Err()) {
			again = append(again, c)
		}
	}
	b.send(ctx, again)
}

// send pipelines EVALSHA for calls; it reports false when a reply was
// NOSCRIPT.
func (b *Batcher) send(ctx context.Context, calls []*call) (ok bool) {
	_, _ = b.client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, c := range calls {
			c.cmd = b.script.EvalSha(ctx, pipe, c.keys, c.args...)
		}
		return nil
	})
	ok = true
	for _, c := range calls {
		if isNoScript(c.cmd.Err()) {
			ok = false
		}
	}
	return ok
}

func isNoScript(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") }
