package amqp

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
)

// celerySend publishes with Celery's own app.send_task (kombu + py-amqp)
// and prints what it sent, for the Go side to compare.
const celerySend = `
import datetime, decimal, json, sys
from celery import Celery

queue, url = sys.argv[1], sys.argv[2]
app = Celery("interop", broker=url)
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=123456)
eta = now + datetime.timedelta(minutes=10)
expires = now + datetime.timedelta(hours=1)
r = app.send_task(
    "proj.tasks.add", args=(2, "three"), kwargs={"z": [1, None]},
    queue=queue, eta=eta, expires=expires, priority=5,
    time_limit=30, soft_time_limit=20,
    headers={"x-big": 2**40, "x-neg-big": -2**40, "x-dec": decimal.Decimal("1.10"),
             "x-nested": {"deep": [2**33, "s", None]}},
)
with app.connection_for_write() as conn:
    conn.release()
print(json.dumps({"id": r.id, "eta": eta.isoformat(), "expires": expires.isoformat()}))
`

func python(t *testing.T) string {
	t.Helper()
	py, err := filepath.Abs("../../.venv/bin/python")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("the Celery venv is missing (%v): run scripts/services.sh", err)
	}
	return py
}

// TestCeleryProducer consumes a message published by Celery 5.7 through
// kombu/py-amqp, including the 64-bit integer headers py-amqp writes as
// 'L', which amqp091-go alone cannot read.
func TestCeleryProducer(t *testing.T) {
	b := dial(t, Config{GlobalQoS: true})
	q := broker.Queue{Name: unique("celery-interop")} // as Celery declares it: durable, direct
	newAdmin(t).cleanup([]string{q.Name}, []string{q.Name})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, python(t), "-c", celerySend, q.Name, "amqp://guest:guest@127.0.0.1:5672//").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("send_task: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("send_task: %v", err)
	}
	var sent struct{ ID, ETA, Expires string }
	if err := json.Unmarshal(out, &sent); err != nil {
		t.Fatalf("send_task output %q: %v", out, err)
	}

	ds := consume(t, b, 1, q)
	d := recv(t, ds)
	defer d.Ack()
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
		{"correlation_id", d.Properties.CorrelationID, sent.ID},
		{"args", m.Args, []any{int64(2), "three"}},
		{"kwargs", m.Kwargs, map[string]any{"z": []any{int64(1), nil}}},
		{"timelimit (hard first)", m.TimeLimit, protocol.TimeLimit{Hard: 30 * time.Second, Soft: 20 * time.Second}},
		{"eta", m.ETA.Equal(eta), true},
		{"expires", m.Expires.Equal(expires), true},
		{"priority", d.Properties.Priority, 5},
		{"delivery_mode", d.Properties.DeliveryMode, 2},
		{"content type", d.ContentType, "application/json"},
		{"lang", d.Headers["lang"], "py"},
		{"retries (py-amqp 'I')", d.Headers["retries"], int32(0)},
		{"x-big (py-amqp 'L')", d.Headers["x-big"], int64(1 << 40)},
		{"x-neg-big", d.Headers["x-neg-big"], int64(-1 << 40)},
		{"x-dec", d.Headers["x-dec"], protocol.Decimal("1.10")},
		{"x-nested", d.Headers["x-nested"], map[string]any{"deep": []any{int64(1 << 33), "s", nil}}},
		{"custom headers", m.Headers["x-big"], int64(1 << 40)},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v (%T), want %#v (%T)", c.what, c.got, c.got, c.want, c.want)
		}
	}
	if d.Properties.ReplyTo == "" || d.Properties.Expiration == "" {
		t.Errorf("reply_to %q, expiration %q: want both set", d.Properties.ReplyTo, d.Properties.Expiration)
	}
}
