package amqp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocelery/gocelery/broker"
)

func jsonMsg(key, body string) broker.Publishing {
	p := text(key, body)
	p.ContentType = "application/json"
	p.Properties.DeliveryMode = 1
	p.Headers = map[string]any{"clock": 1}
	return p
}

// celeryExchanges declares Celery's own remote-control and event
// exchanges with Celery 5.7's code (Mailbox, events.get_exchange), so the
// Go declarations that follow meet them as Celery left them.
const celeryExchanges = `
import sys
from celery import Celery
from celery.events.event import get_exchange
app = Celery("interop", broker=sys.argv[1])
with app.connection_for_write() as conn:
    ch = conn.default_channel
    mb = app.control.mailbox
    mb.exchange(ch).declare()
    mb.reply_exchange(ch).declare()
    get_exchange(conn, app.conf.event_exchange)(ch).declare()
    print(mb.exchange.type, mb.exchange.durable, mb.reply_exchange.type, mb.reply_exchange.durable)
`

// TestDeclareCeleryExchanges: DeclareExchange of celery.pidbox,
// reply.celery.pidbox and celeryev as broker.Exchange documents them
// matches what Celery declares (no PRECONDITION_FAILED), and a queue
// bound to the durable celeryev declared transient does not redeclare the
// exchange transient. The exchanges are Celery's real ones, shared with
// anything else on the broker, so they are not deleted.
func TestDeclareCeleryExchanges(t *testing.T) {
	needRabbit(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, python(t), "-c", celeryExchanges, brokerURL()).CombinedOutput()
	if err != nil {
		t.Fatalf("celery: %v\n%s", err, out)
	}
	t.Logf("celery declared: %s", strings.TrimSpace(string(out)))
	b := dial(t, Config{})
	for _, ex := range []broker.Exchange{
		{Name: "celery.pidbox", Kind: "fanout", Transient: true},
		{Name: "reply.celery.pidbox", Kind: "direct", Transient: true},
		{Name: "celeryev", Kind: "topic"},
	} {
		if err := b.DeclareExchange(ctx, ex); err != nil {
			t.Errorf("DeclareExchange %+v: %v", ex, err)
		}
	}
	// Declared otherwise, RabbitMQ refuses, and the error says what to do.
	err = b.DeclareExchange(ctx, broker.Exchange{Name: "celeryev", Kind: "topic", Transient: true})
	if e := (*amqp.Error)(nil); !errors.As(err, &e) || e.Code != amqp.PreconditionFailed || !strings.Contains(err.Error(), "as Celery does") {
		t.Errorf("transient celeryev: %v", err)
	}
	// A queue declared transient, bound to a durable event exchange
	// declared before (a unique one, not to disturb Celery monitors bound
	// to the real celeryev), does not redeclare the exchange transient.
	evx := unique("celeryev")
	if err := b.DeclareExchange(ctx, broker.Exchange{Name: evx, Kind: "topic"}); err != nil {
		t.Fatal(err)
	}
	a := newAdmin(t)
	node := evx + "." + unique("node")
	a.cleanup([]string{node}, []string{evx})
	q := broker.Queue{Name: node, Exchange: evx, ExchangeType: "topic", RoutingKey: "#",
		Transient: true, AutoDelete: true, Exclusive: true,
		Arguments: map[string]any{"x-expires": 60000, "x-message-ttl": 5000}}
	ds := consume(t, b, 10, q)
	if err := a.channel().ExchangeDeclare(evx, "topic", true, false, false, false, nil); err != nil {
		t.Errorf("the event exchange is no longer durable: %v", err)
	}
	p := jsonMsg("task.sent", `{"type": "task-sent"}`)
	p.Exchange, p.Mandatory = evx, true
	publish(t, b, p)
	if d := recv(t, ds); d.RoutingKey != "task.sent" || d.Exchange != evx || d.Queue != node {
		t.Errorf("event delivery: queue %q exchange %q key %q", d.Queue, d.Exchange, d.RoutingKey)
	} else if err := d.Ack(); err != nil {
		t.Error(err)
	}
}

// TestFanoutTwoConsumers: two Brokers each consume their own pidbox-like
// queue (exclusive, auto-delete, x-expires, x-message-ttl, bound with "")
// on one fanout exchange; every message reaches both.
func TestFanoutTwoConsumers(t *testing.T) {
	ctx := context.Background()
	ex := unique("pidbox")
	a := newAdmin(t)
	pub := dial(t, Config{})
	if err := pub.DeclareExchange(ctx, broker.Exchange{Name: ex, Kind: "fanout", Transient: true}); err != nil {
		t.Fatal(err)
	}
	var queues []string
	var outs []<-chan *broker.Delivery
	for _, node := range []string{"w1@h", "w2@h"} {
		b := dial(t, Config{})
		q := broker.Queue{Name: node + "." + ex, Exchange: ex, ExchangeType: "fanout",
			Transient: true, AutoDelete: true, Exclusive: true,
			Arguments: map[string]any{"x-expires": 10000, "x-message-ttl": 300000}}
		queues = append(queues, q.Name)
		outs = append(outs, consume(t, b, 100, q))
	}
	a.cleanup(queues, []string{ex})
	// Declared as asked: exclusive, auto-delete, transient, with arguments.
	listing := rabbitmqctl(t, "-q", "list_queues", "--no-table-headers", "name", "durable", "auto_delete", "exclusive", "arguments")
	for _, q := range queues {
		line := ""
		for _, l := range strings.Split(listing, "\n") {
			if strings.HasPrefix(l, q+"\t") {
				line = l
			}
		}
		if !strings.Contains(line, "false\ttrue\ttrue") || !strings.Contains(line, "x-expires") || !strings.Contains(line, "x-message-ttl") {
			t.Errorf("queue %s listed as %q", q, line)
		}
	}
	const n = 20
	for i := range n {
		p := jsonMsg("ignored-by-fanout", fmt.Sprintf(`{"n": %d}`, i))
		p.Exchange, p.Mandatory = ex, true
		publish(t, pub, p)
	}
	for w, out := range outs {
		for i := range n {
			d := recv(t, out)
			if got, want := string(d.Body), fmt.Sprintf(`{"n": %d}`, i); got != want {
				t.Fatalf("worker %d: body %s, want %s", w+1, got, want)
			}
			if err := d.Ack(); err != nil {
				t.Error(err)
			}
		}
	}
}

// TestExclusiveQueueReconnect: an exclusive queue is this connection's
// alone; when the connection is lost RabbitMQ deletes it, and the Broker
// declares it again on the new connection and goes on consuming.
func TestExclusiveQueueReconnect(t *testing.T) {
	ctx := context.Background()
	name := unique("gocelery-excl")
	ex := unique("pidbox")
	b := dial(t, Config{Name: name, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	a := newAdmin(t)
	if err := b.DeclareExchange(ctx, broker.Exchange{Name: ex, Kind: "fanout", Transient: true}); err != nil {
		t.Fatal(err)
	}
	q := broker.Queue{Name: "n." + ex, Exchange: ex, ExchangeType: "fanout", Transient: true, AutoDelete: true, Exclusive: true}
	a.cleanup([]string{q.Name}, []string{ex})
	ds := consume(t, b, 10, q)
	// Another connection may not use it.
	if _, err := a.channel().QueueDeclare(q.Name, false, true, true, false, nil); err == nil {
		t.Fatal("another connection declared the exclusive queue")
	} else if e := (*amqp.Error)(nil); !errors.As(err, &e) || e.Code != amqp.ResourceLocked {
		t.Fatalf("another connection's declaration: %v", err)
	}
	p := jsonMsg("", `"before"`)
	p.Exchange, p.Mandatory = ex, true
	publish(t, b, p)
	if d := recv(t, ds); string(d.Body) != `"before"` {
		t.Fatalf("got %s", d.Body)
	} else {
		_ = d.Ack()
	}
	closeConnection(t, name)
	waitFor(t, 15*time.Second, "the reconnect", func() bool { return b.Reconnects() > 0 && b.Connected() })
	// The exclusive queue and the transient exchange exist again, bound.
	p.Body = []byte(`"after"`)
	publish(t, b, p)
	if d := recv(t, ds); string(d.Body) != `"after"` {
		t.Fatalf("got %s", d.Body)
	}
}

// TestReplyQueueDirect: a reply queue <oid>.reply bound with key <oid> to
// a direct exchange of another name gets what is published there with
// that key, and nothing published with another key.
func TestReplyQueueDirect(t *testing.T) {
	ctx := context.Background()
	ex := unique("reply.pidbox")
	oid := unique("oid")
	b := dial(t, Config{})
	a := newAdmin(t)
	if err := b.DeclareExchange(ctx, broker.Exchange{Name: ex, Kind: "direct", Transient: true}); err != nil {
		t.Fatal(err)
	}
	q := broker.Queue{Name: oid + "." + ex, Exchange: ex, RoutingKey: oid, Transient: true, AutoDelete: true, Exclusive: true,
		Arguments: map[string]any{"x-expires": 10000, "x-message-ttl": 300000}}
	a.cleanup([]string{q.Name}, []string{ex})
	ds := consume(t, b, 10, q)
	p := jsonMsg("someone-else", `"no"`)
	p.Exchange, p.Mandatory = ex, true
	if err := b.Publish(ctx, p); !errors.Is(err, broker.ErrUnroutable) {
		t.Errorf("publish with another key: %v", err)
	}
	p.RoutingKey, p.Body = oid, []byte(`{"w@h": {"ok": "pong"}}`)
	publish(t, b, p)
	if d := recv(t, ds); d.Queue != q.Name || d.RoutingKey != oid || d.Headers["clock"] != int32(1) {
		t.Errorf("reply: queue %q key %q headers %v", d.Queue, d.RoutingKey, d.Headers)
	}
}

// kombuFanout publishes to, or consumes from, a fanout exchange with kombu
// and py-amqp: argv mode url exchange routing-key, then the body
// (publish) or the queue name and message count (consume). The consumer
// prints "ready" once its queue is bound, then one JSON line per message.
const kombuFanout = `
import json, socket, sys, time
from kombu import Connection, Exchange, Queue
mode, url, exname, key = sys.argv[1:5]
ex = Exchange(exname, type="fanout", durable=False, delivery_mode="transient")
with Connection(url) as conn:
    if mode == "publish":
        with conn.Producer() as p:
            p.publish({"from": "python", "body": sys.argv[5]}, exchange=ex, routing_key=key,
                      declare=[ex], serializer="json", headers={"clock": 7})
        sys.exit(0)
    qname, n = sys.argv[5], int(sys.argv[6])
    q = Queue(qname, ex, routing_key=key, durable=False, auto_delete=True, exclusive=True)
    got = []
    def on_message(body, message):
        got.append({"body": body, "headers": message.headers, "delivery_info": message.delivery_info,
                    "content_type": message.content_type})
    with conn.Consumer(q, callbacks=[on_message], no_ack=True, accept=["json"]):
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

// TestFanoutInteropKombu: kombu's Producer.publish to a fanout Exchange
// reaches a Go consumer, and a Go Publish reaches a kombu Consumer.
func TestFanoutInteropKombu(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ex := unique("fxpy")
	b := dial(t, Config{})
	a := newAdmin(t)
	a.cleanup([]string{"go." + ex}, []string{ex})
	if err := b.DeclareExchange(ctx, broker.Exchange{Name: ex, Kind: "fanout", Transient: true}); err != nil {
		t.Fatal(err)
	}
	ds := consume(t, b, 10, broker.Queue{Name: "go." + ex, Exchange: ex, ExchangeType: "fanout", Transient: true, AutoDelete: true, Exclusive: true})
	if out, err := exec.CommandContext(ctx, python(t), "-c", kombuFanout, "publish", brokerURL(), ex, "", "from-kombu").CombinedOutput(); err != nil {
		t.Fatalf("kombu publish: %v\n%s", err, out)
	}
	d := recv(t, ds)
	var body map[string]string
	if err := json.Unmarshal(d.Body, &body); err != nil || body["body"] != "from-kombu" || d.Exchange != ex || d.Headers["clock"] != int32(7) {
		t.Errorf("Go got %s (%v), exchange %q, headers %v", d.Body, err, d.Exchange, d.Headers)
	}
	_ = d.Ack()

	cmd := exec.CommandContext(ctx, python(t), "-c", kombuFanout, "consume", brokerURL(), ex, "", "py."+ex, "1")
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
	if line, err := r.ReadString('\n'); strings.TrimSpace(line) != "ready" {
		_ = cmd.Wait()
		t.Fatalf("kombu consumer: %q %v\n%s", line, err, stderr.String())
	}
	p := jsonMsg("", `{"from": "go"}`)
	p.Exchange, p.Mandatory = ex, true
	publish(t, b, p)
	rest, _ := io.ReadAll(r)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("kombu consumer: %v\n%s", err, stderr.String())
	}
	var got struct {
		Body         map[string]string `json:"body"`
		Headers      map[string]any    `json:"headers"`
		DeliveryInfo map[string]any    `json:"delivery_info"`
		ContentType  string            `json:"content_type"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(rest))), &got); err != nil {
		t.Fatalf("kombu output %q: %v", rest, err)
	}
	if got.Body["from"] != "go" || got.Headers["clock"] != float64(1) || got.ContentType != "application/json" || got.DeliveryInfo["exchange"] != ex {
		t.Errorf("kombu got %+v", got)
	}
}
