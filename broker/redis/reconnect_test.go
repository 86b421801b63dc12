package redis

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
)

// TestOutage cuts the connection to Redis under a consumer holding a
// delivery: the Go channel stays open, the ack made during the outage
// lands afterwards, a message published meanwhile arrives, and the outage
// is logged once.
func TestOutage(t *testing.T) {
	needRedis(t)
	pfx := unique("outage") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	p := newProxy(t)
	logs := &logCounter{}
	ctx := context.Background()
	b, err := Dial(ctx, "redis://"+p.addr()+"/10?dial_timeout=1s", Config{Logger: slog.New(logs), KeyPrefix: pfx})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	direct := dial(t, testDB, Config{KeyPrefix: pfx})
	q := broker.Queue{Name: "q"}
	ds := consume(t, b, 0, q)
	publish(t, b, text("q", "before"))
	d := recv(t, ds)

	p.cut()
	if err := d.Ack(); err != nil {
		t.Errorf("Ack during the outage: %v, want nil (deferred)", err)
	}
	waitFor(t, 5*time.Second, "Connected() to turn false", func() bool { return !b.Connected() })
	pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = b.Publish(pctx, text("q", "lost"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Publish during the outage: %v, want the context's deadline", err)
	}
	publish(t, direct, text("q", "during"))
	time.Sleep(time.Second) // several failed retries
	p.heal()

	d2 := recv(t, ds)
	if string(d2.Body) != "during" {
		t.Errorf("after the outage got %q", d2.Body)
	}
	if err := d2.Ack(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the deferred ack to land", func() bool { return !a.hexists(pfx+"unacked", d.Tag) })
	if !b.Connected() || b.Reconnects() != 1 {
		t.Errorf("Connected %v, Reconnects %d; want true, 1", b.Connected(), b.Reconnects())
	}
	if lost, back := logs.count("connection lost"), logs.count("connection restored"); lost != 1 || back != 1 {
		t.Errorf("logged %d losses and %d restorations, want one each", lost, back)
	}
	if err := d.Ack(); !errors.Is(err, ErrAlreadySettled) {
		t.Errorf("second Ack: %v", err)
	}
}

// TestStopIdle checks that stopping a consumer blocked in BRPOP does not
// wait for the BRPOP timeout (CLIENT UNBLOCK).
func TestStopIdle(t *testing.T) {
	pfx := unique("stopidle") + ":"
	newAdmin(t, testDB).cleanupPrefix(pfx)
	b := dial(t, testDB, Config{KeyPrefix: pfx, PollTimeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	ds, err := b.Consume(ctx, []broker.Queue{{Name: "q"}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	cancel()
	for range ds {
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("stopping an idle consumer took %v", el)
	}
}

type logCounter struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logCounter) WithGroup(string) slog.Handler            { return l }

func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, r.Message)
	l.mu.Unlock()
	return nil
}

func (l *logCounter) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}
