package redis

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
)

// The scripts below run with Celery 5.7 / kombu 5.7 from the venv. Each
// takes the broker URL, a queue name and a global_keyprefix ("" for none).

const pyPrelude = `
import base64, datetime, decimal, json, os, sys, time
from kombu import Connection, Exchange, Queue
from kombu.utils.json import dumps, loads
url, queue, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
opts = {"visibility_timeout": float(os.environ.get("VT", "3600"))}
if prefix:
    opts["global_keyprefix"] = prefix
`

// celerySend publishes with Celery's own app.send_task.
const celerySend = pyPrelude + `
from celery import Celery
app = Celery("interop", broker=url)
app.conf.broker_transport_options = opts
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=123456)
eta = now + datetime.timedelta(minutes=10)
expires = now + datetime.timedelta(hours=1)
r = app.send_task(
    "proj.tasks.add", args=(2, "three"), kwargs={"z": [1, None]},
    queue=queue, eta=eta, expires=expires, priority=7,
    time_limit=30, soft_time_limit=20,
    headers={"x-big": 2**70, "x-dec": decimal.Decimal("1.10"), "x-nested": {"deep": [2**33, "s", None]}},
)
print(json.dumps({"id": r.id, "eta": eta.isoformat(), "expires": expires.isoformat()}))
`

// kombuGet takes one message with a kombu consumer and prints what kombu
// made of it, then acks it.
const kombuGet = pyPrelude + `
with Connection(url, transport_options=opts) as conn:
    got = []
    def on_message(m):
        got.append(m)
    q = Queue(queue, Exchange(queue), routing_key=queue)
    with conn.Consumer(q, on_message=on_message):
        deadline = time.time() + 10
        while not got and time.time() < deadline:
            try:
                conn.drain_events(timeout=1)
            except Exception:
                pass
    m = got[0]
    print(dumps({
        "body": base64.b64encode(m.body).decode(),
        "headers": m.headers,
        "properties": m.properties,
        "delivery_info": m.delivery_info,
        "content_type": m.content_type,
        "content_encoding": m.content_encoding,
    }))
    m.ack()
`

// kombuTakeAndDie receives one message and exits without acknowledging
// it, as a worker killed mid-task.
const kombuTakeAndDie = pyPrelude + `
with Connection(url, transport_options=opts) as conn:
    def on_message(m):
        print(m.delivery_tag, flush=True)
        os._exit(0)
    q = Queue(queue, Exchange(queue), routing_key=queue)
    with conn.Consumer(q, on_message=on_message):
        conn.drain_events(timeout=10)
`

// kombuRestore runs one visibility-timeout restore, as a consumer's
// periodic restore_visible does.
const kombuRestore = pyPrelude + `
with Connection(url, transport_options=opts) as conn:
    ch = conn.default_channel
    ch.qos.restore_visible(num=ch.unacked_restore_limit, interval=1)
`

// kombuDeclare declares the queues given as JSON in argv[4]:
// [[queue, exchange, type, routing key], ...].
const kombuDeclare = pyPrelude + `
with Connection(url, transport_options=opts) as conn:
    ch = conn.default_channel
    from kombu import binding
    for spec in json.loads(sys.argv[4]):
        name, ex, typ, rk = spec[:4]
        bs = [binding(Exchange(e, type=t), routing_key=r) for e, t, r in (spec[4] if len(spec) > 4 and spec[4] else [])]
        q = Queue(name, Exchange(ex, type=typ), routing_key=rk, bindings=bs).bind(ch)
        if bs:  # kombu drops the exchange of a queue with bindings; Celery's Queues sets it back
            q.exchange = Exchange(ex, type=typ)(ch)
        q.declare()
`

// kombuRedeliver prints what kombu's restore makes of the envelope in
// argv[4] (_do_restore_message) and the unacked entry QoS.append stores
// for it.
const kombuRedeliver = `
import sys
from kombu.utils.json import dumps, loads
payload = loads(sys.argv[1])
print(dumps([payload, "", "celery"]))
payload["headers"]["redelivered"] = True
payload["properties"]["delivery_info"]["redelivered"] = True
print(dumps(payload))
`

func pyArgs(db int, queue, prefix string, extra ...string) []string {
	return append([]string{redisURL(db), queue, prefix}, extra...)
}

// TestCeleryProducer consumes a task Celery 5.7 sent with send_task and
// checks the unacked entry the Go consumer writes against kombu's, byte
// for byte.
func TestCeleryProducer(t *testing.T) {
	a := newAdmin(t, testDB)
	q := unique("celery-interop")
	a.cleanupQueues(nil, q)
	var sent struct{ ID, ETA, Expires string }
	mustJSON(t, runPython(t, celerySend, pyArgs(testDB, q, "")...), &sent)

	raw := a.list(q + "\x06\x166") // priority 7
	if len(raw) != 1 {
		t.Fatalf("priority 7 list holds %d messages", len(raw))
	}
	b := dial(t, testDB, Config{})
	ds := consume(t, b, 1, broker.Queue{Name: q})
	d := recv(t, ds)
	m, err := protocol.Decode(&d.Raw)
	if err != nil {
		t.Fatalf("Decode: %v\nheaders %#v", err, d.Headers)
	}
	eta, _ := protocol.ParseISO(sent.ETA)
	expires, _ := protocol.ParseISO(sent.Expires)
	checks := []struct {
		what      string
		got, want any
	}{
		{"task", m.Task, "proj.tasks.add"},
		{"id", m.ID, sent.ID},
		{"args", m.Args, []any{int64(2), "three"}},
		{"kwargs", m.Kwargs, map[string]any{"z": []any{int64(1), nil}}},
		{"timelimit", m.TimeLimit, protocol.TimeLimit{Hard: 30 * time.Second, Soft: 20 * time.Second}},
		{"eta", m.ETA.Equal(eta), true},
		{"expires", m.Expires.Equal(expires), true},
		{"priority", d.Properties.Priority, 7},
		{"queue", d.Queue, q},
		{"exchange (Celery publishes direct queues on the anonymous exchange)", d.Exchange, ""},
		{"routing key", d.RoutingKey, q},
		{"tag is a UUID", len(d.Tag), 36},
		{"x-dec", d.Headers["x-dec"], protocol.Decimal("1.10")},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.what, c.got, c.want)
		}
	}

	// While unacked, the entry is kombu's: compare with what kombu's
	// QoS.append would store for the same message.
	entry, err := a.HGet(context.Background(), "unacked", d.Tag).Result()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(string(runPython(t, kombuRedeliver, raw[0])), `, "", "celery"]`, `, "", "`+q+`"]`, 1)
	want = strings.SplitN(want, "\n", 2)[0]
	if entry != want {
		t.Errorf("unacked entry\n%s\nkombu stores\n%s", entry, want)
	}
	// And its shape is the captured one.
	var got, fix []any
	mustJSON(t, []byte(entry), &got)
	mustJSON(t, []byte(readFixture(t, "redis-unacked-entry.json").Raw), &fix)
	// (The fixture's task had no expires, so no expiration property.)
	props := slices.DeleteFunc(keysOf(got[0].(map[string]any)["properties"]), func(k string) bool { return k == "expiration" })
	if len(got) != 3 || !reflect.DeepEqual(keysOf(got[0]), keysOf(fix[0])) ||
		!reflect.DeepEqual(props, keysOf(fix[0].(map[string]any)["properties"])) {
		t.Errorf("entry shape differs from the fixture: %v vs %v; properties %v vs %v", keysOf(got[0]), keysOf(fix[0]),
			keysOf(got[0].(map[string]any)["properties"]), keysOf(fix[0].(map[string]any)["properties"]))
	}
	if score, err := a.ZScore(context.Background(), "unacked_index", d.Tag).Result(); err != nil || time.Since(time.Unix(int64(score), 0)) > time.Minute {
		t.Errorf("unacked_index score %v, %v", score, err)
	}
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
	if a.hexists("unacked", d.Tag) {
		t.Error("entry left after Ack")
	}
}

func keysOf(v any) []string {
	m, _ := v.(map[string]any)
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// TestRedeliveredBytes compares the envelope Go puts back on a restore
// with kombu's, for the captured message.
func TestRedeliveredBytes(t *testing.T) {
	raw := readFixture(t, "redis-task-message.json").Raw
	lines := strings.Split(strings.TrimSpace(string(runPython(t, kombuRedeliver, raw))), "\n")
	if got := string(unackedEntry([]byte(raw), "", "celery")); got != lines[0] {
		t.Errorf("entry\n%s\nkombu\n%s", got, lines[0])
	}
	got, err := markRedelivered([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != lines[1] {
		t.Errorf("restored envelope\n%s\nkombu\n%s", got, lines[1])
	}
}

// TestKombuConsumer publishes from Go and consumes with kombu.
func TestKombuConsumer(t *testing.T) {
	pfx := unique("kc") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	b := dial(t, testDB, Config{KeyPrefix: pfx})
	q := "kq"
	when := time.Date(2030, 1, 2, 3, 4, 5, 678901000, time.UTC)
	p := broker.Publishing{RoutingKey: q}
	p.ContentType, p.ContentEncoding = "application/json", "utf-8"
	p.Body = []byte(`[[1, "é"], {}, {}]`)
	p.Headers = map[string]any{
		"task": "proj.add", "id": "k-1", "retries": int64(3), "eta": nil,
		"x-list": []any{int64(1), "two", nil, true, 2.5}, "x-when": when,
		"x-text": "ünï\u2028", "x-big": int64(1) << 60,
	}
	p.Properties = protocol.Properties{CorrelationID: "k-1", ReplyTo: "r", DeliveryMode: 2, Priority: 7,
		Extra: map[string]any{"origin": "go"}}
	low := text(q, "low")
	low.Properties.Priority = 9
	publish(t, b, low) // published first, consumed last: 9 is the least urgent
	publish(t, b, p)

	var got struct {
		Body            string
		Headers         map[string]any
		Properties      map[string]any
		DeliveryInfo    map[string]any `json:"delivery_info"`
		ContentType     string         `json:"content_type"`
		ContentEncoding string         `json:"content_encoding"`
	}
	out := runPython(t, kombuGet, pyArgs(testDB, q, pfx)...)
	v, err := protocol.UnmarshalJSON(out, 0)
	if err != nil {
		t.Fatal(err)
	}
	mustJSON(t, out, &got)
	obj := v.(map[string]any)
	body, _ := base64.StdEncoding.DecodeString(got.Body)
	if string(body) != string(p.Body) || got.ContentType != p.ContentType || got.ContentEncoding != p.ContentEncoding {
		t.Errorf("body %q (%s, %s)", body, got.ContentType, got.ContentEncoding)
	}
	headers := obj["headers"].(map[string]any)
	if hw, ok := headers["x-when"].(time.Time); !ok || !hw.Equal(when) {
		t.Errorf("x-when = %#v", headers["x-when"])
	} else {
		headers["x-when"] = when
	}
	if !reflect.DeepEqual(headers, p.Headers) {
		t.Errorf("kombu headers\n%#v\nsent\n%#v", headers, p.Headers)
	}
	props := obj["properties"].(map[string]any)
	for k, want := range map[string]any{
		"correlation_id": "k-1", "reply_to": "r", "delivery_mode": int64(2), "priority": int64(7),
		"origin": "go", "body_encoding": "base64",
	} {
		if !reflect.DeepEqual(props[k], want) {
			t.Errorf("property %s = %#v, want %#v", k, props[k], want)
		}
	}
	if got.DeliveryInfo["exchange"] != "" || got.DeliveryInfo["routing_key"] != q {
		t.Errorf("delivery_info %v", got.DeliveryInfo)
	}
	if tag, _ := props["delivery_tag"].(string); len(tag) != 36 {
		t.Errorf("delivery_tag %q is not a UUID", tag)
	}
	// kombu acked it: nothing left but the low-priority message.
	if n, _ := a.HLen(context.Background(), pfx+"unacked").Result(); n != 0 {
		t.Errorf("%d unacked entries after kombu's ack", n)
	}
	if a.llen(pfx+q+"\x06\x169") != 1 {
		t.Error("the priority 9 message is not in its list")
	}
}

// TestBindingMembers declares the same queues from kombu and from Go, each
// under its own global_keyprefix, and compares the binding sets.
func TestBindingMembers(t *testing.T) {
	a := newAdmin(t, testDB)
	py, gp := unique("bpy")+"_", unique("bgo")+"_"
	a.cleanupPrefix(py)
	a.cleanupPrefix(gp)
	queues := []broker.Queue{
		{Name: "celery"}, // Celery's default: direct exchange of the same name
		{Name: "q1", Exchange: "dx", RoutingKey: "k1"},
		{Name: "q2", Exchange: "dx", RoutingKey: "k2"},
		{Name: "q3", Exchange: "tx", ExchangeType: "topic", RoutingKey: "a.*.#"},
		{Name: "q4", Exchange: "tx", ExchangeType: "topic", RoutingKey: "#"},
		{Name: "q5", Exchange: "tx", ExchangeType: "topic", RoutingKey: "foo-bar_baz.*.ü"},
		{Name: "q6", Exchange: "fx", ExchangeType: "fanout", RoutingKey: "worker.#"},
		// bindings=, with the queue's own binding first as the config
		// layer writes it.
		{Name: "q7", Exchange: "dx", RoutingKey: "k7", Bindings: []broker.Binding{
			{Exchange: broker.Exchange{Name: "dx", Kind: "direct"}, RoutingKey: "k7"},
			{Exchange: broker.Exchange{Name: "media", Kind: "topic"}, RoutingKey: "image.*"},
			{Exchange: broker.Exchange{Name: "media", Kind: "topic"}, RoutingKey: "video.#"},
			{Exchange: broker.Exchange{Name: "dx", Kind: "direct"}, RoutingKey: "k7b"},
		}},
	}
	var spec [][]any
	for _, q := range queues {
		var bs [][3]string
		for _, bd := range q.Bindings[min(1, len(q.Bindings)):] {
			bs = append(bs, [3]string{bd.Exchange.Name, bd.Exchange.Kind, bd.RoutingKey})
		}
		spec = append(spec, []any{q.Name, q.ExchangeName(), q.Kind(), q.Key(), bs})
	}
	js, _ := json.Marshal(spec)
	runPython(t, kombuDeclare, pyArgs(testDB, "", py, string(js))...)
	b := dial(t, testDB, Config{KeyPrefix: gp})
	if err := b.Declare(context.Background(), queues...); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, ex := range []string{"celery", "dx", "tx", "fx", "media"} {
		for _, set := range []string{"_kombu.binding.", "_kombu.binding_permanent."} {
			want, _ := a.SMembers(ctx, py+set+ex).Result()
			got, _ := a.SMembers(ctx, gp+set+ex).Result()
			sort.Strings(want)
			sort.Strings(got)
			if len(want) == 0 || !slices.Equal(got, want) {
				t.Errorf("%s%s: Go wrote %q, kombu %q", set, ex, got, want)
			}
		}
	}
	// Each of q7's bindings routes to it.
	for _, rk := range [][2]string{{"media", "image.png"}, {"media", "video.a.b"}, {"dx", "k7"}, {"dx", "k7b"}} {
		p := text(rk[1], rk[0]+"/"+rk[1])
		p.Exchange = rk[0]
		publish(t, b, p)
	}
	ds := consume(t, b, 4, queues[len(queues)-1])
	var got []string
	for range 4 {
		d := recv(t, ds)
		got = append(got, string(d.Body))
		_ = d.Ack()
	}
	sort.Strings(got)
	if want := []string{"dx/k7", "dx/k7b", "media/image.png", "media/video.a.b"}; !slices.Equal(got, want) {
		t.Errorf("q7 received %q, want %q", got, want)
	}
}

// TestPythonRestoredByGo: a kombu consumer dies holding a message; the Go
// restorer brings it back after the visibility timeout and Go consumes it.
func TestPythonRestoredByGo(t *testing.T) {
	pfx := unique("pyr") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	b := dial(t, testDB, Config{KeyPrefix: pfx, VisibilityTimeout: 2 * time.Second, RestoreInterval: 200 * time.Millisecond})
	q := "pq"
	publish(t, b, text(q, "take me"))
	t.Setenv("VT", "2")
	tag := strings.TrimSpace(string(runPython(t, kombuTakeAndDie, pyArgs(testDB, q, pfx)...)))
	if !a.hexists(pfx+"unacked", tag) || a.llen(pfx+q) != 0 {
		t.Fatalf("kombu did not leave %q unacked", tag)
	}
	start := time.Now()
	d := recv(t, consume(t, b, 1, broker.Queue{Name: q}))
	t.Logf("restored after %v", time.Since(start))
	if d.Tag != tag || !d.Redelivered || string(d.Body) != "take me" {
		t.Errorf("got tag %q redelivered %v body %q", d.Tag, d.Redelivered, d.Body)
	}
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
	if n, _ := a.HLen(context.Background(), pfx+"unacked").Result(); n != 0 {
		t.Errorf("%d unacked entries left", n)
	}
}

// TestGoRestoredByPython: a Go consumer is killed (SIGKILL) holding a
// message; kombu's restore_visible brings it back, byte for byte as Go's
// restorer would.
func TestGoRestoredByPython(t *testing.T) {
	pfx := unique("gor") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	b := dial(t, testDB, Config{KeyPrefix: pfx, RestoreInterval: -1})
	q := "gq"
	p := text(q, "kill me")
	p.Properties.Priority = 7
	publish(t, b, p)
	list := pfx + q + "\x06\x166"
	orig := a.list(list)[0]
	tag := crashedConsumer(t, testDB, pfx, q, 2*time.Second)
	if !a.hexists(pfx+"unacked", tag) || a.llen(list) != 0 {
		t.Fatalf("the killed consumer did not leave %q unacked", tag)
	}
	time.Sleep(2100 * time.Millisecond)
	t.Setenv("VT", "2")
	runPython(t, kombuRestore, pyArgs(testDB, q, pfx)...)
	back := a.list(list)
	if len(back) != 1 {
		t.Fatalf("kombu did not restore the message to %q: %v", list, back)
	}
	want, err := markRedelivered([]byte(orig))
	if err != nil {
		t.Fatal(err)
	}
	if back[0] != string(want) {
		t.Errorf("kombu restored\n%s\nGo would restore\n%s", back[0], want)
	}
	d := recv(t, consume(t, b, 1, broker.Queue{Name: q}))
	if d.Tag != tag || !d.Redelivered {
		t.Errorf("tag %q redelivered %v", d.Tag, d.Redelivered)
	}
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
}

// TestKeepAlive holds a delivery for three visibility timeouts while a
// second Go broker's restorer and kombu's restore_visible scan: it is not
// restored, while a killed consumer's message is.
func TestKeepAlive(t *testing.T) {
	pfx := unique("ka") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	const vt = time.Second
	holder := dial(t, testDB, Config{KeyPrefix: pfx, VisibilityTimeout: vt, RestoreInterval: -1})
	publish(t, holder, text("held", "long task"))
	publish(t, holder, text("dead", "abandoned"))
	held := recv(t, consume(t, holder, 1, broker.Queue{Name: "held"}))
	deadTag := crashedConsumer(t, testDB, pfx, "dead", vt)

	scanner := dial(t, testDB, Config{KeyPrefix: pfx, VisibilityTimeout: vt, RestoreInterval: 100 * time.Millisecond})
	consume(t, scanner, 1, broker.Queue{Name: "idle"})
	t.Setenv("VT", "1")
	deadline := time.Now().Add(3 * vt)
	for time.Now().Before(deadline) {
		runPython(t, kombuRestore, pyArgs(testDB, "", pfx)...)
		time.Sleep(200 * time.Millisecond)
	}
	if n := a.llen(pfx + "held"); n != 0 {
		t.Errorf("the held delivery was restored (%d in its queue): it would run twice", n)
	}
	if !a.hexists(pfx+"unacked", held.Tag) {
		t.Error("the held delivery left unacked")
	}
	dead := a.list(pfx + "dead")
	if len(dead) != 1 || !strings.Contains(dead[0], deadTag) || !strings.Contains(dead[0], `"redelivered": true`) {
		keys, _ := a.Keys(context.Background(), pfx+"*").Result()
		idx, _ := a.ZRangeWithScores(context.Background(), pfx+"unacked_index", 0, -1).Result()
		t.Errorf("the killed consumer's message was not restored: %q (keys %q, index %v, dead tag %s)", dead, keys, idx, deadTag)
	}
	if err := held.Ack(); err != nil {
		t.Errorf("Ack after 3 visibility timeouts: %v", err)
	}
	if a.hexists(pfx+"unacked", held.Tag) {
		t.Error("entry left after Ack")
	}
}
