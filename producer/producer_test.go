package producer

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
)

type recorder struct {
	mu       sync.Mutex
	declared []string
	sent     []broker.Publishing
}

func (r *recorder) Declare(_ context.Context, qs ...broker.Queue) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, q := range qs {
		r.declared = append(r.declared, q.Name)
	}
	return nil
}

func (r *recorder) Publish(_ context.Context, p broker.Publishing) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, p)
	return nil
}

func TestRouting(t *testing.T) {
	five := 5
	cfg := Config{DefaultQueue: "appb", Routes: []Route{
		{Pattern: "billing.invoice", Queue: "invoices"},
		{Pattern: "billing.*", Queue: "billing", Priority: &five},
		{Regexp: regexp.MustCompile(`^report\.(daily|weekly)$`), Exchange: "reports", RoutingKey: "r.x"},
	}}
	tests := []struct {
		task     string
		opts     []Option
		exchange string
		key      string
		priority int
	}{
		{"other.task", nil, "", "appb", 0},
		{"billing.invoice", nil, "", "invoices", 0},
		{"billing.refund", nil, "", "billing", 5},
		{"billing.refund", []Option{Priority(9)}, "", "billing", 9},
		{"report.daily", nil, "reports", "r.x", 0},
		{"report.monthly", nil, "", "appb", 0},
		{"billing.invoice", []Option{Queue("urgent")}, "", "urgent", 0}, // explicit options win
		{"x", []Option{Exchange("topicx", "a.b")}, "topicx", "a.b", 0},
	}
	for _, tt := range tests {
		rec := &recorder{}
		p := New(rec, nil, cfg)
		if _, err := p.SendTask(context.Background(), tt.task, nil, nil, tt.opts...); err != nil {
			t.Fatal(err)
		}
		got := rec.sent[0]
		if got.Exchange != tt.exchange || got.RoutingKey != tt.key || got.Properties.Priority != tt.priority || !got.Mandatory {
			t.Errorf("%s %v: published to %q/%q priority %d", tt.task, tt.opts, got.Exchange, got.RoutingKey, got.Properties.Priority)
		}
	}
}

func TestSendTaskMessage(t *testing.T) {
	rec := &recorder{}
	p := New(rec, nil, Config{})
	expires := time.Now().Add(time.Minute)
	_, err := p.SendTask(context.Background(), "proj.add", []any{2, 3}, map[string]any{"z": 1},
		TaskID("t1"), Countdown(10*time.Second), Expires(expires), TimeLimit(30*time.Second, 20*time.Second),
		Headers(map[string]any{"x-custom": 1}), Parent("root", "parent"), Shadow("add!"),
		Link(protocol.Signature{Task: "proj.cb"}), ReplyTo("oid-1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.SendTask(context.Background(), "proj.add", nil, nil); err != nil {
		t.Fatal(err)
	}
	if len(rec.declared) != 1 || rec.declared[0] != "celery" {
		t.Errorf("declared %v: the default queue once", rec.declared)
	}
	m, err := protocol.Decode(&rec.sent[0].Raw)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != "t1" || m.RootID != "root" || m.ParentID != "parent" || m.Shadow != "add!" ||
		m.TimeLimit.Hard != 30*time.Second || fmt.Sprint(m.Headers["x-custom"]) != "1" || len(m.Callbacks) != 1 {
		t.Errorf("message = %+v", m)
	}
	if d := time.Until(m.ETA); d < 9*time.Second || d > 10*time.Second {
		t.Errorf("eta in %v", d)
	}
	ms, _ := strconv.Atoi(m.Properties.Expiration)
	if ms < 59000 || ms > 60000 {
		t.Errorf("expiration property %q, want ~60000 ms", m.Properties.Expiration)
	}
	if m.Properties.ReplyTo != "oid-1" {
		t.Errorf("reply_to %q", m.Properties.ReplyTo)
	}
	if m.Origin == "" {
		t.Error("no origin header")
	}
}
