package metrics_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/broker/redis"
	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/metrics"
	"github.com/gocelery/gocelery/producer"
)

// The integration test needs Redis on 127.0.0.1:6379 (scripts/services.sh
// starts it) and uses database 7 only; -short skips it.
const testDB = "7"

func redisAddr() string {
	if a := os.Getenv("GOCELERY_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// TestWorkerOnRedis runs a real worker on the Redis broker with the
// collector as its observer and scrapes /metrics and /healthz over HTTP.
func TestWorkerOnRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Redis; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	queue := "gocelery-metrics-test-" + hex.EncodeToString(rnd[:])

	admin := goredis.NewClient(&goredis.Options{Addr: redisAddr(), DB: 7})
	defer admin.Close()
	defer func() { // the queue's lists and its dead-letter queue
		keys, _ := admin.Keys(context.Background(), "*"+queue+"*").Result()
		if len(keys) > 0 {
			admin.Del(context.Background(), keys...)
		}
	}()

	b, err := redis.Dial(ctx, "redis://"+redisAddr()+"/"+testDB, redis.Config{Logger: log})
	if err != nil {
		t.Fatalf("Dial: %v (is Redis up? scripts/services.sh starts it)", err)
	}
	defer b.Close()

	mux := consumer.NewMux()
	type addArgs struct{ X, Y int }
	mux.Handle("metrics.add", consumer.Func(func(ctx context.Context, a addArgs) (int, error) {
		time.Sleep(2 * time.Millisecond) // never in the le=0.001 bucket, however loaded the machine
		return a.X + a.Y, nil
	}))
	mux.HandleFunc("metrics.fail", func(ctx context.Context, r *consumer.Request) (any, error) {
		return nil, errors.New("boom")
	})

	c := metrics.NewCollector(metrics.Config{Tasks: mux.Names(), Logger: log})
	w, err := consumer.New(b, nil, mux, consumer.Config{
		Queues: []broker.Queue{{Name: queue}}, Concurrency: 2, Observers: []consumer.Observer{c}, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Watch(w, b)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srvCtx, stopSrv := context.WithCancel(ctx)
	srvDone := make(chan error, 1)
	go func() { srvDone <- metrics.NewServer("", c.Handler(), log).Serve(srvCtx, ln) }()
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := client.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	if code, body := get("/healthz"); code != 503 || body != "worker not consuming\n" {
		t.Errorf("before Run: /healthz = %d %q, want 503 worker not consuming", code, body)
	}

	runCtx, stopWorker := context.WithCancel(ctx)
	workerDone := make(chan error, 1)
	go func() { workerDone <- w.Run(runCtx) }()

	p := producer.New(b, nil, producer.Config{DefaultQueue: queue})
	for _, task := range []struct {
		name string
		args []any
	}{
		{"metrics.add", []any{1, 2}}, {"metrics.add", []any{3, 4}}, {"metrics.add", []any{5, 6}},
		{"metrics.fail", nil},
		{"not.registered", nil}, // dead-lettered, counted under task="other"
	} {
		if _, err := p.SendTask(ctx, task.name, task.args, nil); err != nil {
			t.Fatalf("SendTask %s: %v", task.name, err)
		}
	}

	want := []string{
		`gocelery_tasks_received_total{task="metrics.add"} 3`,
		`gocelery_tasks_started_total{task="metrics.add"} 3`,
		`gocelery_tasks_succeeded_total{task="metrics.add"} 3`,
		`gocelery_tasks_failed_total{task="metrics.add"} 0`,
		`gocelery_tasks_received_total{task="metrics.fail"} 1`,
		`gocelery_tasks_failed_total{task="metrics.fail"} 1`,
		`gocelery_tasks_succeeded_total{task="metrics.fail"} 0`,
		`gocelery_tasks_failed_total{task="other"} 1`,
		`gocelery_tasks_received_total{task="other"} 0`,
		`gocelery_task_runtime_seconds_count{task="metrics.add"} 3`,
		`gocelery_task_runtime_seconds_bucket{task="metrics.add",le="0.001"} 0`,
		`gocelery_task_runtime_seconds_bucket{task="metrics.add",le="+Inf"} 3`,
		`gocelery_task_runtime_seconds_count{task="metrics.fail"} 1`,
		`gocelery_task_queue_wait_seconds_count{task="metrics.add"} 3`,
		`gocelery_task_queue_wait_seconds_count{task="metrics.fail"} 1`,
		`gocelery_task_runtime_seconds_count{task="other"} 0`,
		`gocelery_worker_processed_tasks_total 4`,
		`gocelery_worker_active_tasks 0`,
		`gocelery_worker_consuming 1`,
		`gocelery_worker_concurrency 2`,
		`gocelery_worker_prefetch_limit 8`,
		`gocelery_broker_connected 1`,
		`gocelery_broker_reconnects_total 0`,
	}
	var body string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var code int
		code, body = get("/metrics")
		if code != 200 {
			t.Fatalf("/metrics = %d", code)
		}
		if missing(body, want) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 15 s, /metrics lacks %q:\n%s", missing(body, want), grepGocelery(body))
		}
	}
	if strings.Contains(body, "not.registered") {
		t.Error("an unregistered task name got a label of its own")
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("running: /healthz = %d %q, want 200 ok", code, body)
	}

	stopWorker()
	if err := <-workerDone; err != nil {
		t.Errorf("worker Run: %v", err)
	}
	if code, body := get("/healthz"); code != 503 || body != "worker not consuming\n" {
		t.Errorf("after shutdown: /healthz = %d %q, want 503 worker not consuming", code, body)
	}
	stopSrv()
	if err := <-srvDone; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// missing returns the lines of want absent from the exposition body.
func missing(body string, want []string) []string {
	lines := map[string]bool{}
	for _, l := range strings.Split(body, "\n") {
		lines[l] = true
	}
	var out []string
	for _, w := range want {
		if !lines[w] {
			out = append(out, w)
		}
	}
	return out
}

func grepGocelery(body string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "gocelery_") && !strings.Contains(l, "_bucket{") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
