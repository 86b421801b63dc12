package amqp

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
)

// Acks are coalesced into multiple-acks at the frontier only: a message
// held unacked (an ETA task) must not delay other acks, a rejected tag must
// never be named by a multiple-ack (RabbitMQ would close the channel), and
// concurrent acks must all land, by Ack or by AckDeferred.
func TestAckFrontier(t *testing.T) {
	for _, deferred := range []bool{false, true} {
		t.Run(map[bool]string{false: "Ack", true: "AckDeferred"}[deferred], func(t *testing.T) {
			testAckFrontier(t, deferred)
		})
	}
}

func testAckFrontier(t *testing.T, deferred bool) {
	b, a, q, ds, got := received(t, "frontier", 40)
	held := got[0] // the frontier stays here while the others settle
	// Reject a few in the middle, ack the rest concurrently.
	var wg sync.WaitGroup
	for i, d := range got[1:] {
		wg.Add(1)
		go func(i int, d *broker.Delivery) {
			defer wg.Done()
			var err error
			switch {
			case i%10 == 5:
				err = d.Reject(false)
			case deferred:
				err = d.AckDeferred()
			default:
				err = d.Ack()
			}
			if err != nil {
				t.Errorf("settle %s: %v", d.Tag, err)
			}
		}(i, d)
	}
	wg.Wait()
	// Everything but the held one is settled at the broker already.
	waitFor(t, 5*time.Second, "39 settled", func() bool { return unackedCount(t, q.Name) == 1 })
	if err := held.Ack(); err != nil { // frontier ack: names only its own tag
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "all settled", func() bool { return unackedCount(t, q.Name) == 0 })
	// The channel survived: a new message still arrives and acks.
	publish(t, b, text(q.Name, "after"))
	d := recv(t, ds)
	if string(d.Body) != "after" {
		t.Fatalf("body %q", d.Body)
	}
	if err := d.AckDeferred(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "queue empty", func() bool { return unackedCount(t, q.Name) == 0 && a.messages(q.Name) == 0 })
	if b.Reconnects() != 0 {
		t.Errorf("channel was lost %d times", b.Reconnects())
	}
}

// unackedCount asks rabbitmqctl: AMQP does not expose it.
func unackedCount(t testing.TB, queue string) int {
	out := rabbitmqctl(t, "-q", "list_queues", "name", "messages_unacknowledged")
	for _, line := range strings.Split(out, "\n") {
		var name string
		var count int
		if f := strings.Fields(line); len(f) == 2 {
			name = f[0]
			count, _ = strconv.Atoi(f[1])
		}
		if name == queue {
			return count
		}
	}
	return -1
}

// Close sends the acks AckDeferred still holds before it closes the
// connection: deferred acks of tasks that ran must not make RabbitMQ
// redeliver them. Only the unsettled message comes back.
func TestCloseSendsDeferredAcks(t *testing.T) {
	for round := range 5 { // a tick landing before Close would hide a missing flush
		b, a, q, _, got := received(t, "deferclose", 20)
		for _, d := range got[1:] { // above the frontier, held by got[0]: deferred
			if err := d.AckDeferred(); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the unsettled message requeued", func() bool { return a.messages(q.Name) >= 1 })
		time.Sleep(100 * time.Millisecond)
		if m := a.messages(q.Name); m != 1 {
			t.Fatalf("round %d: %d messages back in the queue after Close, want 1 (deferred acks lost)", round, m)
		}
	}
}

// received declares a fresh queue, publishes n messages to it and receives
// them all unsettled, with prefetch n.
func received(t *testing.T, prefix string, n int) (*Broker, *admin, broker.Queue, <-chan *broker.Delivery, []*broker.Delivery) {
	t.Helper()
	b := dial(t, Config{})
	a := newAdmin(t)
	q := broker.Queue{Name: unique(prefix)}
	a.cleanup([]string{q.Name}, []string{q.Name})
	if err := b.Declare(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		publish(t, b, text(q.Name, strconv.Itoa(i)))
	}
	ds := consume(t, b, n, q)
	got := make([]*broker.Delivery, 0, n)
	for range n {
		got = append(got, recv(t, ds))
	}
	return b, a, q, ds, got
}
