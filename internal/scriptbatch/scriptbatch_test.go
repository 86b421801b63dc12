package scriptbatch_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/internal/scriptbatch"
)

// incr counts its calls in a key of its own and returns the new count.
var incr = redis.NewScript(`return redis.call('INCR', KEYS[1])`)

type countingHook struct{ pipelines, calls atomic.Int64 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.calls.Add(1); return next(ctx, cmd) }
}
func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.pipelines.Add(1); return next(ctx, cmds) }
}

func client(t *testing.T) *redis.Client {
	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	if c, err := net.Dial("tcp", addr); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Redis at %s: %v", addr, err)
		}
		t.Skipf("Redis at %s: %v", addr, err)
	} else {
		c.Close()
	}
	c := redis.NewClient(&redis.Options{Addr: addr, DB: 11})
	t.Cleanup(func() { c.Close() })
	return c
}

// 400 concurrent calls all run exactly once each, in fewer round trips
// than calls; after SCRIPT FLUSH the batch loads the script and runs the
// calls once, not twice; an ended context fails its own call only.
func TestBatcher(t *testing.T) {
	c := client(t)
	h := &countingHook{}
	c.AddHook(h)
	ctx := context.Background()
	prefix := fmt.Sprintf("scriptbatch-%d:", os.Getpid())
	t.Cleanup(func() {
		keys, _ := c.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
	})
	b := scriptbatch.New(c, incr, 64)
	for _, flush := range []bool{false, true} {
		if flush {
			if err := c.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		h.pipelines.Store(0)
		h.calls.Store(0)
		const n = 400
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				key := fmt.Sprintf("%s%t:%d", prefix, flush, i)
				if v, err := b.Run(ctx, []string{key}).Int(); err != nil || v != 1 {
					t.Errorf("%s: %d, %v (want 1: each call runs once)", key, v, err)
				}
			})
		}
		wg.Wait()
		if trips := h.pipelines.Load() + h.calls.Load(); trips >= n {
			t.Errorf("flush=%t: %d round trips for %d calls", flush, trips, n)
		}
	}
	ended, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.Run(ended, []string{prefix + "ended"}).Err(); err != context.Canceled {
		t.Errorf("call on an ended context: %v", err)
	}
}
