package redis

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/gocelery/gocelery/broker"
)

// The integration tests need Redis on 127.0.0.1:6379 (scripts/services.sh
// starts it) and use databases 10 and 11 only; -short skips them. The
// interop tests also need the Celery venv (.venv, Celery 5.7).

const (
	testDB  = 10
	otherDB = 11
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		runHelper()
		return
	}
	goleak.VerifyTestMain(m)
}

func redisAddr() string {
	if a := os.Getenv("GOCELERY_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

func redisURL(db int) string { return fmt.Sprintf("redis://%s/%d", redisAddr(), db) }

func needRedis(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Redis; skipped with -short")
	}
}

func unique(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// quietLogger drops the broker's expected warnings unless -v.
func quietLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// dial returns a Broker on db, closed at the end of the test.
func dial(t testing.TB, db int, opts Config) *Broker {
	t.Helper()
	needRedis(t)
	if opts.Logger == nil {
		opts.Logger = quietLogger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := Dial(ctx, redisURL(db), opts)
	if err != nil {
		t.Fatalf("Dial: %v (is Redis up? scripts/services.sh starts it)", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// admin is a plain go-redis client for checks and cleanup, outside the
// code under test.
type admin struct {
	t  testing.TB
	db int
	*redis.Client
}

func newAdmin(t testing.TB, db int) *admin {
	t.Helper()
	needRedis(t)
	c := redis.NewClient(&redis.Options{Addr: redisAddr(), DB: db})
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("admin: %v (is Redis up? scripts/services.sh starts it)", err)
	}
	t.Cleanup(func() { c.Close() })
	return &admin{t: t, db: db, Client: c}
}

// cleanupPrefix deletes every key starting with prefix at the end of the
// test (registered after the brokers, so it runs before they close: that
// is fine, Close finds nothing to give back).
func (a *admin) cleanupPrefix(prefix string) {
	a.t.Cleanup(func() {
		ctx := context.Background()
		it := a.Scan(ctx, 0, escapeGlob(prefix)+"*", 1000).Iterator()
		var keys []string
		for it.Next(ctx) {
			keys = append(keys, it.Val())
		}
		if len(keys) > 0 {
			a.Del(ctx, keys...)
		}
	})
}

// cleanupQueues deletes the lists and binding sets of unprefixed queues.
func (a *admin) cleanupQueues(exchanges []string, queues ...string) {
	a.t.Cleanup(func() {
		ctx := context.Background()
		var keys []string
		ks := newKeyspace("", a.db, nil)
		for _, q := range queues {
			keys = append(keys, ks.lists(q)...)
		}
		for _, e := range append(exchanges, queues...) {
			keys = append(keys, ks.binding(e), ks.permanent(e))
		}
		a.Del(ctx, keys...)
	})
}

func escapeGlob(s string) string {
	r := strings.NewReplacer(`\`, `\\`, "*", `\*`, "?", `\?`, "[", `\[`, "]", `\]`)
	return r.Replace(s)
}

// list returns a list's elements front first: the order BRPOP takes them.
func (a *admin) list(key string) []string {
	a.t.Helper()
	vs, err := a.LRange(context.Background(), key, 0, -1).Result()
	if err != nil {
		a.t.Fatal(err)
	}
	for i, j := 0, len(vs)-1; i < j; i, j = i+1, j-1 {
		vs[i], vs[j] = vs[j], vs[i]
	}
	return vs
}

func (a *admin) llen(key string) int64 {
	a.t.Helper()
	n, err := a.LLen(context.Background(), key).Result()
	if err != nil {
		a.t.Fatal(err)
	}
	return n
}

func (a *admin) hexists(key, field string) bool {
	a.t.Helper()
	ok, err := a.HExists(context.Background(), key, field).Result()
	if err != nil {
		a.t.Fatal(err)
	}
	return ok
}

func publish(t testing.TB, b *Broker, p broker.Publishing) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Publish(ctx, p); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

func text(queue, body string) broker.Publishing {
	p := broker.Publishing{RoutingKey: queue}
	p.ContentType = "text/plain"
	p.ContentEncoding = "utf-8"
	p.Body = []byte(body)
	p.Properties.DeliveryMode = 2
	return p
}

func recv(t testing.TB, ch <-chan *broker.Delivery) *broker.Delivery {
	t.Helper()
	select {
	case d, ok := <-ch:
		if !ok {
			t.Fatal("deliveries channel closed")
		}
		return d
	case <-time.After(15 * time.Second):
		t.Fatal("no delivery within 15s")
	}
	return nil
}

func noRecv(t testing.TB, ch <-chan *broker.Delivery, wait time.Duration) {
	t.Helper()
	select {
	case d, ok := <-ch:
		if ok {
			t.Fatalf("unexpected delivery %q", d.Body)
		}
		t.Fatal("deliveries channel closed")
	case <-time.After(wait):
	}
}

func consume(t testing.TB, b *Broker, prefetch int, qs ...broker.Queue) <-chan *broker.Delivery {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ds, err := b.Consume(ctx, qs, prefetch)
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	return ds
}

// waitFor polls cond for up to d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// python returns the Celery venv's interpreter.
func python(t testing.TB) string {
	t.Helper()
	needRedis(t)
	py, err := filepath.Abs("../../.venv/bin/python")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("the Celery venv is missing (%v): run scripts/services.sh", err)
	}
	return py
}

// runPython runs a script with the venv's Python and returns its stdout.
func runPython(t testing.TB, script string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python(t), append([]string{"-c", script}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, stderr.String())
	}
	return out
}

func mustJSON(t testing.TB, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("JSON %q: %v", data, err)
	}
}

// proxy is a TCP proxy to Redis that a test can cut, as a network
// partition or a server restart would, without touching the shared server.
type proxy struct {
	t  testing.TB
	ln net.Listener

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newProxy(t testing.TB) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", redisAddr())
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[s] = struct{}{}, struct{}{}
		p.wg.Add(2)
		go p.pipe(c, s)
		go p.pipe(s, c)
		p.mu.Unlock()
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// cut drops every connection and refuses new ones until heal.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *proxy) heal() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

func (p *proxy) close() {
	p.ln.Close()
	p.cut()
	p.wg.Wait()
}
