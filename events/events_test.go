package events

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

func TestClock(t *testing.T) {
	var c Clock
	if c.Forward() != 1 || c.Forward() != 2 {
		t.Fatal("forward")
	}
	if got := c.Adjust(10); got != 11 {
		t.Errorf("adjust(10) = %d, want 11", got)
	}
	if got := c.Adjust(3); got != 12 {
		t.Errorf("adjust(3) = %d, want 12", got)
	}
}

func TestUTCOffsetIsPOSIXSign(t *testing.T) {
	for _, tc := range []struct {
		zone string
		want int
	}{{"UTC", 0}, {"Europe/Berlin", -1}, {"America/New_York", 5}, {"Asia/Kolkata", -6}} {
		loc, err := time.LoadLocation(tc.zone)
		if err != nil {
			t.Skip(err)
		}
		// January: no DST anywhere listed.
		if got := UTCOffset(time.Date(2026, 1, 10, 12, 0, 0, 0, loc)); got != tc.want {
			t.Errorf("%s: utcoffset %d, want %d", tc.zone, got, tc.want)
		}
	}
}

// fixtureBody decodes the body of a captured Celery event.
func fixtureBody(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile("../../shared/reference/fixtures/" + name + ".json")
	if err != nil {
		t.Skip("reference fixtures not available:", err)
	}
	var f struct {
		Decoded struct {
			Body string `json:"body"`
		} `json:"decoded"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	body, err := base64.StdEncoding.DecodeString(f.Decoded.Body)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// keys returns an object's keys in order.
func keys(t *testing.T, obj []byte) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(obj)))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	var out []string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// recorder is a Publisher that keeps what it was given.
type recorder struct {
	mu  sync.Mutex
	ex  []broker.Exchange
	pub []broker.Publishing
}

func (r *recorder) DeclareExchange(_ context.Context, ex broker.Exchange) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ex = append(r.ex, ex)
	return nil
}

func (r *recorder) Publish(_ context.Context, p broker.Publishing) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pub = append(r.pub, p)
	return nil
}

func (r *recorder) sent() []broker.Publishing {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]broker.Publishing(nil), r.pub...)
}

func TestDispatcherMatchesCeleryFields(t *testing.T) {
	rec := &recorder{}
	d := New(rec, Config{Hostname: "go@test", TaskEvents: true, HeartbeatInterval: time.Hour, FlushInterval: time.Hour,
		Stats: func() (int64, int64) { return 1, 7 }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	m := &protocol.Message{ID: "t1", Task: "tasks.add", Args: []any{int64(2), int64(2)}, RootID: "t1"}
	now := time.Now()
	d.ObserveTask(&consumer.TaskEvent{Type: consumer.TaskReceived, Time: now, Message: m})
	d.ObserveTask(&consumer.TaskEvent{Type: consumer.TaskStarted, Time: now, Message: m})
	d.ObserveTask(&consumer.TaskEvent{Type: consumer.TaskFailed, Time: now, Message: m,
		Exception: &results.Exception{Type: "ValueError", Module: "builtins", Message: []any{"bad", int64(42)}}, Traceback: "tb"})
	d.SetTaskEvents(false)
	d.ObserveTask(&consumer.TaskEvent{Type: consumer.TaskSucceeded, Time: now, Message: m})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	pubs := rec.sent()
	if len(rec.ex) != 1 || rec.ex[0].Name != "celeryev" || rec.ex[0].Kind != "topic" {
		t.Errorf("exchange declared: %+v", rec.ex)
	}
	var route []string
	for _, p := range pubs {
		route = append(route, p.RoutingKey)
		if p.Exchange != "celeryev" || p.Headers["hostname"] != "go@test" || p.Properties.DeliveryMode != 1 {
			t.Errorf("publishing %+v", p)
		}
	}
	if strings.Join(route, " ") != "worker.online task.multi worker.offline" {
		t.Fatalf("routing keys %v", route)
	}
	// Same keys in the same order as Celery's captured events.
	if got, want := keys(t, pubs[0].Body), keys(t, fixtureBody(t, "event-worker-online")); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("worker-online keys\n got %v\nwant %v", got, want)
	}
	var batch []json.RawMessage
	if err := json.Unmarshal(pubs[1].Body, &batch); err != nil || len(batch) != 3 {
		t.Fatalf("task.multi body %s: %v", pubs[1].Body, err)
	}
	var celery []json.RawMessage
	if err := json.Unmarshal(fixtureBody(t, "event-task-multi-task-started+task-received"), &celery); err != nil {
		t.Fatal(err)
	}
	if got, want := keys(t, batch[0]), keys(t, celery[1]); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("task-received keys\n got %v\nwant %v", got, want)
	}
	var failed map[string]any
	if err := json.Unmarshal(batch[2], &failed); err != nil {
		t.Fatal(err)
	}
	if failed["exception"] != "ValueError('bad', 42)" || failed["type"] != "task-failed" || failed["hostname"] != "go@test" {
		t.Errorf("task-failed %v", failed)
	}
	var online map[string]any
	if err := json.Unmarshal(pubs[0].Body, &online); err != nil {
		t.Fatal(err)
	}
	if online["active"] != 1.0 || online["processed"] != 7.0 || online["sw_ident"] != SWIdent || online["freq"] != 3600.0 {
		t.Errorf("worker-online %v", online)
	}
}

// BenchmarkTaskEvents is the worker-side cost of the three events of one
// task (received, started, succeeded): observe, batch, encode.
func BenchmarkTaskEvents(b *testing.B) {
	rec := &discard{}
	d := New(rec, Config{Hostname: "go@bench", TaskEvents: true, HeartbeatInterval: time.Hour})
	m := &protocol.Message{ID: "0c5b3e8e-1f1e-4c3d-9b1e-1234567890ab", Task: "interop.add", Args: []any{int64(2), int64(2)},
		ArgsRepr: "(2, 2)", KwargsRepr: "{}", RootID: "0c5b3e8e-1f1e-4c3d-9b1e-1234567890ab"}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		now := time.Now()
		d.ObserveTask(&consumer.TaskEvent{Type: consumer.TaskReceived, Time: now, Message: m})
		d.ObserveTask(&consumer.TaskEvent{Type: consumer.TaskStarted, Time: now, Message: m})
		d.ObserveTask(&consumer.TaskEvent{Type: consumer.TaskSucceeded, Time: now, Message: m, Result: int64(4), Runtime: time.Microsecond})
		if i%8 == 7 {
			d.flush(ctx)
		}
	}
	b.ReportMetric(float64(rec.n.Load())/float64(b.N), "publishes/task")
}

type discard struct{ n atomic.Int64 }

func (*discard) DeclareExchange(context.Context, broker.Exchange) error { return nil }
func (d *discard) Publish(context.Context, broker.Publishing) error     { d.n.Add(1); return nil }

// A Dispatcher runs once: a second Run returns ErrDispatcherClosed.
func TestDispatcherRunsOnce(t *testing.T) {
	d := New(&discard{}, Config{Hostname: "go@once", HeartbeatInterval: time.Hour, FlushInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := d.Run(context.Background()); !errors.Is(err, ErrDispatcherClosed) {
		t.Fatalf("second Run = %v", err)
	}
}
