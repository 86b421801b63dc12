package amqp

import (
	"context"
	"errors"
	"math/big"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
)

func TestRoundTrip(t *testing.T) {
	b := dial(t, Config{GlobalQoS: true})
	q := broker.Queue{Name: unique("rt"), Transient: true, AutoDelete: true, MaxPriority: 10}
	newAdmin(t).cleanup(nil, []string{q.Name})
	ds := consume(t, b, 4, q)

	when := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	sent := protocol.Raw{
		ContentType:     protocol.ContentTypeJSON,
		ContentEncoding: "utf-8",
		Headers: map[string]any{
			"lang": "py", "task": "proj.add", "id": "rt-1", "shadow": nil,
			"eta": "2030-01-02T03:04:05.678901+00:00", "expires": nil,
			"group": nil, "group_index": nil, "retries": 0,
			"timelimit": []any{30, 20}, "root_id": "rt-1", "parent_id": nil,
			"argsrepr": "(2, 2)", "kwargsrepr": "{}", "origin": "gen1@host",
			"ignore_result": false, "replaced_task_nesting": 0,
			"stamped_headers":  []string{"s1"},
			"stamps":           map[string]any{"s1": "v", "nested": map[string]any{"n": 1, "l": []any{nil, true}}},
			"x-null-timelimit": []any{nil, nil},
			"x-int64":          int64(1 << 40),
			"x-bigint":         big.NewInt(-1 << 50),
			"x-float":          2.5,
			"x-decimal":        protocol.Decimal("1.10"),
			"x-when":           when,
			"x-bytes":          []byte{0, 0xff},
		},
		Properties: protocol.Properties{
			CorrelationID: "rt-1",
			ReplyTo:       "reply-oid",
			DeliveryMode:  2,
			Priority:      5,
			Expiration:    "60000",
			Extra: map[string]any{
				"message_id": "m-1", "type": "celery-task", "user_id": "guest",
				"app_id": "gocelery", "timestamp": when,
			},
		},
		Body: []byte(`[[2, 2], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`),
	}
	publish(t, b, broker.Publishing{Raw: sent, RoutingKey: q.Name})
	d := recv(t, ds)
	if err := d.Ack(); err != nil {
		t.Fatalf("Ack: %v", err)
	}

	want := sent
	want.Headers = map[string]any{
		"lang": "py", "task": "proj.add", "id": "rt-1", "shadow": nil,
		"eta": "2030-01-02T03:04:05.678901+00:00", "expires": nil,
		"group": nil, "group_index": nil, "retries": int32(0),
		"timelimit": []any{int32(30), int32(20)}, "root_id": "rt-1", "parent_id": nil,
		"argsrepr": "(2, 2)", "kwargsrepr": "{}", "origin": "gen1@host",
		"ignore_result": false, "replaced_task_nesting": int32(0),
		"stamped_headers":  []any{"s1"},
		"stamps":           map[string]any{"s1": "v", "nested": map[string]any{"n": int32(1), "l": []any{nil, true}}},
		"x-null-timelimit": []any{nil, nil},
		"x-int64":          int64(1 << 40),
		"x-bigint":         int64(-1 << 50),
		"x-float":          2.5,
		"x-decimal":        protocol.Decimal("1.10"),
		"x-when":           when,
		"x-bytes":          []byte{0, 0xff},
	}
	if !reflect.DeepEqual(d.Raw, want) {
		for k, v := range want.Headers {
			if g := d.Headers[k]; !reflect.DeepEqual(g, v) {
				t.Errorf("header %s = %#v (%T), want %#v (%T)", k, g, g, v, v)
			}
		}
		t.Fatalf("delivered\n%#v\nwant\n%#v", d.Raw, want)
	}
	if d.Queue != q.Name || d.RoutingKey != q.Name || d.Exchange != "" || d.Redelivered || d.Tag != "1" {
		t.Errorf("delivery info: queue %q exchange %q key %q redelivered %v tag %q", d.Queue, d.Exchange, d.RoutingKey, d.Redelivered, d.Tag)
	}
	m, err := protocol.Decode(&d.Raw)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if m.Task != "proj.add" || m.TimeLimit != (protocol.TimeLimit{Hard: 30 * time.Second, Soft: 20 * time.Second}) ||
		m.Properties.Priority != 5 || len(m.Args) != 2 {
		t.Errorf("decoded %+v", m)
	}
}

func TestPublishHeaderErrors(t *testing.T) {
	b := dial(t, Config{})
	p := text("nowhere", "x")
	p.Headers = map[string]any{"huge": new(big.Int).Lsh(big.NewInt(1), 80)}
	if err := b.Publish(context.Background(), p); !errors.Is(err, ErrHeaderValue) {
		t.Errorf("Publish with a 2^80 header: %v, want ErrHeaderValue", err)
	}
}

func TestQoS(t *testing.T) {
	tests := []struct {
		name      string
		global    bool
		afterSet3 int // deliveries in flight after SetPrefetch(3)
	}{
		{"global", true, 3},
		// RabbitMQ fixes a per-consumer limit at basic.consume: basic.qos
		// later only affects new consumers.
		{"per consumer", false, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := dial(t, Config{GlobalQoS: tt.global})
			q := broker.Queue{Name: unique("qos"), Transient: true, AutoDelete: true}
			newAdmin(t).cleanup(nil, []string{q.Name})
			if err := b.Declare(context.Background(), q); err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				publish(t, b, text(q.Name, strconv.Itoa(i)))
			}
			ds := consume(t, b, 2, q)
			held := []*broker.Delivery{recv(t, ds), recv(t, ds)}
			noRecv(t, ds, 300*time.Millisecond)

			if err := held[0].Ack(); err != nil {
				t.Fatal(err)
			}
			held = append(held[1:], recv(t, ds))
			noRecv(t, ds, 300*time.Millisecond)

			if err := b.SetPrefetch(3); err != nil {
				t.Fatal(err)
			}
			if err := b.SetPrefetch(3); err != nil { // no-op
				t.Fatal(err)
			}
			for len(held) < tt.afterSet3 {
				held = append(held, recv(t, ds))
			}
			noRecv(t, ds, 300*time.Millisecond)
			for _, d := range held {
				if err := d.Ack(); err != nil {
					t.Fatal(err)
				}
			}
			if err := held[0].Ack(); !errors.Is(err, ErrAlreadySettled) {
				t.Errorf("second Ack: %v, want ErrAlreadySettled", err)
			}
		})
	}
}

func TestSetPrefetchConcurrent(t *testing.T) {
	b := dial(t, Config{GlobalQoS: true})
	q := broker.Queue{Name: unique("qosc"), Transient: true, AutoDelete: true}
	newAdmin(t).cleanup(nil, []string{q.Name})
	consume(t, b, 1, q)
	done := make(chan error)
	for i := range 8 {
		go func() {
			var err error
			for j := range 50 {
				err = errors.Join(err, b.SetPrefetch(1+(i+j)%10))
			}
			done <- err
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SetPrefetch(7); err != nil {
		t.Fatal(err)
	}
	b.qosMu.Lock()
	defer b.qosMu.Unlock()
	for cc := range b.channels {
		if cc.applied != 7 {
			t.Errorf("channel prefetch %d, want 7", cc.applied)
		}
	}
}

func TestReject(t *testing.T) {
	b := dial(t, Config{})
	a := newAdmin(t)
	dlx := unique("dlx")
	dead := broker.Queue{Name: unique("dead"), Exchange: dlx, ExchangeType: "fanout", Transient: true, AutoDelete: true}
	q := broker.Queue{Name: unique("rej"), Transient: true, AutoDelete: true,
		Arguments: map[string]any{"x-dead-letter-exchange": dlx}}
	a.cleanup(nil, []string{q.Name, dlx})
	if err := b.Declare(context.Background(), dead); err != nil {
		t.Fatal(err)
	}
	ds := consume(t, b, 10, q)
	deadDs := consume(t, b, 10, dead)

	publish(t, b, text(q.Name, "again"))
	d := recv(t, ds)
	if d.Redelivered {
		t.Error("first delivery marked redelivered")
	}
	if err := d.Reject(true); err != nil {
		t.Fatal(err)
	}
	d = recv(t, ds)
	if string(d.Body) != "again" || !d.Redelivered {
		t.Errorf("requeued: body %q redelivered %v", d.Body, d.Redelivered)
	}
	if err := d.Reject(false); err != nil {
		t.Fatal(err)
	}
	noRecv(t, ds, 200*time.Millisecond)

	dd := recv(t, deadDs)
	if string(dd.Body) != "again" {
		t.Errorf("dead-lettered body %q", dd.Body)
	}
	// x-death: an array of tables with a timestamp and a 64-bit count.
	deaths, ok := dd.Headers["x-death"].([]any)
	if !ok || len(deaths) != 1 {
		t.Fatalf("x-death = %#v", dd.Headers["x-death"])
	}
	death, ok := deaths[0].(map[string]any)
	if !ok || death["reason"] != "rejected" || death["queue"] != q.Name || death["count"] != int64(1) {
		t.Errorf("x-death[0] = %#v", deaths[0])
	}
	if _, ok := death["time"].(time.Time); !ok {
		t.Errorf("x-death time = %T, want time.Time", death["time"])
	}
	if err := dd.Ack(); err != nil {
		t.Fatal(err)
	}
}

func TestMandatoryAndConfirms(t *testing.T) {
	b := dial(t, Config{})
	a := newAdmin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	p := text(unique("nosuchqueue"), "lost")
	p.Mandatory = true
	if err := b.Publish(ctx, p); !errors.Is(err, broker.ErrUnroutable) {
		t.Fatalf("mandatory to no queue: %v, want ErrUnroutable", err)
	}
	p.Mandatory = false
	if err := b.Publish(ctx, p); err != nil {
		t.Fatalf("non-mandatory to no queue: %v, want nil (dropped)", err)
	}

	// A confirm means the queue has the message: no polling needed.
	q := broker.Queue{Name: unique("conf"), Transient: true, AutoDelete: false}
	a.cleanup([]string{q.Name}, []string{q.Name})
	if err := b.Declare(ctx, q); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		p := text(q.Name, "x")
		p.Mandatory = i%2 == 0
		if err := b.Publish(ctx, p); err != nil {
			t.Fatal(err)
		}
		if n := a.messages(q.Name); n != i {
			t.Fatalf("after confirmed publish %d the queue holds %d", i, n)
		}
	}

	// Unroutable and routable mandatory publishes, concurrently and all
	// in flight at once (they are pipelined): same body, so each return
	// must be told apart by its routing key.
	const n = 400
	errs := make(chan error, n)
	for i := range n {
		go func() {
			p := text(q.Name, "same")
			if i%2 == 1 {
				p.RoutingKey = unique("nosuchqueue")
			}
			p.Mandatory = true
			err := b.Publish(ctx, p)
			if i%2 == 1 && !errors.Is(err, broker.ErrUnroutable) {
				err = errors.New("unroutable publish " + strconv.Itoa(i) + " returned " + errString(err))
			} else if i%2 == 0 && err != nil {
				err = errors.New("routable publish " + strconv.Itoa(i) + " returned " + err.Error())
			} else {
				err = nil
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := a.messages(q.Name); got != 3+n/2 {
		t.Errorf("queue holds %d messages, want %d", got, 3+n/2)
	}

	// A channel error (no such exchange) is the caller's, not retried.
	bad := text("k", "x")
	bad.Exchange = unique("nosuchexchange")
	if err := b.Publish(ctx, bad); err == nil || ctx.Err() != nil || errors.Is(err, broker.ErrUnroutable) {
		t.Fatalf("publish to a missing exchange: %v", err)
	}
	if err := b.Publish(ctx, text(q.Name, "after")); err != nil {
		t.Fatalf("publish after a channel error: %v", err)
	}
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

func TestNack(t *testing.T) {
	b := dial(t, Config{})
	q := broker.Queue{Name: unique("full"), Transient: true, AutoDelete: true,
		Arguments: map[string]any{"x-max-length": 1, "x-overflow": "reject-publish"}}
	newAdmin(t).cleanup(nil, []string{q.Name})
	if err := b.Declare(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	publish(t, b, text(q.Name, "1"))
	if err := b.Publish(context.Background(), text(q.Name, "2")); !errors.Is(err, ErrNacked) {
		t.Fatalf("publish to a full queue: %v, want ErrNacked", err)
	}
	// A nack moves later publishes to a new channel (see recycle): they,
	// and the ones in flight on the old channel, are confirmed; the full
	// queue keeps refusing.
	other := broker.Queue{Name: unique("afternack"), Transient: true, AutoDelete: true}
	if err := b.Declare(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if i%5 == 0 {
				if err := b.Publish(context.Background(), text(q.Name, "more")); !errors.Is(err, ErrNacked) {
					t.Errorf("publish %d to the full queue: %v, want ErrNacked", i, err)
				}
				return
			}
			if err := b.Publish(context.Background(), text(other.Name, "ok")); err != nil {
				t.Errorf("publish %d after a nack: %v", i, err)
			}
		})
	}
	wg.Wait()
	if n := newAdmin(t).messages(other.Name); n != 16 {
		t.Errorf("%d messages in %s, want 16", n, other.Name)
	}
}

func TestDeclare(t *testing.T) {
	b := dial(t, Config{})
	a := newAdmin(t)
	ctx := context.Background()
	q := broker.Queue{Name: unique("decl"), Exchange: unique("declx"), ExchangeType: "topic", RoutingKey: "a.#", Transient: true, AutoDelete: true}
	a.cleanup(nil, []string{q.Exchange})
	if err := b.Declare(ctx, q); err != nil {
		t.Fatal(err)
	}
	ds := consume(t, b, 1, q)
	p := text("a.b.c", "topic")
	p.Exchange = q.Exchange
	publish(t, b, p)
	if d := recv(t, ds); string(d.Body) != "topic" || d.Exchange != q.Exchange || d.RoutingKey != "a.b.c" {
		t.Errorf("delivery %q from %q key %q", d.Body, d.Exchange, d.RoutingKey)
	}

	// amq.* exchanges are only checked, never declared.
	amq := broker.Queue{Name: unique("amq"), Exchange: "amq.direct", Transient: true, AutoDelete: true}
	if err := b.Declare(ctx, amq); err != nil {
		t.Fatalf("declare bound to amq.direct: %v", err)
	}
	a.cleanup([]string{amq.Name}, nil)

	// Redeclaring with other arguments is refused and not remembered.
	other := q
	other.MaxPriority = 5
	if err := b.Declare(ctx, other); err == nil {
		t.Fatal("redeclaring with x-max-priority succeeded")
	}
	b.mu.Lock()
	n := len(b.topology)
	b.mu.Unlock()
	if n != 2 {
		t.Errorf("remembered %d declarations, want 2", n)
	}
	if err := b.Declare(ctx, broker.Queue{}); err == nil {
		t.Error("declaring an unnamed queue succeeded")
	}
}

func TestConsumeContextCancel(t *testing.T) {
	b := dial(t, Config{})
	a := newAdmin(t)
	q := broker.Queue{Name: unique("stop"), Transient: true}
	a.cleanup([]string{q.Name}, []string{q.Name})
	if err := b.Declare(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		publish(t, b, text(q.Name, strconv.Itoa(i)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	ds, err := b.Consume(ctx, []broker.Queue{q}, 5)
	if err != nil {
		t.Fatal(err)
	}
	held := recv(t, ds)
	waitFor(t, 5*time.Second, "prefetch to fill", func() bool { return a.messages(q.Name) == 0 })
	cancel()
	for d := range ds { // handed over while stopping: give back
		if err := d.Reject(true); err != nil {
			t.Fatal(err)
		}
	}
	// The four never handed over went back at once; the held one can
	// still be acked, which lets the channel close.
	waitFor(t, 5*time.Second, "requeue", func() bool { return a.messages(q.Name) == 4 })
	if err := held.Ack(); err != nil {
		t.Fatalf("Ack after the consumer stopped: %v", err)
	}
	waitFor(t, 5*time.Second, "consumer to end", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.consumers) == 0
	})
	if n := a.messages(q.Name); n != 4 {
		t.Errorf("queue holds %d, want 4", n)
	}
}

func TestClose(t *testing.T) {
	needRabbit(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	b := dial(t, Config{})
	q := broker.Queue{Name: unique("close"), Transient: true, AutoDelete: true}
	ds := consume(t, b, 1, q)
	publish(t, b, text(q.Name, "x"))
	d := recv(t, ds)
	if !b.Connected() {
		t.Error("Connected() = false")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	select {
	case _, ok := <-ds:
		if ok {
			t.Fatal("delivery after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("deliveries channel not closed by Close")
	}
	if err := d.Ack(); !errors.Is(err, broker.ErrStaleDelivery) {
		t.Errorf("Ack after Close: %v, want ErrStaleDelivery", err)
	}
	if err := b.Publish(context.Background(), text(q.Name, "y")); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, err := b.Consume(context.Background(), []broker.Queue{q}, 1); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Consume after Close: %v, want ErrClosed", err)
	}
	if b.Connected() {
		t.Error("Connected() after Close")
	}
}

func TestDialErrors(t *testing.T) {
	needRabbit(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Dial(ctx, "amqp://guest:wrong@127.0.0.1:5672//", Config{}); err == nil {
		t.Error("Dial with a wrong password succeeded")
	}
	if _, err := Dial(ctx, "amqp://guest:guest@127.0.0.1:5672/no-such-vhost", Config{}); err == nil {
		t.Error("Dial to a missing vhost succeeded")
	}
	if _, err := Dial(ctx, "redis://127.0.0.1:6379/0", Config{}); !errors.Is(err, ErrURL) {
		t.Errorf("Dial redis://: %v, want ErrURL", err)
	}
	short, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := Dial(short, brokerURL(), Config{}); err == nil {
		t.Error("Dial with a cancelled context succeeded")
	}
}

// TestChannelErrorIsolation: publishes to a missing exchange fail without
// failing the publishes in flight beside them. A never-declared exchange
// is caught by a passive check; one deleted after its first use makes
// RabbitMQ close the shared publishing channel, and the publishes in
// flight on it are sent again.
func TestChannelErrorIsolation(t *testing.T) {
	b := dial(t, Config{})
	a := newAdmin(t)
	q := broker.Queue{Name: unique("iso"), Transient: true}
	a.cleanup([]string{q.Name}, []string{q.Name})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Declare(ctx, q); err != nil {
		t.Fatal(err)
	}
	const good, bad = 200, 6
	missing := make([]string, bad)
	for i := range missing {
		missing[i] = unique("missing")
		if i%2 == 0 { // used once, then deleted under the publisher
			if err := a.channel().ExchangeDeclare(missing[i], "direct", false, true, false, false, nil); err != nil {
				t.Fatal(err)
			}
			p := text("k", "first")
			p.Exchange = missing[i]
			publish(t, b, p)
			if err := a.channel().ExchangeDelete(missing[i], false, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	errs := make(chan error, good+bad)
	for i := range good + bad {
		go func() {
			if i < bad {
				p := text("k", "x")
				p.Exchange = missing[i]
				err := b.Publish(ctx, p)
				if err == nil || ctx.Err() != nil {
					err = errors.New("publish to a missing exchange: " + errString(err))
				} else {
					err = nil
				}
				errs <- err
				return
			}
			errs <- b.Publish(ctx, text(q.Name, strconv.Itoa(i)))
		}()
	}
	for range good + bad {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	// At least once: a message routed just before the channel closed,
	// its confirm lost, is sent again.
	if n := a.messages(q.Name); n < good {
		t.Errorf("queue holds %d of %d good messages", n, good)
	} else {
		t.Logf("%d messages for %d good publishes", n, good)
	}
}
