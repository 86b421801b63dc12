package results_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// rpcCapture is testdata/rpc-messages.json: what a Celery 5.7.0 worker
// published to its client's reply queue with result_backend="rpc://".
type rpcCapture struct {
	Exchange   string `json:"exchange"`
	RoutingKey string `json:"routing_key"`
	Properties struct {
		ContentType     string         `json:"content_type"`
		ContentEncoding string         `json:"content_encoding"`
		Headers         map[string]any `json:"application_headers"`
		DeliveryMode    int            `json:"delivery_mode"`
		Priority        int            `json:"priority"`
		CorrelationID   string         `json:"correlation_id"`
	} `json:"properties"`
	Body string `json:"body"`
}

func rpcCaptures(t testing.TB) []rpcCapture {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "rpc-messages.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Messages []rpcCapture `json:"messages"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Messages) == 0 {
		t.Fatal("no captured messages")
	}
	return f.Messages
}

// delivery is the captured message as a transport hands it over.
func (c rpcCapture) delivery(acks *atomic.Int64) *broker.Delivery {
	return &broker.Delivery{
		Raw: protocol.Raw{
			ContentType: c.Properties.ContentType, ContentEncoding: c.Properties.ContentEncoding,
			Headers:    c.Properties.Headers,
			Properties: protocol.Properties{CorrelationID: c.Properties.CorrelationID, DeliveryMode: c.Properties.DeliveryMode},
			Body:       []byte(c.Body),
		},
		Queue: c.RoutingKey, RoutingKey: c.RoutingKey,
		Acker: countingAcker{acks},
	}
}

type countingAcker struct{ n *atomic.Int64 }

func (a countingAcker) Ack(*broker.Delivery) error { a.n.Add(1); return nil }
func (a countingAcker) Reject(*broker.Delivery, bool) error {
	return errors.New("a reply is never rejected")
}

// recorder is a Publisher keeping what it was given.
type recorder struct {
	mu  sync.Mutex
	out []broker.Publishing
	err error
}

func (r *recorder) Publish(_ context.Context, p broker.Publishing) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.out = append(r.out, p)
	return nil
}

// A Go worker's rpc:// messages are Celery's, byte for byte: the body, the
// default exchange, reply_to as routing key, correlation_id, content type
// and encoding, delivery_mode 1, priority 0, empty headers.
func TestRPCStoreMatchesCelery(t *testing.T) {
	for _, c := range rpcCaptures(t) {
		m, err := results.DecodeMeta([]byte(c.Body))
		if err != nil {
			t.Fatal(err)
		}
		t.Run(m.Status+"-"+c.Properties.CorrelationID[:8], func(t *testing.T) {
			if m.Status == results.Started {
				// A Go worker stores {"pid", "hostname"} in Celery's order.
				r := m.Result.(map[string]any)
				m.Result = results.StartedResult(int(r["pid"].(int64)), r["hostname"].(string))
			}
			m.ReplyTo, m.CorrelationID = c.RoutingKey, c.Properties.CorrelationID
			rec := &recorder{}
			if err := results.NewRPC(rec, results.RPCConfig{}).Store(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			if len(rec.out) != 1 {
				t.Fatalf("published %d messages, want 1", len(rec.out))
			}
			p := rec.out[0]
			if string(p.Body) != c.Body {
				t.Errorf("body\n got %s\nwant %s", p.Body, c.Body)
			}
			want := protocol.Properties{CorrelationID: c.Properties.CorrelationID, DeliveryMode: c.Properties.DeliveryMode, Priority: c.Properties.Priority}
			if !reflect.DeepEqual(p.Properties, want) {
				t.Errorf("properties %+v, want %+v", p.Properties, want)
			}
			if p.Exchange != c.Exchange || p.RoutingKey != c.RoutingKey || p.Mandatory {
				t.Errorf("sent to exchange %q key %q mandatory %v, want %q %q false", p.Exchange, p.RoutingKey, p.Mandatory, c.Exchange, c.RoutingKey)
			}
			if p.ContentType != c.Properties.ContentType || p.ContentEncoding != c.Properties.ContentEncoding {
				t.Errorf("content %q/%q, want %q/%q", p.ContentType, p.ContentEncoding, c.Properties.ContentType, c.Properties.ContentEncoding)
			}
			if len(p.Headers) != 0 || len(c.Properties.Headers) != 0 {
				t.Errorf("headers %v, Celery's %v", p.Headers, c.Properties.Headers)
			}
		})
	}
}

func TestRPCStore(t *testing.T) {
	ctx := context.Background()
	t.Run("persistent", func(t *testing.T) {
		rec := &recorder{}
		m := &results.Meta{TaskID: "t1", Status: results.Success, Result: 1, ReplyTo: "client"}
		if err := results.NewRPC(rec, results.RPCConfig{Persistent: true}).Store(ctx, m); err != nil {
			t.Fatal(err)
		}
		if got := rec.out[0].Properties; got.DeliveryMode != 2 || got.CorrelationID != "t1" {
			t.Errorf("properties %+v, want delivery_mode 2 and the task id as correlation_id", got)
		}
		if m.DateDone.IsZero() {
			t.Error("a ready state was sent without date_done")
		}
	})
	t.Run("no reply_to", func(t *testing.T) {
		rec := &recorder{}
		m := &results.Meta{TaskID: "t1", Status: results.Revoked, Result: results.TaskRevokedError("revoked")}
		if err := results.NewRPC(rec, results.RPCConfig{}).Store(ctx, m); err != nil || len(rec.out) != 0 {
			t.Errorf("Store = %v with %d messages; want nothing sent, as Celery sends nothing", err, len(rec.out))
		}
	})
	t.Run("invalid", func(t *testing.T) {
		for _, m := range []*results.Meta{nil, {Status: results.Success, ReplyTo: "c"}, {TaskID: "t", ReplyTo: "c"}} {
			if err := results.NewRPC(&recorder{}, results.RPCConfig{}).Store(ctx, m); !errors.Is(err, results.ErrInvalidMeta) {
				t.Errorf("Store(%+v) = %v, want ErrInvalidMeta", m, err)
			}
		}
	})
	t.Run("broker down", func(t *testing.T) {
		rec := &recorder{err: broker.ErrClosed}
		m := &results.Meta{TaskID: "t1", Status: results.Success, ReplyTo: "c"}
		if err := results.NewRPC(rec, results.RPCConfig{}).Store(ctx, m); !errors.Is(err, broker.ErrClosed) {
			t.Errorf("Store = %v, want it to wrap broker.ErrClosed", err)
		}
	})
}

// feedBroker is a ReplyBroker whose deliveries the test sends.
type feedBroker struct {
	declared []broker.Queue
	ch       chan *broker.Delivery
}

func newFeedBroker() *feedBroker { return &feedBroker{ch: make(chan *broker.Delivery)} }

func (f *feedBroker) Declare(_ context.Context, qs ...broker.Queue) error {
	f.declared = append(f.declared, qs...)
	return nil
}

func (f *feedBroker) Consume(ctx context.Context, qs []broker.Queue, _ int) (<-chan *broker.Delivery, error) {
	out := make(chan *broker.Delivery)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case d := <-f.ch:
				out <- d
			}
		}
	}()
	return out, nil
}

// send hands d over and waits until the ReplyQueue has taken it in (its
// ack comes after).
func (f *feedBroker) send(t *testing.T, d *broker.Delivery, acks *atomic.Int64) {
	t.Helper()
	before := acks.Load()
	f.ch <- d
	deadline := time.Now().Add(5 * time.Second)
	for acks.Load() == before {
		if time.Now().After(deadline) {
			t.Fatal("delivery not acked")
		}
		time.Sleep(time.Millisecond)
	}
}

func openFed(t *testing.T, opts results.ReplyQueueConfig) (*results.ReplyQueue, *feedBroker) {
	t.Helper()
	fb := newFeedBroker()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	q, err := results.OpenReplyQueue(context.Background(), fb, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q, fb
}

// The states Celery's worker published read back as Python's AsyncResult
// reads them: the latest one per task, PENDING before any.
func TestReplyQueueReadsCelery(t *testing.T) {
	ctx := context.Background()
	q, fb := openFed(t, results.ReplyQueueConfig{Name: "f614096d-6948-382d-aeb9-0a7622a60df7"})
	want := broker.Queue{Name: q.ReplyTo(), Exchange: "amq.direct", ExchangeType: "direct", RoutingKey: q.ReplyTo(),
		AutoDelete: true, Arguments: map[string]any{"x-expires": 86400000}}
	if len(fb.declared) != 1 || !reflect.DeepEqual(fb.declared[0], want) {
		t.Errorf("declared %+v, want %+v", fb.declared, want)
	}
	var acks atomic.Int64
	last := map[string]string{} // task id -> last status sent
	for _, c := range rpcCaptures(t) {
		id := c.Properties.CorrelationID
		if m, _ := q.Get(ctx, id); last[id] == "" && m.Status != results.Pending {
			t.Errorf("before any state, %s is %s", id, m.Status)
		}
		fb.send(t, c.delivery(&acks), &acks)
		m, err := q.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Status string }
		json.Unmarshal([]byte(c.Body), &body)
		if m.Status != body.Status || m.TaskID != id {
			t.Errorf("after a %s message, Get = %s for %s", body.Status, m.Status, m.TaskID)
		}
		if m.Status == "PROGRESS" && !reflect.DeepEqual(m.Result, map[string]any{"current": int64(1), "total": int64(2)}) {
			t.Errorf("PROGRESS meta %v", m.Result)
		}
		last[id] = m.Status
	}
	byStatus := map[string]*results.Meta{}
	for id := range last {
		m, err := q.Wait(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		byStatus[m.Status] = m
	}
	if f := byStatus[results.Failure]; f == nil || f.Err() == nil || f.Err().Error() != "ValueError: boom" || f.Traceback == "" {
		t.Errorf("FAILURE read as %+v", f)
	}
	if n := acks.Load(); n != int64(len(rpcCaptures(t))) {
		t.Errorf("%d acks for %d messages", n, len(rpcCaptures(t)))
	}
}

// What is not a task state in an accepted serializer is dropped (and
// acked): pickle is never decoded.
func TestReplyQueueDropsForeignMessages(t *testing.T) {
	ctx := context.Background()
	q, fb := openFed(t, results.ReplyQueueConfig{})
	var acks atomic.Int64
	c := rpcCaptures(t)[1] // SUCCESS of cap.add
	pickled := c.delivery(&acks)
	pickled.ContentType = protocol.ContentTypePickle
	pickled.Body = []byte("\x80\x04\x95...")
	malformed := c.delivery(&acks)
	malformed.Body = []byte(`{"result": 1}`)
	noID := c.delivery(&acks)
	noID.Properties.CorrelationID = ""
	noID.Body = []byte(`{"status": "SUCCESS", "result": 1}`)
	for _, d := range []*broker.Delivery{pickled, malformed, noID} {
		fb.send(t, d, &acks)
	}
	if m, _ := q.Get(ctx, c.Properties.CorrelationID); m.Status != results.Pending {
		t.Errorf("after foreign messages the task is %s, want PENDING", m.Status)
	}
	// Without correlation_id the body's task_id names the task (old Celery).
	byBody := c.delivery(&acks)
	byBody.Properties.CorrelationID = ""
	fb.send(t, byBody, &acks)
	if m, _ := q.Get(ctx, c.Properties.CorrelationID); m.Status != results.Success || m.Result != int64(5) {
		t.Errorf("state by body task_id = %s %v, want SUCCESS 5", m.Status, m.Result)
	}
}

func meta(id, status string, result any) []byte {
	b, err := (&results.Meta{TaskID: id, Status: status, Result: result}).Encode()
	if err != nil {
		panic(err)
	}
	return b
}

func stateDelivery(id, status string, result any, acks *atomic.Int64) *broker.Delivery {
	return &broker.Delivery{Raw: protocol.Raw{ContentType: protocol.ContentTypeJSON,
		Properties: protocol.Properties{CorrelationID: id}, Body: meta(id, status, result)}, Acker: countingAcker{acks}}
}

func TestReplyQueueStates(t *testing.T) {
	ctx := context.Background()
	t.Run("success is final", func(t *testing.T) {
		q, fb := openFed(t, results.ReplyQueueConfig{})
		var acks atomic.Int64
		fb.send(t, stateDelivery("a", results.Success, 1, &acks), &acks)
		fb.send(t, stateDelivery("a", results.Started, nil, &acks), &acks) // a duplicate delivery ran again
		if m, _ := q.Get(ctx, "a"); m.Status != results.Success {
			t.Errorf("state %s, want SUCCESS kept", m.Status)
		}
	})
	t.Run("max states", func(t *testing.T) {
		q, fb := openFed(t, results.ReplyQueueConfig{MaxStates: 3})
		var acks atomic.Int64
		for i := range 5 {
			fb.send(t, stateDelivery(fmt.Sprint(i), results.Success, i, &acks), &acks)
		}
		for i, want := range []string{results.Pending, results.Pending, results.Success, results.Success, results.Success} {
			if m, _ := q.Get(ctx, fmt.Sprint(i)); m.Status != want {
				t.Errorf("task %d: %s, want %s (the first seen go first)", i, m.Status, want)
			}
		}
	})
	t.Run("forget", func(t *testing.T) {
		q, fb := openFed(t, results.ReplyQueueConfig{})
		var acks atomic.Int64
		fb.send(t, stateDelivery("a", results.Success, 1, &acks), &acks)
		if err := q.Forget(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if m, _ := q.Get(ctx, "a"); m.Status != results.Pending {
			t.Errorf("forgotten task is %s", m.Status)
		}
	})
	t.Run("wait", func(t *testing.T) {
		q, fb := openFed(t, results.ReplyQueueConfig{})
		var acks atomic.Int64
		got := make(chan *results.Meta, 1)
		go func() {
			m, err := q.Wait(ctx, "w")
			if err != nil {
				t.Error(err)
			}
			got <- m
		}()
		fb.send(t, stateDelivery("w", "PROGRESS", map[string]any{"current": 1}, &acks), &acks)
		fb.send(t, stateDelivery("other", results.Success, 1, &acks), &acks)
		select {
		case m := <-got:
			t.Fatalf("Wait returned %s before a ready state", m.Status)
		case <-time.After(50 * time.Millisecond):
		}
		fb.send(t, stateDelivery("w", results.Failure, errors.New("no"), &acks), &acks)
		if m := <-got; m.Status != results.Failure || m.Err() == nil {
			t.Errorf("Wait = %+v", m)
		}
		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		if _, err := q.Wait(short, "never"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Wait past the deadline = %v", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		q, _ := openFed(t, results.ReplyQueueConfig{})
		done := make(chan error, 1)
		go func() { _, err := q.Wait(ctx, "x"); done <- err }()
		q.Close()
		if err := <-done; !errors.Is(err, results.ErrReplyQueueClosed) {
			t.Errorf("Wait after Close = %v, want ErrReplyQueueClosed", err)
		}
		if _, err := q.Get(ctx, ""); !errors.Is(err, results.ErrEmptyID) {
			t.Errorf("Get(\"\") = %v", err)
		}
	})
}

func TestReplyQueueDeclaration(t *testing.T) {
	for _, tc := range []struct {
		expires time.Duration
		args    map[string]any
	}{
		{0, map[string]any{"x-expires": 86400000}},
		{90 * time.Second, map[string]any{"x-expires": 90000}},
		{-1, nil},
	} {
		q := results.ReplyQueueDeclaration("c", tc.expires)
		if !reflect.DeepEqual(q.Arguments, tc.args) || q.Transient || !q.AutoDelete || q.Exclusive {
			t.Errorf("expires %v: %+v, want durable auto-delete with %v", tc.expires, q, tc.args)
		}
	}
}
