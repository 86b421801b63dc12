package consumertest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/protocol"
)

// Broker is an in-memory transport for a worker under test; it implements
// consumer.Broker and settles deliveries itself. Every settle and publish
// is also an event a test can wait for with WaitEvent:
//
//	"ack:<tag>"                  a delivery acked
//	"reject:<tag>:<requeue>"     rejected, requeue true or false
//	"publish:<routing key>"      a message published (retry, dead letter, workflow)
//	"unroutable:<routing key>"   a publish failed by FailPublishes
type Broker struct {
	mu         sync.Mutex
	ch         chan *broker.Delivery
	acks       []string
	rejects    map[string]bool
	published  []broker.Publishing
	declared   []string
	prefetch   []int
	stale      map[string]bool
	unroutable int
	events     chan string
}

// NewBroker returns an empty Broker.
func NewBroker() *Broker {
	return &Broker{ch: make(chan *broker.Delivery, 1000), rejects: map[string]bool{},
		stale: map[string]bool{}, events: make(chan string, 10000)}
}

var _ consumer.Broker = (*Broker)(nil)

// Declare records the queue names.
func (b *Broker) Declare(_ context.Context, qs ...broker.Queue) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, q := range qs {
		b.declared = append(b.declared, q.Name)
	}
	return nil
}

// Consume delivers what Send and SendRaw queue, whatever the queues; a
// delivery not taken when ctx ends is rejected with requeue, as a
// transport gives back what it buffered.
func (b *Broker) Consume(ctx context.Context, _ []broker.Queue, prefetch int) (<-chan *broker.Delivery, error) {
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
					_ = b.Reject(d, true)
					return
				}
			}
		}
	}()
	return out, nil
}

// SetPrefetch records n.
func (b *Broker) SetPrefetch(n int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.prefetch = append(b.prefetch, n)
	return nil
}

// Publish records p, or fails with broker.ErrUnroutable while
// FailPublishes has failures left.
func (b *Broker) Publish(_ context.Context, p broker.Publishing) error {
	b.mu.Lock()
	if b.unroutable > 0 {
		b.unroutable--
		b.mu.Unlock()
		b.event("unroutable:" + p.RoutingKey)
		return broker.ErrUnroutable
	}
	b.published = append(b.published, p)
	b.mu.Unlock()
	b.event("publish:" + p.RoutingKey)
	return nil
}

// Ack settles d; a delivery marked stale returns broker.ErrStaleDelivery,
// as a transport does for a message it has given back.
func (b *Broker) Ack(d *broker.Delivery) error {
	if b.Stale(d) {
		return broker.ErrStaleDelivery
	}
	b.mu.Lock()
	b.acks = append(b.acks, d.Tag)
	b.mu.Unlock()
	b.event("ack:" + d.Tag)
	return nil
}

// Reject settles d with or without requeue.
func (b *Broker) Reject(d *broker.Delivery, requeue bool) error {
	b.mu.Lock()
	b.rejects[d.Tag] = requeue
	b.mu.Unlock()
	b.event(fmt.Sprintf("reject:%s:%t", d.Tag, requeue))
	return nil
}

// Stale reports the tags marked with MarkStale (broker.Delivery.Stale).
func (b *Broker) Stale(d *broker.Delivery) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stale[d.Tag]
}

// MarkStale makes deliveries stale, as a lost channel makes them: the
// worker must not run them.
func (b *Broker) MarkStale(tags ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range tags {
		b.stale[t] = true
	}
}

// FailPublishes makes the next n publishes fail with ErrUnroutable.
func (b *Broker) FailPublishes(n int) {
	b.mu.Lock()
	b.unroutable = n
	b.mu.Unlock()
}

func (b *Broker) event(e string) {
	select {
	case b.events <- e:
	default:
	}
}

// Send delivers m to the worker with delivery tag tag, from queue "q".
func (b *Broker) Send(t TB, tag string, m *protocol.Message) {
	t.Helper()
	raw, err := protocol.Encode(m)
	if err != nil {
		t.Fatalf("consumertest: encoding %s: %v", m.ID, err)
	}
	b.SendRaw(tag, raw)
}

// Redeliver delivers m with Redelivered set, as a broker delivers again a
// message whose channel was lost before its ack arrived.
func (b *Broker) Redeliver(t TB, tag string, m *protocol.Message) {
	t.Helper()
	raw, err := protocol.Encode(m)
	if err != nil {
		t.Fatalf("consumertest: encoding %s: %v", m.ID, err)
	}
	b.ch <- &broker.Delivery{Raw: *raw, Queue: "q", RoutingKey: "q", Tag: tag, Acker: b, Redelivered: true}
}

// SendRaw delivers raw as it is (malformed messages included).
func (b *Broker) SendRaw(tag string, raw *protocol.Raw) {
	b.ch <- &broker.Delivery{Raw: *raw, Queue: "q", RoutingKey: "q", Tag: tag, Acker: b}
}

// WaitEvent waits up to five seconds for the event want (see Broker),
// skipping others; it fails the test on time-out.
func (b *Broker) WaitEvent(t TB, want string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e := <-b.events:
			if e == want {
				return
			}
		case <-timeout:
			t.Fatalf("consumertest: timed out waiting for %q", want)
			return
		}
	}
}

// Acks returns the acked tags, in order.
func (b *Broker) Acks() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.acks...)
}

// Rejected reports whether tag was rejected, and with requeue or not.
func (b *Broker) Rejected(tag string) (requeue, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	requeue, ok = b.rejects[tag]
	return requeue, ok
}

// Published returns what was published, in order.
func (b *Broker) Published() []broker.Publishing {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]broker.Publishing(nil), b.published...)
}

// Declared returns the declared queue names, in order.
func (b *Broker) Declared() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.declared...)
}

// Prefetch returns the prefetch last set (by Consume or SetPrefetch), or
// -1 before any.
func (b *Broker) Prefetch() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.prefetch) == 0 {
		return -1
	}
	return b.prefetch[len(b.prefetch)-1]
}

// StartWorker runs a worker for mux on a new Broker and Backend until the
// test ends, and fails the test if it does not stop cleanly. Queues
// default to one queue "q" and Concurrency to 2.
func StartWorker(t TB, mux *consumer.Mux, cfg consumer.Config) (*Broker, *Backend, *consumer.Worker) {
	t.Helper()
	b, be := NewBroker(), NewBackend()
	if cfg.Queues == nil {
		cfg.Queues = []broker.Queue{{Name: "q"}}
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 2
	}
	w, err := consumer.New(b, be, mux, cfg)
	if err != nil {
		t.Fatalf("consumertest: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("consumertest: Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("consumertest: the worker did not stop")
		}
	})
	return b, be, w
}
