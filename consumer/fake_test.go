package consumer

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// fakeBroker is an in-memory transport for unit tests only; the interop
// suite runs the worker against real RabbitMQ and Redis.
type fakeBroker struct {
	mu        sync.Mutex
	ch        chan *broker.Delivery
	acks      []string
	rejects   map[string]bool // tag -> requeue
	published []broker.Publishing
	declared  []string
	prefetch  []int
	events    chan string // "ack:<tag>", "reject:<tag>:<requeue>", "publish:<key>"
	stale     map[string]bool // tags the broker has given back (lost channel)
	// unroutable makes that many publishes fail with ErrUnroutable.
	unroutable int
}

// Stale reports the tags marked with markStale, as a transport reports
// deliveries of a lost channel.
func (b *fakeBroker) Stale(d *broker.Delivery) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stale[d.Tag]
}

func (b *fakeBroker) markStale(tags ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range tags {
		b.stale[t] = true
	}
}

func newFakeBroker() *fakeBroker {
	return &fakeBroker{ch: make(chan *broker.Delivery, 100), rejects: map[string]bool{}, stale: map[string]bool{}, events: make(chan string, 1000)}
}

func (b *fakeBroker) Declare(_ context.Context, qs ...broker.Queue) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, q := range qs {
		b.declared = append(b.declared, q.Name)
	}
	return nil
}

func (b *fakeBroker) Consume(ctx context.Context, _ []broker.Queue, prefetch int) (<-chan *broker.Delivery, error) {
	b.mu.Lock()
	b.prefetch = append(b.prefetch, prefetch)
	b.mu.Unlock()
	out := make(chan *broker.Delivery)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case d := <-b.ch:
				select {
				case out <- d:
				case <-ctx.Done():
					b.Reject(d, true)
					return
				}
			}
		}
	}()
	return out, nil
}

func (b *fakeBroker) SetPrefetch(n int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.prefetch = append(b.prefetch, n)
	return nil
}

func (b *fakeBroker) Publish(_ context.Context, p broker.Publishing) error {
	b.mu.Lock()
	if b.unroutable > 0 {
		b.unroutable--
		b.mu.Unlock()
		b.events <- "unroutable:" + p.RoutingKey
		return broker.ErrUnroutable
	}
	b.published = append(b.published, p)
	b.mu.Unlock()
	b.events <- "publish:" + p.RoutingKey
	return nil
}

func (b *fakeBroker) Ack(d *broker.Delivery) error {
	if b.Stale(d) {
		return broker.ErrStaleDelivery
	}
	b.mu.Lock()
	b.acks = append(b.acks, d.Tag)
	b.mu.Unlock()
	b.events <- "ack:" + d.Tag
	return nil
}

func (b *fakeBroker) Reject(d *broker.Delivery, requeue bool) error {
	b.mu.Lock()
	b.rejects[d.Tag] = requeue
	b.mu.Unlock()
	b.events <- fmt.Sprintf("reject:%s:%t", d.Tag, requeue)
	return nil
}

// send delivers m to the worker, with the tag given.
func (b *fakeBroker) send(t *testing.T, tag string, m *protocol.Message) {
	t.Helper()
	raw, err := protocol.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	b.sendRaw(tag, raw)
}

func (b *fakeBroker) sendRaw(tag string, raw *protocol.Raw) {
	b.ch <- &broker.Delivery{Raw: *raw, Queue: "q", Exchange: "", RoutingKey: "q", Tag: tag, Acker: b}
}

// waitEvent waits for an exact event.
func (b *fakeBroker) waitEvent(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e := <-b.events:
			if e == want {
				return
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %q", want)
		}
	}
}

func (b *fakeBroker) lastPrefetch() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.prefetch) == 0 {
		return -1
	}
	return b.prefetch[len(b.prefetch)-1]
}

// fakeBackend records stored states.
type fakeBackend struct {
	mu     sync.Mutex
	metas  []*results.Meta
	stored chan *results.Meta
}

func newFakeBackend() *fakeBackend { return &fakeBackend{stored: make(chan *results.Meta, 1000)} }

func (f *fakeBackend) Store(_ context.Context, m *results.Meta) error {
	f.mu.Lock()
	f.metas = append(f.metas, m)
	f.mu.Unlock()
	f.stored <- m
	return nil
}

// wait returns the next stored state of id with the given status.
func (f *fakeBackend) wait(t *testing.T, id, status string) *results.Meta {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case m := <-f.stored:
			if m.TaskID == id && m.Status == status {
				return m
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s %s", id, status)
			return nil
		}
	}
}

// waitAny waits until some stored state of id has status, in any order
// relative to other tasks' states.
func (f *fakeBackend) waitAny(t *testing.T, id, status string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, s := range f.statuses(id) {
			if s == status {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s %s", id, status)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (f *fakeBackend) statuses(id string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, m := range f.metas {
		if m.TaskID == id {
			out = append(out, m.Status)
		}
	}
	return out
}

// startWorker runs a worker until the test ends.
func startWorker(t *testing.T, mux *Mux, cfg Config) (*fakeBroker, *fakeBackend, *Worker) {
	t.Helper()
	b, be := newFakeBroker(), newFakeBackend()
	if cfg.Queues == nil {
		cfg.Queues = []broker.Queue{{Name: "q"}}
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 2
	}
	w, err := New(b, be, mux, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("worker did not stop")
		}
	})
	return b, be, w
}
