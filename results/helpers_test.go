package results_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gocelery/gocelery/results"
	"github.com/redis/go-redis/v9"
)

// Tests use the real Redis (scripts/services.sh starts it) in testDB, which
// nothing else in this repository uses, and give every test its own key
// prefix so parallel runs never see each other's keys.
const testDB = 12

func redisAddr() string {
	if a := os.Getenv("GOCELERY_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

func randomHex(t testing.TB) string {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// newClient connects to testDB, failing (not skipping) when Redis is down:
// these tests are the only proof the backend talks to a real server.
func newClient(t testing.TB, db int) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: redisAddr(), DB: db})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		t.Fatalf("Redis at %s is not answering (start it with scripts/services.sh): %v", redisAddr(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// deleteMatching removes every key matching pattern, for cleanups.
func deleteMatching(t testing.TB, c redis.UniversalClient, pattern string) {
	t.Helper()
	ctx := context.Background()
	iter := c.Scan(ctx, 0, pattern, 100).Iterator()
	for iter.Next(ctx) {
		if err := c.Del(ctx, iter.Val()).Err(); err != nil {
			t.Errorf("cleanup: deleting %s: %v", iter.Val(), err)
		}
	}
	if err := iter.Err(); err != nil {
		t.Errorf("cleanup: scanning %s: %v", pattern, err)
	}
}

// newBackend returns a backend on testDB whose keys live under a fresh
// prefix (opts.KeyPrefix is replaced), deleted when the test ends.
func newBackend(t testing.TB, opts results.Config) (*results.Redis, *redis.Client) {
	t.Helper()
	c := newClient(t, testDB)
	opts.KeyPrefix = "gocelery-test-" + randomHex(t) + ":"
	t.Cleanup(func() { deleteMatching(t, c, opts.KeyPrefix+"*") })
	return results.NewRedis(c, opts), c
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// fixture is a captured value from testdata/result-*.json (copied from
// the shared reference fixtures, captured from a real Celery worker).
type fixture struct {
	Key        string `json:"key"`
	Raw        string `json:"raw"`
	TTLSeconds int    `json:"ttl_seconds"`
}

func loadFixture(t testing.TB, name string) fixture {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var f fixture
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if f.Raw == "" || f.TTLSeconds == 0 {
		t.Fatalf("%s: no raw value or ttl_seconds", name)
	}
	return f
}

// checkTTL asserts key expires in exactly want seconds as SETEX set it:
// PTTL within the last second below want.
func checkTTL(t testing.TB, c redis.UniversalClient, key string, want int) {
	t.Helper()
	pttl, err := c.PTTL(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	wantD := time.Duration(want) * time.Second
	if pttl > wantD || pttl <= wantD-time.Second {
		t.Errorf("TTL of %s = %v, want %ds", key, pttl, want)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
