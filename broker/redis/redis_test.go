package redis

import (
	"context"
	"errors"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
)

func TestRoundTrip(t *testing.T) {
	pfx := unique("rt") + ":"
	newAdmin(t, testDB).cleanupPrefix(pfx)
	b := dial(t, testDB, Config{KeyPrefix: pfx})
	q := broker.Queue{Name: "rt"}
	ds := consume(t, b, 4, q)

	when := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	sent := protocol.Raw{
		ContentType:     protocol.ContentTypeJSON,
		ContentEncoding: "utf-8",
		Headers: map[string]any{
			"lang": "py", "task": "proj.add", "id": "rt-1", "shadow": nil,
			"eta": "2030-01-02T03:04:05.678901+00:00", "expires": nil,
			"retries": int64(0), "timelimit": []any{int64(30), int64(20)},
			"stamps":   map[string]any{"nested": map[string]any{"l": []any{nil, true}}},
			"x-bigint": new(big.Int).Lsh(big.NewInt(1), 70),
			"x-float":  2.5,
			"x-when":   when,
			"x-text":   "é\u2028\"quoted\"",
		},
		Properties: protocol.Properties{
			CorrelationID: "rt-1",
			ReplyTo:       "reply-oid",
			DeliveryMode:  2,
			Priority:      0,
			Extra:         map[string]any{"origin": "gen1@host"},
		},
		Body: []byte(`[[2, 2], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`),
	}
	publish(t, b, broker.Publishing{Raw: sent, RoutingKey: q.Name})
	d := recv(t, ds)
	if w, ok := d.Headers["x-when"].(time.Time); !ok || !w.Equal(when) {
		t.Errorf("x-when = %#v", d.Headers["x-when"])
	}
	d.Headers["x-when"] = when // decoded in the local zone
	if !reflect.DeepEqual(d.Raw, sent) {
		t.Errorf("delivered\n%#v\nsent\n%#v", d.Raw, sent)
	}
	if d.Queue != q.Name || d.RoutingKey != q.Name || d.Exchange != "" || d.Redelivered || len(d.Tag) != 36 {
		t.Errorf("delivery info: queue %q exchange %q key %q redelivered %v tag %q", d.Queue, d.Exchange, d.RoutingKey, d.Redelivered, d.Tag)
	}
	if err := d.Ack(); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	m, err := protocol.Decode(&d.Raw)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if m.Task != "proj.add" || m.TimeLimit != (protocol.TimeLimit{Hard: 30 * time.Second, Soft: 20 * time.Second}) || len(m.Args) != 2 {
		t.Errorf("decoded %+v", m)
	}
}

// TestPriorityLists checks which list each priority lands in and that
// consumers serve the lowest number first, as kombu.
func TestPriorityLists(t *testing.T) {
	tests := []struct {
		priority int
		list     string
	}{
		{-3, "q"}, {0, "q"}, {2, "q"}, {3, "q\x06\x163"}, {5, "q\x06\x163"},
		{6, "q\x06\x166"}, {7, "q\x06\x166"}, {9, "q\x06\x169"}, {200, "q\x06\x169"},
	}
	pfx := unique("pri") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	b := dial(t, testDB, Config{KeyPrefix: pfx})
	for _, tt := range tests {
		p := text("q", strconv.Itoa(tt.priority))
		p.Properties.Priority = tt.priority
		publish(t, b, p)
		got := a.list(pfx + tt.list)
		if len(got) != 1 || !strings.Contains(got[0], `"priority": `+strconv.Itoa(tt.priority)) {
			t.Errorf("priority %d: list %q holds %q", tt.priority, tt.list, got)
		}
		a.Del(context.Background(), pfx+tt.list)
	}

	for _, p := range []int{9, 7, 0, 4} {
		m := text("q", strconv.Itoa(p))
		m.Properties.Priority = p
		publish(t, b, m)
	}
	ds := consume(t, b, 0, broker.Queue{Name: "q"})
	var order []string
	for range 4 {
		d := recv(t, ds)
		order = append(order, string(d.Body))
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"0", "4", "7", "9"}; !slices.Equal(order, want) {
		t.Errorf("consumed in order %v, want %v", order, want)
	}
}

func TestRouting(t *testing.T) {
	pfx := unique("route") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	b := dial(t, testDB, Config{KeyPrefix: pfx})
	ctx := context.Background()
	err := b.Declare(ctx,
		broker.Queue{Name: "d1", Exchange: "dx", RoutingKey: "k"},
		broker.Queue{Name: "d2", Exchange: "dx", RoutingKey: "k"},
		broker.Queue{Name: "d3", Exchange: "dx", RoutingKey: "other"},
		broker.Queue{Name: "t1", Exchange: "tx", ExchangeType: "topic", RoutingKey: "a.*.#"},
		broker.Queue{Name: "t2", Exchange: "tx", ExchangeType: "topic", RoutingKey: "#"},
		broker.Queue{Name: "f1", Exchange: "fx", ExchangeType: "fanout"},
	)
	if err != nil {
		t.Fatal(err)
	}
	sub := a.PSubscribe(ctx, pfx+"/10.fx/*")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription confirmation
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		exchange   string
		key        string
		mandatory  bool
		queues     []string
		unroutable bool
	}{
		{"anonymous", "", "anyq", true, []string{"anyq"}, false},
		{"direct, two queues", "dx", "k", true, []string{"d1", "d2"}, false},
		{"direct, one queue", "dx", "other", false, []string{"d3"}, false},
		{"direct, no match", "dx", "none", false, nil, false},
		{"direct, no match, mandatory", "dx", "none", true, nil, true},
		{"topic, both", "tx", "a.b.c", true, []string{"t1", "t2"}, false},
		{"topic, # only", "tx", "a.b", true, []string{"t2"}, false},
		{"unknown exchange", "nox", "k", true, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := text(tt.key, tt.name)
			p.Exchange, p.Mandatory = tt.exchange, tt.mandatory
			err := b.Publish(ctx, p)
			if tt.unroutable != errors.Is(err, broker.ErrUnroutable) || (!tt.unroutable && err != nil) {
				t.Fatalf("Publish: %v", err)
			}
			for _, q := range []string{"anyq", "d1", "d2", "d3", "t1", "t2", "f1"} {
				got := a.list(pfx + q)
				if want := slices.Contains(tt.queues, q); want != (len(got) == 1) || len(got) > 1 {
					t.Errorf("queue %s holds %d messages, want routed=%v", q, len(got), want)
				}
				for _, m := range got {
					if !strings.Contains(m, `"delivery_info": {"exchange": "`+tt.exchange+`", "routing_key": "`+tt.key+`"}`) {
						t.Errorf("queue %s: delivery_info in %s", q, m)
					}
				}
				a.Del(ctx, pfx+q)
			}
		})
	}

	// Fanout is PUB/SUB: nothing is stored.
	p := text("rk", "fan")
	p.Exchange = "fx"
	publish(t, b, p)
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Channel != pfx+"/10.fx/rk" || !strings.Contains(msg.Payload, `"body": "ZmFu"`) {
		t.Errorf("fanout message on %q: %s", msg.Channel, msg.Payload)
	}
	if a.llen(pfx+"f1") != 0 {
		t.Error("fanout message stored in a list")
	}
	// Nobody listens on another fanout exchange.
	if err := b.Declare(ctx, broker.Queue{Name: "f2", Exchange: "fx2", ExchangeType: "fanout"}); err != nil {
		t.Fatal(err)
	}
	p.Exchange, p.Mandatory = "fx2", true
	if err := b.Publish(ctx, p); !errors.Is(err, broker.ErrUnroutable) {
		t.Errorf("fanout with no subscriber, mandatory: %v", err)
	}
}

func TestSettle(t *testing.T) {
	tests := []struct {
		name string
		op   func(*broker.Delivery) error
		// the queue afterwards, front first
		list        []string
		redelivered bool
	}{
		{"ack", (*broker.Delivery).Ack, []string{"other"}, false},
		{"reject", func(d *broker.Delivery) error { return d.Reject(false) }, []string{"other"}, false},
		// kombu's reject(requeue=True) LPUSHes: the back of the queue.
		{"requeue", func(d *broker.Delivery) error { return d.Reject(true) }, []string{"other", "msg"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pfx := unique("settle") + ":"
			a := newAdmin(t, testDB)
			a.cleanupPrefix(pfx)
			b := dial(t, testDB, Config{KeyPrefix: pfx})
			q := broker.Queue{Name: "q"}
			publish(t, b, text("q", "msg"))
			ds := consume(t, b, 1, q)
			d := recv(t, ds)
			if !a.hexists(pfx+"unacked", d.Tag) {
				t.Fatal("delivery not recorded in unacked")
			}
			publish(t, b, text("q", "other"))
			if err := tt.op(d); err != nil {
				t.Fatal(err)
			}
			if a.hexists(pfx+"unacked", d.Tag) || a.ZScore(context.Background(), pfx+"unacked_index", d.Tag).Err() != redis.Nil {
				t.Error("still in unacked after settling")
			}
			// With prefetch 1 the consumer takes the front message and
			// then waits: the list stays as the settle left it.
			last := recv(t, ds)
			got := []string{string(last.Body)}
			for _, m := range a.list(pfx + "q") {
				env, err := protocol.ParseEnvelope([]byte(m), 0)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, string(env.Body))
				if env.Headers["redelivered"] != true || !deliveryInfoRedelivered([]byte(m)) {
					t.Errorf("requeued message not marked redelivered: %s", m)
				}
			}
			if !slices.Equal(got, tt.list) {
				t.Errorf("queue holds %q, want %q", got, tt.list)
			}
			if err := last.Ack(); err != nil {
				t.Fatal(err)
			}
			if tt.redelivered {
				d2 := recv(t, ds)
				if !d2.Redelivered || d2.Tag != d.Tag {
					t.Errorf("requeued delivery: redelivered %v, tag %q (was %q)", d2.Redelivered, d2.Tag, d.Tag)
				}
				if err := d2.Ack(); err != nil {
					t.Fatal(err)
				}
			}
			for _, again := range []func() error{d.Ack, func() error { return d.Reject(true) }} {
				if err := again(); !errors.Is(err, ErrAlreadySettled) {
					t.Errorf("settling twice: %v, want ErrAlreadySettled", err)
				}
			}
			other := dial(t, testDB, Config{KeyPrefix: pfx})
			if err := other.Ack(d); !errors.Is(err, ErrForeignDelivery) {
				t.Errorf("settling with another broker: %v, want ErrForeignDelivery", err)
			}
		})
	}
}

func TestQoS(t *testing.T) {
	pfx := unique("qos") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	b := dial(t, testDB, Config{KeyPrefix: pfx})
	q := broker.Queue{Name: "q"}
	for i := range 5 {
		publish(t, b, text("q", strconv.Itoa(i)))
	}
	ds := consume(t, b, 2, q)
	held := []*broker.Delivery{recv(t, ds), recv(t, ds)}
	noRecv(t, ds, 300*time.Millisecond)
	if n := a.llen(pfx + "q"); n != 3 {
		t.Errorf("%d messages left in the list, want 3: no BRPOP past the prefetch", n)
	}

	if err := held[0].Ack(); err != nil {
		t.Fatal(err)
	}
	held = append(held[1:], recv(t, ds))
	noRecv(t, ds, 300*time.Millisecond)

	if err := b.SetPrefetch(3); err != nil {
		t.Fatal(err)
	}
	held = append(held, recv(t, ds))
	noRecv(t, ds, 300*time.Millisecond)
	if err := b.SetPrefetch(0); err != nil { // unlimited
		t.Fatal(err)
	}
	held = append(held, recv(t, ds))
	for i, d := range held {
		if string(d.Body) != strconv.Itoa(i+1) {
			t.Errorf("delivery %d is %q: FIFO broken", i, d.Body)
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SetPrefetch(-1); err == nil {
		t.Error("SetPrefetch(-1): no error")
	}
}

// TestRoundRobin checks that a busy queue does not starve another: the
// queue that delivered goes to the end of the BRPOP order.
func TestRoundRobin(t *testing.T) {
	pfx := unique("rr") + ":"
	newAdmin(t, testDB).cleanupPrefix(pfx)
	b := dial(t, testDB, Config{KeyPrefix: pfx})
	for i := range 4 {
		publish(t, b, text("busy", "busy"+strconv.Itoa(i)))
		publish(t, b, text("calm", "calm"+strconv.Itoa(i)))
	}
	ds := consume(t, b, 0, broker.Queue{Name: "busy"}, broker.Queue{Name: "calm"})
	var got []string
	for range 8 {
		d := recv(t, ds)
		got = append(got, d.Queue)
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"busy", "calm", "busy", "calm", "busy", "calm", "busy", "calm"}
	if !slices.Equal(got, want) {
		t.Errorf("consumed from %v, want alternating %v", got, want)
	}
}

// TestClose checks kombu's restore_at_shutdown: deliveries handed out and
// not settled go back to the front, in their order, marked redelivered.
func TestClose(t *testing.T) {
	pfx := unique("close") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	b := dial(t, testDB, Config{KeyPrefix: pfx})
	q := broker.Queue{Name: "q"}
	for i := range 5 {
		publish(t, b, text("q", strconv.Itoa(i)))
	}
	ds := consume(t, b, 3, q)
	var held []*broker.Delivery
	for range 3 {
		held = append(held, recv(t, ds))
	}
	if err := held[1].Ack(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ds; ok {
		t.Error("deliveries channel open after Close")
	}
	if n, _ := a.HLen(context.Background(), pfx+"unacked").Result(); n != 0 {
		t.Errorf("%d entries left in unacked", n)
	}
	var bodies []string
	for _, m := range a.list(pfx + "q") {
		env, err := protocol.ParseEnvelope([]byte(m), 0)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, string(env.Body))
		if redelivered := env.Headers["redelivered"] == true; redelivered != (env.Body[0] < '3') {
			t.Errorf("message %s: redelivered %v", env.Body, redelivered)
		}
	}
	if want := []string{"0", "2", "3", "4"}; !slices.Equal(bodies, want) {
		t.Errorf("queue after Close holds %v, want %v (given back to the front, in order)", bodies, want)
	}
	if err := held[0].Ack(); !errors.Is(err, broker.ErrStaleDelivery) {
		t.Errorf("Ack after Close: %v, want ErrStaleDelivery", err)
	}
	for _, err := range []error{
		b.Publish(context.Background(), text("q", "x")),
		b.Declare(context.Background(), q),
		func() error { _, err := b.Consume(context.Background(), []broker.Queue{q}, 1); return err }(),
	} {
		if !errors.Is(err, broker.ErrClosed) {
			t.Errorf("after Close: %v, want ErrClosed", err)
		}
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestStopConsuming checks what a cancelled Consume leaves: the delivery
// waiting to be handed over goes back to the front at once, those handed
// over stay settleable.
func TestStopConsuming(t *testing.T) {
	pfx := unique("stop") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	b := dial(t, testDB, Config{KeyPrefix: pfx})
	for i := range 3 {
		publish(t, b, text("q", strconv.Itoa(i)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	ds, err := b.Consume(ctx, []broker.Queue{{Name: "q"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	d := recv(t, ds)
	// The consumer now holds messages 1 and 2 (one pop takes what the
	// prefetch allows), waiting to hand them over.
	waitFor(t, 5*time.Second, "the next messages to be taken", func() bool { return a.llen(pfx+"q") == 0 })
	start := time.Now()
	cancel()
	// Not reading: a receive racing with the cancel could still be handed
	// the message (and it would be settleable).
	waitFor(t, 5*time.Second, "the message to be given back", func() bool { return a.llen(pfx+"q") == 2 })
	for range ds {
		t.Error("delivery after cancel")
	}
	if el := time.Since(start); el > 500*time.Millisecond {
		t.Errorf("stopping took %v: the BRPOP was not interrupted", el)
	}
	var bodies []string
	for _, m := range a.list(pfx + "q") {
		env, _ := protocol.ParseEnvelope([]byte(m), 0)
		bodies = append(bodies, string(env.Body))
		if env.Headers["redelivered"] != nil {
			t.Error("a message never handed over is marked redelivered")
		}
	}
	if !slices.Equal(bodies, []string{"1", "2"}) {
		t.Errorf("queue holds %v, want [1 2]", bodies)
	}
	if n, _ := a.HLen(context.Background(), pfx+"unacked").Result(); n != 1 {
		t.Errorf("unacked holds %d entries, want the handed-over one", n)
	}
	if err := d.Ack(); err != nil {
		t.Errorf("Ack after the consumer stopped: %v", err)
	}
}

// TestStaleAck: a delivery restored by someone else and taken by another
// consumer (same delivery tag) must not be acked for it.
func TestStaleAck(t *testing.T) {
	pfx := unique("stale") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	b := dial(t, testDB, Config{KeyPrefix: pfx, RestoreInterval: -1})
	publish(t, b, text("q", "m"))
	d := recv(t, consume(t, b, 1, broker.Queue{Name: "q"}))

	// Another consumer's restore (as kombu's restore_by_tag), then
	// another consumer takes it again, with the same tag.
	ctx := context.Background()
	entry, err := a.HGet(ctx, pfx+"unacked", d.Tag).Result()
	if err != nil {
		t.Fatal(err)
	}
	env, _, _, _ := parseEntry([]byte(entry))
	a.ZRem(ctx, pfx+"unacked_index", d.Tag)
	a.HDel(ctx, pfx+"unacked", d.Tag)
	other := dial(t, testDB, Config{KeyPrefix: pfx, RestoreInterval: -1})
	a.RPush(ctx, pfx+"q", env)
	d2 := recv(t, consume(t, other, 1, broker.Queue{Name: "q"}))
	if d2.Tag != d.Tag {
		t.Fatalf("tags differ: %s %s", d.Tag, d2.Tag)
	}

	if err := d.Ack(); !errors.Is(err, broker.ErrStaleDelivery) {
		t.Errorf("Ack of the restored delivery: %v, want ErrStaleDelivery", err)
	}
	if !a.hexists(pfx+"unacked", d.Tag) {
		t.Fatal("the stale ack removed the other consumer's entry")
	}
	if err := d2.Ack(); err != nil {
		t.Errorf("the other consumer's Ack: %v", err)
	}
}

// TestKeyPrefix runs every kind of operation with a global_keyprefix and
// checks that nothing outside the prefix was written.
func TestKeyPrefix(t *testing.T) {
	a := newAdmin(t, otherDB)
	before := scanKeys(t, a)
	pfx := unique("gk") + "_"
	a.cleanupPrefix(pfx)
	ctx := context.Background()
	qs := []broker.Queue{
		{Name: "gq"},
		{Name: "gd", Exchange: "gdx", RoutingKey: "k"},
		{Name: "gt", Exchange: "gtx", ExchangeType: "topic", RoutingKey: "x.#"},
		{Name: "gf", Exchange: "gfx", ExchangeType: "fanout", AutoDelete: true},
	}
	b := dial(t, otherDB, Config{KeyPrefix: pfx, VisibilityTimeout: time.Second, RestoreInterval: 100 * time.Millisecond})
	if err := b.Declare(ctx, qs...); err != nil {
		t.Fatal(err)
	}
	// A consumer killed with a message, restored by b's restorer.
	p := text("gq", "crash")
	p.Properties.Priority = 7
	publish(t, b, p)
	crashedConsumer(t, otherDB, pfx, "gq", time.Second)

	for _, p := range []broker.Publishing{
		{Exchange: "gdx", RoutingKey: "k"}, {Exchange: "gtx", RoutingKey: "x.y"}, {Exchange: "gfx"},
	} {
		p.Properties.Priority = 7
		publish(t, b, p)
	}
	ds := consume(t, b, 0, qs[:3]...)
	got := map[string]*broker.Delivery{}
	for range 3 {
		d := recv(t, ds)
		got[d.Queue] = d
	}
	if len(got) != 3 || !got["gq"].Redelivered {
		t.Fatalf("deliveries %v", got)
	}
	if err := got["gq"].Ack(); err != nil {
		t.Fatal(err)
	}
	if err := got["gd"].Reject(true); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, ds).Ack(); err != nil {
		t.Fatal(err)
	}
	// got["gt"] is left for Close to give back.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	for _, k := range scanKeys(t, a) {
		if !strings.HasPrefix(k, pfx) && !slices.Contains(before, k) {
			t.Errorf("key %q written without the prefix", k)
		}
	}
	for _, k := range []string{"_kombu.binding.gdx", "_kombu.binding_permanent.gtx", "gt\x06\x166"} {
		if n, _ := a.Exists(ctx, pfx+k).Result(); n != 1 {
			t.Errorf("key %q missing", pfx+k)
		}
	}
}

func scanKeys(t *testing.T, a *admin) []string {
	t.Helper()
	ctx := context.Background()
	var keys []string
	it := a.Scan(ctx, 0, "*", 1000).Iterator()
	for it.Next(ctx) {
		keys = append(keys, it.Val())
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestIdle checks that a consumer waiting on empty queues blocks instead
// of polling: its waiters each sit in about one BLMOVE per PollTimeout, the
// consumer makes about one pop per PollTimeout, and next to no CPU.
func TestIdle(t *testing.T) {
	needRedis(t)
	pfx := unique("idle") + ":"
	newAdmin(t, testDB).cleanupPrefix(pfx)
	client := redis.NewClient(&redis.Options{Addr: redisAddr(), DB: testDB})
	defer client.Close()
	counter, waits := &commandCounter{}, &commandCounter{}
	client.AddHook(counter)
	b := New(client, testDB, Config{Logger: quietLogger(t), KeyPrefix: pfx})
	b.waiterHooks = []redis.Hook{waits}
	defer b.Close()
	consume(t, b, 4, broker.Queue{Name: "idle"})
	time.Sleep(200 * time.Millisecond) // let it settle into its wait

	var before, after syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &before); err != nil {
		t.Fatal(err)
	}
	all0, w0 := counter.total(), waits.get("blmove")
	time.Sleep(3 * time.Second)
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &after); err != nil {
		t.Fatal(err)
	}
	cpu := time.Duration(after.Utime.Nano()-before.Utime.Nano()) + time.Duration(after.Stime.Nano()-before.Stime.Nano())
	all, blmoves := counter.total()-all0, waits.get("blmove")-w0
	t.Logf("idle 3s: %v CPU, %d BLMOVEs, %d other commands", cpu, blmoves, all)
	if cpu > 50*time.Millisecond {
		t.Errorf("idle consumer used %v CPU in 3s", cpu)
	}
	// Four priority lists, 1s timeouts.
	if blmoves < 4 || blmoves > 4*4 {
		t.Errorf("%d BLMOVEs in 3s on four lists with a 1s timeout: want about 12", blmoves)
	}
	if all > 3*4 {
		t.Errorf("%d commands in 3s besides the waits: busy polling", all)
	}
}

type commandCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.mu.Lock()
		if c.n == nil {
			c.n = map[string]int{}
		}
		c.n[cmd.Name()]++
		c.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.mu.Lock()
		if c.n == nil {
			c.n = map[string]int{}
		}
		for _, cmd := range cmds {
			c.n[cmd.Name()]++
		}
		c.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (c *commandCounter) get(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

func (c *commandCounter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.n {
		n += v
	}
	return n
}

// One pop takes what the free prefetch allows, in one script call, and
// still takes from several queues in turn: of 12 messages on two queues,
// prefetch 4, the first pop takes four, alternating, and all come FIFO in
// each queue, in turn.
func TestPopTakesTheFreeCredit(t *testing.T) {
	pfx := unique("batch") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	b := dial(t, testDB, Config{KeyPrefix: pfx})
	var pops atomic.Int32
	b.testHook = func(point string) {
		if point == "popped" {
			pops.Add(1)
		}
	}
	for i := range 6 {
		publish(t, b, text("a", "a"+strconv.Itoa(i)))
		publish(t, b, text("b", "b"+strconv.Itoa(i)))
	}
	ds := consume(t, b, 4, broker.Queue{Name: "a"}, broker.Queue{Name: "b"})
	var got []string
	for k := range 3 {
		batch := make([]*broker.Delivery, 4)
		for i := range batch {
			batch[i] = recv(t, ds)
			got = append(got, string(batch[i].Body))
		}
		if k == 0 {
			if left := a.llen(pfx+"a") + a.llen(pfx+"b"); left != 8 || pops.Load() != 1 {
				t.Fatalf("after the first pop: %d messages left, %d pops; want 8 left after one pop of 4", left, pops.Load())
			}
		}
		for _, d := range batch {
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := pops.Load(); n >= 12 {
		t.Errorf("%d pops for 12 messages with prefetch 4: one per message", n)
	}
	want := []string{"a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3", "a4", "b4", "a5", "b5"}
	if !slices.Equal(got, want) {
		t.Errorf("took %v, want %v (in turn from both queues, FIFO in each)", got, want)
	}
}
