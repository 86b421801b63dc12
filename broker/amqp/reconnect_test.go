package amqp

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
)

// The queues here are durable and not auto-delete: an auto-delete queue
// disappears with its last consumer, taking the unacked message with it,
// when the connection drops.

func TestReconnectAfterForcedClose(t *testing.T) {
	name := unique("gocelery-forced")
	b := dial(t, Config{Name: name, GlobalQoS: true, MinBackoff: 50 * time.Millisecond})
	q := broker.Queue{Name: unique("reconn")}
	newAdmin(t).cleanup([]string{q.Name}, []string{q.Name})
	ds := consume(t, b, 4, q)

	publish(t, b, text(q.Name, "before"))
	before := recv(t, ds)

	closeConnection(t, name)
	waitFor(t, 15*time.Second, "reconnect", func() bool { return b.Reconnects() == 1 && b.Connected() })

	if err := before.Ack(); !errors.Is(err, broker.ErrStaleDelivery) {
		t.Fatalf("Ack of a pre-drop delivery: %v, want ErrStaleDelivery", err)
	}
	again := recv(t, ds)
	if string(again.Body) != "before" || !again.Redelivered {
		t.Fatalf("after reconnect: %q redelivered=%v, want the same message redelivered", again.Body, again.Redelivered)
	}
	if err := again.Ack(); err != nil {
		t.Fatalf("Ack after reconnect: %v", err)
	}
	// The prefetch in force survives too.
	if err := b.SetPrefetch(1); err != nil {
		t.Fatal(err)
	}
	publish(t, b, text(q.Name, "after-1"))
	publish(t, b, text(q.Name, "after-2"))
	d := recv(t, ds)
	noRecv(t, ds, 300*time.Millisecond)
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
	if d := recv(t, ds); string(d.Body) != "after-2" {
		t.Errorf("got %q, want after-2", d.Body)
	} else if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
}

// TestReconnectAfterBrokerRestart stops and starts the RabbitMQ
// application under a consumer and a publisher. Other test binaries using
// RabbitMQ must not run meanwhile (go test -p 1).
func TestReconnectAfterBrokerRestart(t *testing.T) {
	needRabbit(t)
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		t.Skip("rabbitmqctl not available")
	}
	b := dial(t, Config{GlobalQoS: true, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	q := broker.Queue{Name: unique("restart")}
	newAdmin(t).cleanup([]string{q.Name}, []string{q.Name})
	ds := consume(t, b, 4, q)
	publish(t, b, text(q.Name, "before"))
	before := recv(t, ds)

	restarted := false
	t.Cleanup(func() { // never leave the broker stopped
		if !restarted {
			_ = exec.Command("rabbitmqctl", "start_app").Run()
		}
	})
	rabbitmqctl(t, "stop_app")
	waitFor(t, 10*time.Second, "the broker to be seen down", func() bool { return !b.Connected() })

	// A publish during the outage waits for the reconnect.
	published := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
		defer cancel()
		published <- b.Publish(ctx, text(q.Name, "during"))
	}()
	select {
	case err := <-published:
		t.Fatalf("Publish returned during the outage: %v", err)
	case <-time.After(300 * time.Millisecond):
	}

	rabbitmqctl(t, "start_app")
	restarted = true
	waitFor(t, 20*time.Second, "port 5672", func() bool { return portOpen("127.0.0.1:5672") })
	rabbitmqctl(t, "await_startup")
	waitFor(t, 15*time.Second, "reconnect", func() bool { return b.Connected() })
	if n := b.Reconnects(); n < 1 {
		t.Errorf("Reconnects() = %d after a restart", n)
	}
	if err := <-published; err != nil {
		t.Fatalf("Publish across the outage: %v", err)
	}
	if err := before.Ack(); !errors.Is(err, broker.ErrStaleDelivery) {
		t.Fatalf("Ack of a pre-restart delivery: %v, want ErrStaleDelivery", err)
	}
	got := map[string]bool{}
	for range 2 {
		d := recv(t, ds)
		got[string(d.Body)] = true
		if string(d.Body) == "before" && !d.Redelivered {
			t.Error("message from before the restart not marked redelivered")
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if !got["before"] || !got["during"] {
		t.Errorf("after the restart got %v, want before and during", got)
	}
}

// TestPublishWaitsForReconnect: during an outage Publish waits, bounded by
// its context, and succeeds once the connection is back.
func TestPublishWaitsForReconnect(t *testing.T) {
	name := unique("gocelery-outage")
	b := dial(t, Config{Name: name, MinBackoff: 1500 * time.Millisecond, MaxBackoff: 1500 * time.Millisecond})
	a := newAdmin(t)
	q := broker.Queue{Name: unique("outage")}
	a.cleanup([]string{q.Name}, []string{q.Name})
	if err := b.Declare(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	publish(t, b, text(q.Name, "1")) // the publishing channel exists

	closeConnection(t, name)
	waitFor(t, 5*time.Second, "the loss to be seen", func() bool { return !b.Connected() })
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := b.Publish(short, text(q.Name, "2")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish during the outage: %v, want DeadlineExceeded", err)
	}
	publish(t, b, text(q.Name, "3")) // waits for the reconnect
	if !b.Connected() || b.Reconnects() != 1 {
		t.Errorf("Connected %v, Reconnects %d", b.Connected(), b.Reconnects())
	}
	if n := a.messages(q.Name); n != 2 {
		t.Errorf("queue holds %d messages, want 2", n)
	}
}

// TestConsumerCancelledByServer: deleting a consumed queue makes RabbitMQ
// cancel the consumer (basic.cancel) while the connection lives; the
// consumer resubscribes, redeclaring the queue, as kombu does.
func TestConsumerCancelledByServer(t *testing.T) {
	b := dial(t, Config{MinBackoff: 20 * time.Millisecond})
	a := newAdmin(t)
	q := broker.Queue{Name: unique("cancelled")}
	a.cleanup([]string{q.Name}, []string{q.Name})
	ds := consume(t, b, 2, q)
	publish(t, b, text(q.Name, "1"))
	old := recv(t, ds)

	if _, err := a.channel().QueueDelete(q.Name, false, false, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the queue to come back", func() bool {
		_, err := a.channel().QueueDeclarePassive(q.Name, true, false, false, false, nil)
		return err == nil
	})
	if err := old.Ack(); !errors.Is(err, broker.ErrStaleDelivery) {
		t.Errorf("Ack from the cancelled generation: %v, want ErrStaleDelivery", err)
	}
	publish(t, b, text(q.Name, "2"))
	if d := recv(t, ds); string(d.Body) != "2" {
		t.Errorf("got %q, want 2", d.Body)
	} else if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
	if b.Reconnects() != 0 {
		t.Errorf("Reconnects() = %d: the connection should have stayed up", b.Reconnects())
	}
}
