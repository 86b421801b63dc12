package redis

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
)

// fanoutQueue is a queue bound to a fanout exchange, as Celery's pidbox
// (key "") and event (key "#") queues are.
func fanoutQueue(name, exchange, key string) broker.Queue {
	return broker.Queue{Name: name, Exchange: exchange, ExchangeType: "fanout", RoutingKey: key,
		Transient: true, AutoDelete: true, Exclusive: true}
}

func fanoutMsg(key, body string) broker.Publishing {
	p := text(key, body)
	p.ContentType = "application/json"
	p.Headers = map[string]any{"clock": 1}
	return p
}

// TestFanoutTwoConsumers: two Brokers (two workers) each consume their own
// queue bound to one fanout exchange; every message reaches both, on the
// channels kombu uses, with Ack and Reject doing nothing.
func TestFanoutTwoConsumers(t *testing.T) {
	pfx := unique("fan") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	ex := "pidbox-" + unique("x")
	ctx := context.Background()
	pub := dial(t, testDB, Config{KeyPrefix: pfx})
	if err := pub.DeclareExchange(ctx, broker.Exchange{Name: ex, Kind: "fanout", Transient: true}); err != nil {
		t.Fatal(err)
	}
	var outs []<-chan *broker.Delivery
	for _, node := range []string{"w1@h", "w2@h"} {
		b := dial(t, testDB, Config{KeyPrefix: pfx})
		outs = append(outs, consume(t, b, 1, fanoutQueue(node+"."+ex, ex, "")))
	}
	// kombu's binding member for a fanout queue bound with "".
	members, _ := a.SMembers(ctx, pfx+"_kombu.binding."+ex).Result()
	sort.Strings(members)
	want := []string{"\x06\x16\x06\x16w1@h." + ex, "\x06\x16\x06\x16w2@h." + ex}
	if !slices.Equal(members, want) {
		t.Errorf("binding members %q, want %q", members, want)
	}
	const n = 20
	for i := range n {
		p := fanoutMsg("", fmt.Sprintf(`{"n": %d}`, i))
		p.Exchange, p.Mandatory = ex, true
		publish(t, pub, p)
	}
	for w, out := range outs {
		for i := range n {
			d := recv(t, out)
			if got, want := string(d.Body), fmt.Sprintf(`{"n": %d}`, i); got != want {
				t.Fatalf("worker %d message %d: body %s, want %s", w+1, i, got, want)
			}
			if d.Exchange != ex || d.RoutingKey != "" || d.Headers["clock"] != int64(1) || d.ContentType != "application/json" {
				t.Errorf("worker %d: exchange %q, key %q, headers %v, content type %q", w+1, d.Exchange, d.RoutingKey, d.Headers, d.ContentType)
			}
			if err := d.Ack(); err != nil {
				t.Errorf("Ack: %v", err)
			}
			if err := d.Reject(true); err != nil {
				t.Errorf("Reject after Ack: %v", err)
			}
		}
		noRecv(t, out, 100*time.Millisecond)
	}
	// Nothing was stored or recorded: PUB/SUB only.
	if n, _ := a.Exists(ctx, pfx+"unacked", pfx+"unacked_index", pfx+"w1@h."+ex, pfx+"w2@h."+ex).Result(); n != 0 {
		t.Errorf("%d keys stored or recorded for fanout messages", n)
	}
}

// TestFanoutPatterns: a queue bound with "#" (an event monitor) is
// PSUBSCRIBE "/{db}.<exchange>/*" and receives every routing key; one
// bound with "worker.#" only worker.*; one bound with "" only messages
// published without a routing key. Queues of one exchange in one Consume
// each get their copy, and a direct queue in the same Consume still works.
func TestFanoutPatterns(t *testing.T) {
	pfx := unique("fpat") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	ex := unique("celeryev")
	ctx := context.Background()
	b := dial(t, testDB, Config{KeyPrefix: pfx})
	if err := b.DeclareExchange(ctx, broker.Exchange{Name: ex, Kind: "fanout"}); err != nil {
		t.Fatal(err)
	}
	all := broker.Queue{Name: ex + ".all", Exchange: ex, RoutingKey: "#"} // kind from DeclareExchange
	worker := fanoutQueue(ex+".worker", ex, "worker.#")
	bare := fanoutQueue(ex+".bare", ex, "")
	direct := broker.Queue{Name: ex + ".tasks"}
	out := consume(t, b, 0, all, worker, bare, direct)

	probe := a.PSubscribe(ctx, pfx+"/10."+ex+"*")
	defer probe.Close()
	if _, err := probe.Receive(ctx); err != nil {
		t.Fatal(err)
	}

	send := func(key string) {
		p := fanoutMsg(key, `"`+key+`"`)
		p.Exchange = ex
		publish(t, b, p)
		if m, err := probe.ReceiveMessage(ctx); err != nil {
			t.Fatal(err)
		} else if want := pfx + "/10." + ex + map[bool]string{true: "", false: "/" + key}[key == ""]; m.Channel != want {
			t.Errorf("published on %q, want %q", m.Channel, want)
		}
	}
	got := map[string][]string{}
	take := func(n int) {
		for range n {
			d := recv(t, out)
			got[d.Queue] = append(got[d.Queue], string(d.Body))
			if err := d.Ack(); err != nil {
				t.Errorf("Ack %s: %v", d.Queue, err)
			}
		}
		noRecv(t, out, 200*time.Millisecond)
	}
	send("task.sent")
	send("worker.heartbeat")
	send("")
	publish(t, b, text(direct.Name, "task"))
	take(5)
	wantGot := map[string][]string{
		all.Name:    {`"task.sent"`, `"worker.heartbeat"`},
		worker.Name: {`"worker.heartbeat"`},
		bare.Name:   {`""`},
		direct.Name: {"task"},
	}
	for q, w := range wantGot {
		if !slices.Equal(got[q], w) {
			t.Errorf("queue %s got %q, want %q", q, got[q], w)
		}
	}
	// Bindings as kombu writes them, in the permanent set too (no x-expires).
	members, _ := a.SMembers(ctx, pfx+"_kombu.binding_permanent."+ex).Result()
	sort.Strings(members)
	want := []string{"#\x06\x16\x06\x16" + all.Name, "\x06\x16\x06\x16" + bare.Name, "worker.#\x06\x16\x06\x16" + worker.Name}
	sort.Strings(want)
	if !slices.Equal(members, want) {
		t.Errorf("binding members %q, want %q", members, want)
	}
}

// TestFanoutResubscribe: after the subscription's connection is cut, the
// consumer subscribes again and receives what is published afterwards.
func TestFanoutResubscribe(t *testing.T) {
	pfx := unique("fres") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	px := newProxy(t)
	ctx := context.Background()
	ex := unique("fx")
	b, err := Dial(ctx, fmt.Sprintf("redis://%s/%d", px.addr(), testDB), Config{KeyPrefix: pfx, Logger: quietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pub := dial(t, testDB, Config{KeyPrefix: pfx})
	for _, x := range []*Broker{b, pub} {
		if err := x.DeclareExchange(ctx, broker.Exchange{Name: ex, Kind: "fanout"}); err != nil {
			t.Fatal(err)
		}
	}
	out := consume(t, b, 1, fanoutQueue("n."+ex, ex, ""))
	p := fanoutMsg("", `"before"`)
	p.Exchange, p.Mandatory = ex, true
	publish(t, pub, p)
	if d := recv(t, out); string(d.Body) != `"before"` {
		t.Fatalf("got %s", d.Body)
	}
	px.cut()
	time.Sleep(300 * time.Millisecond)
	px.heal()
	// Published until someone listens again: PUB/SUB keeps nothing.
	p.Body = []byte(`"after"`)
	waitFor(t, 15*time.Second, "the resubscription", func() bool {
		err := pub.Publish(ctx, p)
		if err != nil && !errors.Is(err, broker.ErrUnroutable) {
			t.Fatal(err)
		}
		return err == nil
	})
	if d := recv(t, out); string(d.Body) != `"after"` {
		t.Fatalf("got %s", d.Body)
	}
}

// TestExpiringBinding: a queue with x-expires gets kombu 5.7's expiring
// binding (member, deadline in _kombu.binding_deadlines), not a permanent
// one, as kombu's queue_bind writes it for Celery's pidbox reply queues.
func TestExpiringBinding(t *testing.T) {
	a := newAdmin(t, testDB)
	py, gp := unique("epy")+"_", unique("ego")+"_"
	a.cleanupPrefix(py)
	a.cleanupPrefix(gp)
	oid := unique("oid")
	const script = pyPrelude + `
with Connection(url, transport_options=opts) as conn:
    ex = Exchange("reply.celery.pidbox", type="direct", durable=False)
    Queue(queue + ".reply.celery.pidbox", ex, routing_key=queue, durable=False,
          auto_delete=True, expires=10.0, message_ttl=300.0).bind(conn.default_channel).declare()
`
	runPython(t, script, pyArgs(testDB, oid, py)...)
	b := dial(t, testDB, Config{KeyPrefix: gp})
	err := b.Declare(context.Background(), broker.Queue{Name: oid + ".reply.celery.pidbox", Exchange: "reply.celery.pidbox",
		RoutingKey: oid, Transient: true, AutoDelete: true, Exclusive: true,
		Arguments: map[string]any{"x-expires": 10000, "x-message-ttl": 300000}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, key := range []string{"_kombu.binding.reply.celery.pidbox", "_kombu.binding_permanent.reply.celery.pidbox"} {
		want, _ := a.SMembers(ctx, py+key).Result()
		got, _ := a.SMembers(ctx, gp+key).Result()
		if !slices.Equal(got, want) {
			t.Errorf("%s: Go %q, kombu %q", key, got, want)
		}
	}
	pyDL, _ := a.ZRangeWithScores(ctx, py+"_kombu.binding_deadlines", 0, -1).Result()
	goDL, _ := a.ZRangeWithScores(ctx, gp+"_kombu.binding_deadlines", 0, -1).Result()
	if len(pyDL) != 1 || len(goDL) != 1 || pyDL[0].Member != goDL[0].Member || goDL[0].Score-pyDL[0].Score > 30000 || goDL[0].Score < pyDL[0].Score {
		t.Errorf("deadlines: Go %v, kombu %v", goDL, pyDL)
	}
}

// kombuFanout publishes to, or consumes from, a fanout exchange with kombu:
// argv mode url exchange routing-key prefix, then the body (publish) or
// the queue name and message count (consume). The consumer prints "ready"
// once subscribed, then one JSON line per message.
const kombuFanout = `
import json, os, socket, sys, time
from kombu import Connection, Exchange, Queue
mode, url, exname, key, prefix = sys.argv[1:6]
opts = {"global_keyprefix": prefix} if prefix else {}
ex = Exchange(exname, type="fanout", durable=False, delivery_mode="transient")
with Connection(url, transport_options=opts) as conn:
    if mode == "publish":
        with conn.Producer() as p:
            p.publish({"from": "python", "body": sys.argv[6]}, exchange=ex, routing_key=key,
                      declare=[ex], serializer="json", headers={"clock": 7})
        sys.exit(0)
    qname, n = sys.argv[6], int(sys.argv[7])
    q = Queue(qname, ex, routing_key=key, durable=False, auto_delete=True)
    got = []
    def on_message(body, message):
        got.append({"body": body, "headers": message.headers, "delivery_info": message.delivery_info,
                    "content_type": message.content_type})
    with conn.Consumer(q, callbacks=[on_message], no_ack=True, accept=["json"]):
        try:
            conn.drain_events(timeout=0.2)  # the first poll sends PSUBSCRIBE
        except socket.timeout:
            pass
        print("ready", flush=True)
        deadline = time.time() + 20
        while len(got) < n and time.time() < deadline:
            try:
                conn.drain_events(timeout=1)
            except socket.timeout:
                pass
    for g in got:
        print(json.dumps(g), flush=True)
`

// startKombuConsumer runs kombuFanout's consumer and returns once it says
// it is ready, with a function that waits for its output lines.
func startKombuConsumer(t *testing.T, args ...string) func() []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, python(t), append([]string{"-c", kombuFanout, "consume"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	line, err := r.ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		_ = cmd.Wait()
		t.Fatalf("kombu consumer: %q %v\n%s", line, err, stderr.String())
	}
	return func() []string {
		rest, _ := io.ReadAll(r)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("kombu consumer: %v\n%s", err, stderr.String())
		}
		var lines []string
		for _, l := range strings.Split(string(rest), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				lines = append(lines, l)
			}
		}
		return lines
	}
}

// TestFanoutInteropKombu: kombu's Producer.publish to a fanout Exchange
// reaches a Go consumer, and a Go Publish to a fanout exchange reaches a
// kombu Consumer, with and without a global_keyprefix, for the routing
// keys pidbox ("") and events ("#" bindings) use.
func TestFanoutInteropKombu(t *testing.T) {
	for _, pfx := range []string{"", unique("fpy") + ":"} {
		t.Run(fmt.Sprintf("prefix=%q", pfx), func(t *testing.T) {
			a := newAdmin(t, testDB)
			ex := unique("fxpy")
			if pfx != "" {
				a.cleanupPrefix(pfx)
			} else {
				a.cleanupQueues([]string{ex}, "go."+ex, "py."+ex, "pyev."+ex)
			}
			ctx := context.Background()
			b := dial(t, testDB, Config{KeyPrefix: pfx})
			if err := b.DeclareExchange(ctx, broker.Exchange{Name: ex, Kind: "fanout", Transient: true}); err != nil {
				t.Fatal(err)
			}

			// Python publishes, Go consumes (bound with "" and with "#").
			out := consume(t, b, 1, fanoutQueue("go."+ex, ex, ""), fanoutQueue("goev."+ex, ex, "#"))
			runPython(t, kombuFanout, "publish", redisURL(testDB), ex, "", pfx, "to-bare")
			runPython(t, kombuFanout, "publish", redisURL(testDB), ex, "task.sent", pfx, "to-events")
			for _, want := range []struct{ queue, key, body string }{
				{"go." + ex, "", "to-bare"}, {"goev." + ex, "task.sent", "to-events"},
			} {
				d := recv(t, out)
				var body map[string]string
				mustJSON(t, d.Body, &body)
				if d.Queue != want.queue || d.RoutingKey != want.key || body["body"] != want.body ||
					d.Exchange != ex || d.Headers["clock"] != int64(7) {
					t.Errorf("got queue %q key %q exchange %q headers %v body %s; want %+v", d.Queue, d.RoutingKey, d.Exchange, d.Headers, d.Body, want)
				}
			}
			noRecv(t, out, 200*time.Millisecond)

			// Go publishes, kombu consumes: bound with "" and with "worker.#".
			for _, tc := range []struct{ bind, key string }{{"", ""}, {"worker.#", "worker.heartbeat"}} {
				wait := startKombuConsumer(t, redisURL(testDB), ex, tc.bind, pfx, "py."+ex, "1")
				p := fanoutMsg(tc.key, `{"from": "go"}`)
				p.Exchange, p.Mandatory = ex, true
				// Until kombu's PSUBSCRIBE has landed: PUBLISH counts receivers.
				waitFor(t, 10*time.Second, "kombu's subscription", func() bool {
					err := b.Publish(ctx, p)
					if err != nil && !errors.Is(err, broker.ErrUnroutable) {
						t.Fatal(err)
					}
					return err == nil
				})
				lines := wait()
				if len(lines) != 1 {
					t.Fatalf("bind %q: kombu got %q", tc.bind, lines)
				}
				var got struct {
					Body         map[string]string `json:"body"`
					Headers      map[string]any    `json:"headers"`
					DeliveryInfo map[string]any    `json:"delivery_info"`
					ContentType  string            `json:"content_type"`
				}
				mustJSON(t, []byte(lines[0]), &got)
				if got.Body["from"] != "go" || got.Headers["clock"] != float64(1) || got.ContentType != "application/json" ||
					got.DeliveryInfo["exchange"] != ex || got.DeliveryInfo["routing_key"] != tc.key {
					t.Errorf("bind %q: kombu got %+v", tc.bind, got)
				}
			}
		})
	}
}

// TestDirectReplyToKombuQueue: a Go Publish to the direct exchange
// reply.celery.pidbox with routing key <oid> lands in the queue a kombu
// Mailbox declared for its replies, through the binding table.
func TestDirectReplyToKombuQueue(t *testing.T) {
	pfx := unique("reply") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	oid := unique("oid")
	const script = pyPrelude + `
with Connection(url, transport_options=opts) as conn:
    ex = Exchange("reply.celery.pidbox", type="direct", durable=False)
    Queue(queue + ".reply.celery.pidbox", ex, routing_key=queue, durable=False,
          auto_delete=True, expires=10.0, message_ttl=300.0).bind(conn.default_channel).declare()
`
	runPython(t, script, pyArgs(testDB, oid, pfx)...)
	members, _ := a.SMembers(context.Background(), pfx+"_kombu.binding.reply.celery.pidbox").Result()
	if want := oid + "\x06\x16\x06\x16" + oid + ".reply.celery.pidbox"; !slices.Equal(members, []string{want}) {
		t.Fatalf("kombu's binding %q, want %q", members, want)
	}
	b := dial(t, testDB, Config{KeyPrefix: pfx})
	if err := b.DeclareExchange(context.Background(), broker.Exchange{Name: "reply.celery.pidbox", Kind: "direct", Transient: true}); err != nil {
		t.Fatal(err)
	}
	p := fanoutMsg(oid, `{"w@h": {"ok": "pong"}}`)
	p.Exchange, p.Mandatory = "reply.celery.pidbox", true
	publish(t, b, p)
	got := a.list(pfx + oid + ".reply.celery.pidbox")
	if len(got) != 1 {
		t.Fatalf("reply queue holds %q", got)
	}
	var env map[string]any
	if err := json.Unmarshal([]byte(got[0]), &env); err != nil {
		t.Fatal(err)
	}
	di := env["properties"].(map[string]any)["delivery_info"].(map[string]any)
	if di["exchange"] != "reply.celery.pidbox" || di["routing_key"] != oid {
		t.Errorf("delivery_info %v", di)
	}
}

// TestExpiringBindingRefreshed: while a queue with x-expires is consumed,
// its binding is written again periodically, as kombu's
// maybe_refresh_binding_expiry does, so a sweep (or a lost table) does not
// leave its exchange unroutable; after the consumer stops it is not.
func TestExpiringBindingRefreshed(t *testing.T) {
	pfx := unique("erf") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	b := dial(t, testDB, Config{KeyPrefix: pfx})
	b.bindingRefresh = 50 * time.Millisecond
	oid := unique("oid")
	q := broker.Queue{Name: oid + ".reply.celery.pidbox", Exchange: "reply.celery.pidbox", RoutingKey: oid,
		Transient: true, AutoDelete: true, Exclusive: true,
		Arguments: map[string]any{"x-expires": int32(10000), "x-message-ttl": int32(300000)}}
	ctx, cancel := context.WithCancel(context.Background())
	out, err := b.Consume(ctx, []broker.Queue{q}, 10)
	if err != nil {
		t.Fatal(err)
	}
	table := pfx + "_kombu.binding.reply.celery.pidbox"
	bg := context.Background()
	first, _ := a.ZScore(bg, pfx+"_kombu.binding_deadlines", "reply.celery.pidbox").Result()
	a.Del(bg, table)
	waitFor(t, 5*time.Second, "the binding written again", func() bool {
		n, _ := a.Exists(bg, table).Result()
		return n == 1
	})
	if again, _ := a.ZScore(bg, pfx+"_kombu.binding_deadlines", "reply.celery.pidbox").Result(); again <= first {
		t.Errorf("deadline %v not raised from %v", again, first)
	}
	p := text(oid, "reply")
	p.Exchange, p.Mandatory = "reply.celery.pidbox", true
	publish(t, b, p)
	if d := recv(t, out); string(d.Body) != "reply" {
		t.Fatalf("got %s", d.Body)
	} else if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
	cancel()
	for range out {
	}
	time.Sleep(100 * time.Millisecond) // the refresher notices the stop
	a.Del(bg, table)
	time.Sleep(200 * time.Millisecond)
	if n, _ := a.Exists(bg, table).Result(); n != 0 {
		t.Error("binding refreshed after the consumer stopped")
	}
}
