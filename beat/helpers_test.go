package beat

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/results"
)

// testRedis returns a client on the beat tests' Redis DB (5; override the
// address with BEAT_TEST_REDIS) and a unique key prefix whose keys are
// deleted at the end of the test.
func testRedis(t testing.TB) (redis.UniversalClient, string) {
	t.Helper()
	addr := os.Getenv("BEAT_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, DB: 5})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis at %s (run scripts/services.sh): %v", addr, err)
	}
	prefix := "beattest:" + uuid.NewString()[:8] + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := rdb.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		rdb.Close()
	})
	return rdb, prefix
}

// sent is one SendTask call seen by recordingSender.
type sent struct {
	Task   string
	Args   []any
	Kwargs map[string]any
	Opts   producer.Options
	At     time.Time
}

// recordingSender is a Sender that records instead of publishing.
type recordingSender struct {
	mu    sync.Mutex
	calls []sent
	fail  error
}

func (r *recordingSender) SendTask(ctx context.Context, name string, args []any, kwargs map[string]any, opts ...producer.Option) (*producer.AsyncResult, error) {
	var o producer.Options
	for _, f := range opts {
		f(&o)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return nil, r.fail
	}
	r.calls = append(r.calls, sent{Task: name, Args: args, Kwargs: kwargs, Opts: o, At: time.Now()})
	return producer.NewAsyncResult(o.TaskID, nil), nil
}

func (r *recordingSender) all() []sent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sent(nil), r.calls...)
}

// staticResults answers every Get with the same state.
type staticResults struct{ meta results.Meta }

func (s staticResults) Get(ctx context.Context, id string) (*results.Meta, error) {
	m := s.meta
	m.TaskID = id
	return &m, nil
}

// waitFor polls cond until it holds or fails the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
