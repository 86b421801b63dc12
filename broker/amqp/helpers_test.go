package amqp

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/gocelery/gocelery/broker"
)

// The integration tests need RabbitMQ (scripts/services.sh starts it);
// -short skips them.

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func brokerURL() string {
	if u := os.Getenv("GOCELERY_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672//"
}

func needRabbit(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs RabbitMQ; skipped with -short")
	}
}

func unique(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// quietLogger drops the broker's expected warnings (reconnects) unless -v.
func quietLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// dial returns a Broker closed at the end of the test. Its connection is
// named, so tests can find it with rabbitmqctl.
func dial(t testing.TB, opts Config) *Broker {
	t.Helper()
	needRabbit(t)
	if opts.Logger == nil {
		opts.Logger = quietLogger(t)
	}
	if opts.Name == "" {
		opts.Name = unique("gocelery-test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := Dial(ctx, brokerURL(), opts)
	if err != nil {
		t.Fatalf("Dial: %v (is RabbitMQ up? scripts/services.sh starts it)", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// admin is a plain amqp091 channel for checks and cleanup, outside the
// code under test.
type admin struct {
	t    testing.TB
	conn *amqp.Connection
	ch   *amqp.Channel
}

func newAdmin(t testing.TB) *admin {
	t.Helper()
	needRabbit(t)
	conn, err := amqp.Dial("amqp://guest:guest@127.0.0.1:5672/")
	if err != nil {
		t.Fatalf("admin dial: %v", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	a := &admin{t: t, conn: conn, ch: ch}
	t.Cleanup(func() { conn.Close() })
	return a
}

// channel returns a usable channel, reopening it after a channel error
// and redialing after a broker restart.
func (a *admin) channel() *amqp.Channel {
	if a.conn.IsClosed() {
		conn, err := amqp.Dial("amqp://guest:guest@127.0.0.1:5672/")
		if err != nil {
			a.t.Fatalf("admin redial: %v", err)
		}
		a.conn = conn
		a.t.Cleanup(func() { conn.Close() })
	}
	if a.ch.IsClosed() {
		ch, err := a.conn.Channel()
		if err != nil {
			a.t.Fatal(err)
		}
		a.ch = ch
	}
	return a.ch
}

// cleanup deletes the queues and exchanges at the end of the test; it
// runs before the admin connection closes (Cleanup is LIFO).
func (a *admin) cleanup(queues, exchanges []string) {
	a.t.Cleanup(func() {
		for _, q := range queues {
			_, _ = a.channel().QueueDelete(q, false, false, false)
		}
		for _, e := range exchanges {
			_ = a.channel().ExchangeDelete(e, false, false)
		}
	})
}

// messages returns how many ready messages q holds.
func (a *admin) messages(q string) int {
	a.t.Helper()
	st, err := a.channel().QueueDeclarePassive(q, false, false, false, false, nil)
	if err != nil {
		a.t.Fatalf("inspect %s: %v", q, err)
	}
	return st.Messages
}

func publish(t testing.TB, b *Broker, p broker.Publishing) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Publish(ctx, p); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

func text(queue, body string) broker.Publishing {
	p := broker.Publishing{RoutingKey: queue}
	p.ContentType = "text/plain"
	p.Body = []byte(body)
	p.Properties.DeliveryMode = 2
	return p
}

func recv(t testing.TB, ch <-chan *broker.Delivery) *broker.Delivery {
	t.Helper()
	select {
	case d, ok := <-ch:
		if !ok {
			t.Fatal("deliveries channel closed")
		}
		return d
	case <-time.After(15 * time.Second):
		t.Fatal("no delivery within 15s")
	}
	return nil
}

func noRecv(t testing.TB, ch <-chan *broker.Delivery, wait time.Duration) {
	t.Helper()
	select {
	case d, ok := <-ch:
		if ok {
			t.Fatalf("unexpected delivery %q", d.Body)
		}
		t.Fatal("deliveries channel closed")
	case <-time.After(wait):
	}
}

func consume(t testing.TB, b *Broker, prefetch int, qs ...broker.Queue) <-chan *broker.Delivery {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ds, err := b.Consume(ctx, qs, prefetch)
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	return ds
}

// rabbitmqctl runs the broker's admin tool (the tests run as root on the
// test machine, as scripts/services.sh sets it up).
func rabbitmqctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// closeConnection makes RabbitMQ close the connection named name, as an
// operator or a failover would.
func closeConnection(t testing.TB, name string) {
	t.Helper()
	out := rabbitmqctl(t, "-q", "list_connections", "--no-table-headers", "pid", "client_properties")
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		pid, props, ok := strings.Cut(sc.Text(), "\t")
		if ok && strings.Contains(props, `"`+name+`"`) {
			rabbitmqctl(t, "close_connection", pid, "gocelery test: forced close")
			return
		}
	}
	t.Fatalf("connection %q not found in:\n%s", name, out)
}

// waitFor polls cond for up to d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func portOpen(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
