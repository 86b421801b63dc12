package control

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/protocol"
)

// loopback is an in-memory transport for unit tests only: a publish to an
// exchange reaches every queue bound to it (fanout) or bound with the
// routing key (direct). The interop suite uses real brokers and Celery.
type loopback struct {
	mu     sync.Mutex
	queues map[string]*boundQueue
}

type boundQueue struct {
	q  broker.Queue
	ch chan *broker.Delivery
}

type noAck struct{}

func (noAck) Ack(*broker.Delivery) error          { return nil }
func (noAck) Reject(*broker.Delivery, bool) error { return nil }

func (l *loopback) DeclareExchange(context.Context, broker.Exchange) error { return nil }

func (l *loopback) Consume(ctx context.Context, qs []broker.Queue, _ int) (<-chan *broker.Delivery, error) {
	out := make(chan *broker.Delivery, 100)
	l.mu.Lock()
	for _, q := range qs {
		l.queues[q.Name] = &boundQueue{q: q, ch: out}
	}
	l.mu.Unlock()
	go func() {
		<-ctx.Done()
		l.mu.Lock()
		for _, q := range qs {
			delete(l.queues, q.Name)
		}
		l.mu.Unlock()
		close(out)
	}()
	return out, nil
}

func (l *loopback) Publish(_ context.Context, p broker.Publishing) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range l.queues {
		if b.q.ExchangeName() != p.Exchange {
			continue
		}
		if b.q.ExchangeType != "fanout" && b.q.Key() != p.RoutingKey {
			continue
		}
		b.ch <- &broker.Delivery{Raw: p.Raw, Exchange: p.Exchange, RoutingKey: p.RoutingKey, Acker: noAck{}}
	}
	return nil
}

// fakeWorker records the commands it was given.
type fakeWorker struct {
	*consumer.Remote // unused methods panic
	name             string
	mu               sync.Mutex
	revoked          []string
	terminate        bool
	shutdown         bool
	rate             map[string]string
}

func (f *fakeWorker) Hostname() string { return f.name }
func (f *fakeWorker) Active() []consumer.RequestInfo {
	m := &protocol.Message{ID: "t-1", Task: "proj.slow", Args: []any{int64(3)}}
	return []consumer.RequestInfo{{Message: m, Hostname: f.name, State: consumer.StateActive, TimeStart: time.Now(), Acknowledged: true, RoutingKey: "q"}}
}
func (f *fakeWorker) Registered() []consumer.TaskInfo {
	return []consumer.TaskInfo{{Name: "proj.add"}, {Name: "proj.slow", RateLimit: f.rate["proj.slow"]}}
}
func (f *fakeWorker) Revoke(_ context.Context, ids []string, terminate bool) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked, f.terminate = append(f.revoked, ids...), terminate
	if terminate {
		return ids
	}
	return nil
}
func (f *fakeWorker) SetRateLimit(task, limit string) error {
	if task != "proj.slow" {
		return consumer.ErrUnknownTask
	}
	if _, err := consumer.ParseRateLimit(limit); err != nil {
		return err
	}
	f.rate[task] = limit
	return nil
}
func (f *fakeWorker) Shutdown(context.Context) error {
	f.mu.Lock()
	f.shutdown = true
	f.mu.Unlock()
	return nil
}

func startNodes(t *testing.T, l *loopback, names ...string) map[string]*fakeWorker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ws := map[string]*fakeWorker{}
	for _, n := range names {
		w := &fakeWorker{name: n, rate: map[string]string{}}
		ws[n] = w
		go func() { _ = NewNode(l, w, NodeConfig{}).Run(ctx) }()
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		l.mu.Lock()
		n := len(l.queues)
		l.mu.Unlock()
		if n == len(names) || time.Now().After(deadline) {
			return ws
		}
		time.Sleep(time.Millisecond)
	}
}

func TestClientAndNodes(t *testing.T) {
	l := &loopback{queues: map[string]*boundQueue{}}
	ws := startNodes(t, l, "go-a@host", "go-b@host", "py@other")
	c := NewClient(l, ClientConfig{})
	defer c.Close()
	ctx := context.Background()

	replies, err := c.Ping(ctx, Options{Timeout: 300 * time.Millisecond})
	if err != nil || len(replies) != 3 {
		t.Fatalf("ping all: %v %v", replies, err)
	}
	replies, _ = c.Ping(ctx, Options{Destination: []string{"go-b@host"}})
	if len(replies) != 1 || replies[0]["go-b@host"].(map[string]any)["ok"] != "pong" {
		t.Errorf("ping one: %v", replies)
	}
	replies, _ = c.Ping(ctx, Options{Pattern: "go-*", Timeout: 300 * time.Millisecond})
	if len(replies) != 2 {
		t.Errorf("ping glob go-*: %v", replies)
	}
	replies, _ = c.Ping(ctx, Options{Pattern: "py@.*", Matcher: "pcre", Timeout: 300 * time.Millisecond})
	if len(replies) != 1 {
		t.Errorf("ping pcre: %v", replies)
	}

	act, err := c.Inspect(ctx, "active", nil, Options{Destination: []string{"go-a@host"}})
	if err != nil {
		t.Fatal(err)
	}
	list := act["go-a@host"].([]any)
	info := list[0].(map[string]any)
	if info["id"] != "t-1" || info["type"] != "proj.slow" || info["acknowledged"] != true || info["time_start"] == nil {
		t.Errorf("active info %v", info)
	}

	rl, _ := c.Inspect(ctx, "rate_limit", map[string]any{"task_name": "proj.slow", "rate_limit": "10/m"}, Options{Destination: []string{"go-a@host"}})
	if rl["go-a@host"].(map[string]any)["ok"] != "new rate limit set successfully" {
		t.Errorf("rate_limit: %v", rl)
	}
	rl, _ = c.Inspect(ctx, "rate_limit", map[string]any{"task_name": "nope", "rate_limit": "1/s"}, Options{Destination: []string{"go-a@host"}})
	if rl["go-a@host"].(map[string]any)["error"] != "unknown task" {
		t.Errorf("rate_limit unknown: %v", rl)
	}
	reg, _ := c.Inspect(ctx, "registered", nil, Options{Destination: []string{"go-a@host"}})
	if got := reg["go-a@host"].([]any); len(got) != 2 || got[1] != "proj.slow [rate_limit=10/m]" {
		t.Errorf("registered: %v", got)
	}

	rv, _ := c.Inspect(ctx, "revoke", map[string]any{"task_id": "t-9"}, Options{Destination: []string{"go-b@host"}})
	if rv["go-b@host"].(map[string]any)["ok"] != "tasks {'t-9'} flagged as revoked" {
		t.Errorf("revoke reply %v", rv)
	}
	if err := c.Revoke(ctx, []string{"t-7"}, true); err != nil {
		t.Fatal(err)
	}
	un, _ := c.Inspect(ctx, "nosuch", nil, Options{Destination: []string{"go-a@host"}})
	if e, _ := un["go-a@host"].(map[string]any)["error"].(string); !strings.Contains(e, "KeyError") {
		t.Errorf("unknown method: %v", un)
	}
	if _, err := c.Broadcast(ctx, "shutdown", nil, Options{Destination: []string{"py@other"}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		w := ws["py@other"]
		w.mu.Lock()
		done := w.shutdown
		w.mu.Unlock()
		a := ws["go-a@host"]
		a.mu.Lock()
		revoked := len(a.revoked) == 1 && a.revoked[0] == "t-7" && a.terminate
		a.mu.Unlock()
		if done && revoked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("shutdown %v, broadcast revoke with terminate on go-a %v", done, revoked)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestParseRequestErrors(t *testing.T) {
	for _, body := range []string{`[]`, `{"arguments": {}}`, `{"method": ""}`, `not json`} {
		if _, err := ParseRequest(&protocol.Raw{ContentType: protocol.ContentTypeJSON, Body: []byte(body)}); err == nil {
			t.Errorf("%s accepted", body)
		}
	}
	if _, err := ParseRequest(&protocol.Raw{ContentType: "application/x-python-serialize", Body: []byte("x")}); err == nil {
		t.Error("pickle accepted")
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"method": "revoke", "arguments": {"task_id": "t"}, "destination": null, "pattern": null, "matcher": null, "ticket": "x", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "k"}}`))
	f.Add([]byte(`{"method": "ping", "destination": ["a"]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseRequest(&protocol.Raw{ContentType: protocol.ContentTypeJSON, Body: body})
		if err == nil {
			_ = r.For("node@host")
		}
	})
}

// A Node runs once: a second Run returns ErrNodeClosed.
func TestNodeRunsOnce(t *testing.T) {
	l := &loopback{queues: map[string]*boundQueue{}}
	n := NewNode(l, &fakeWorker{name: "once@test", rate: map[string]string{}}, NodeConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	time.Sleep(20 * time.Millisecond)
	if err := n.Run(context.Background()); !errors.Is(err, ErrNodeClosed) {
		t.Fatalf("Run while running = %v", err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	if err := n.Run(context.Background()); !errors.Is(err, ErrNodeClosed) {
		t.Fatalf("Run after Run = %v", err)
	}
}

// queueWorker records the queue add_consumer asks for.
type queueWorker struct {
	*fakeWorker
	added chan broker.Queue
}

func (q *queueWorker) AddQueue(qu broker.Queue) error { q.added <- qu; return nil }

// add_consumer of a queue the app declares in task_queues consumes it as
// declared (a quorum queue with its arguments), as Celery's
// add_task_queue takes it from app.amqp.queues; an unknown name is built
// from the command's arguments.
func TestAddConsumerUsesTheAppsDeclaration(t *testing.T) {
	quorum := broker.Queue{Name: "orders", Exchange: "orders", ExchangeType: "topic", RoutingKey: "orders.#",
		Arguments: map[string]any{"x-queue-type": "quorum"}}
	l := &loopback{queues: map[string]*boundQueue{}}
	w := &queueWorker{fakeWorker: &fakeWorker{name: "q@host", rate: map[string]string{}}, added: make(chan broker.Queue, 2)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	node := NewNode(l, w, NodeConfig{QueueNamed: func(name string) (broker.Queue, bool) { return quorum, name == "orders" }})
	go func() { _ = node.Run(ctx) }()
	c := NewClient(l, ClientConfig{})
	defer c.Close()
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
		if r, _ := c.Ping(ctx, Options{Timeout: 100 * time.Millisecond}); len(r) == 1 || time.Now().After(deadline) {
			break
		}
	}
	for _, tc := range []struct {
		args map[string]any
		want broker.Queue
	}{
		{map[string]any{"queue": "orders"}, quorum},
		{map[string]any{"queue": "other", "exchange": "ex", "routing_key": "rk"}, broker.Queue{Name: "other", Exchange: "ex", RoutingKey: "rk"}},
	} {
		if _, err := c.Inspect(ctx, "add_consumer", tc.args, Options{Destination: []string{"q@host"}}); err != nil {
			t.Fatal(err)
		}
		got := <-w.added
		if got.Name != tc.want.Name || got.Exchange != tc.want.Exchange || got.RoutingKey != tc.want.RoutingKey ||
			got.Arguments["x-queue-type"] != tc.want.Arguments["x-queue-type"] {
			t.Errorf("add_consumer %v consumed %+v, want %+v", tc.args, got, tc.want)
		}
	}
}
