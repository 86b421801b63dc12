package amqp

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
)

// A publish whose confirm does not come by its deadline (the broker has
// stopped reading, as RabbitMQ does to publishers on a memory alarm) is
// ErrUnconfirmed, not a plain failure; publishing the same message again
// waits for that confirm instead of writing a second copy, so the queue
// gets it once. A broker that stops reading is simulated by a loopback
// proxy that holds the client's bytes (the shared RabbitMQ is not
// disturbed); beat's TestRunSentOnceThroughPublisherStall does it with a
// real memory alarm.
func TestRetryOfUnconfirmedPublishSendsOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, proxy, a, msg := proxied(t, ctx, "unconfirmed")
	q := msg("").RoutingKey
	var err error
	// The publishing channel opens with the first publish.
	if err := b.Publish(ctx, msg("warm-up")); err != nil {
		t.Fatal(err)
	}
	proxy.hold(true)
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	err = b.Publish(short, msg("run-1"))
	cancelShort()
	if !errors.Is(err, ErrUnconfirmed) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish to a broker that does not read: %v, want ErrUnconfirmed wrapping the deadline", err)
	}
	// A retry while the broker still does not read is in doubt too.
	short, cancelShort = context.WithTimeout(ctx, 300*time.Millisecond)
	err = b.Publish(short, msg("run-1"))
	cancelShort()
	if !errors.Is(err, ErrUnconfirmed) {
		t.Fatalf("retry while stalled: %v, want ErrUnconfirmed", err)
	}
	// run-3 is in doubt too, and nobody waits when its confirm comes.
	short, cancelShort = context.WithTimeout(ctx, 300*time.Millisecond)
	err = b.Publish(short, msg("run-3"))
	cancelShort()
	if !errors.Is(err, ErrUnconfirmed) {
		t.Fatalf("run-3 while stalled: %v, want ErrUnconfirmed", err)
	}
	time.AfterFunc(time.Second, func() { proxy.hold(false) })
	if err := b.Publish(ctx, msg("run-1")); err != nil {
		t.Fatalf("retry after the stall: %v", err)
	}
	// Another message is published as usual.
	if err := b.Publish(ctx, msg("run-2")); err != nil {
		t.Fatal(err)
	}
	// Confirms come in order: run-3's came before run-2's. A retry after it
	// (beat retries a second later) succeeds without a second copy.
	if err := b.Publish(ctx, msg("run-3")); err != nil {
		t.Fatalf("retry of run-3 after its confirm: %v", err)
	}
	seen := map[string]int{}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		d, ok, err := a.channel().Get(q, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			if seen["run-2"] > 0 && seen["run-3"] > 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		seen[d.CorrelationId]++
	}
	if seen["run-1"] != 1 || seen["run-2"] != 1 || seen["run-3"] != 1 || seen["warm-up"] != 1 {
		t.Errorf("copies in the queue: %v, want each message once", seen)
	}
}

// proxied dials the shared RabbitMQ through a stall proxy and declares a
// fresh queue named from prefix; msg builds a persistent Celery-shaped
// message to it with the given correlation id. All closed at the end.
func proxied(t *testing.T, ctx context.Context, prefix string) (*Broker, *stallProxy, *admin, func(id string) broker.Publishing) {
	t.Helper()
	needRabbit(t)
	proxy := startStallProxy(t, "127.0.0.1:5672")
	b, err := Dial(ctx, "amqp://guest:guest@"+proxy.addr+"//", Config{Logger: quietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	a := newAdmin(t)
	q := unique(prefix)
	a.cleanup([]string{q}, nil)
	if err := b.Declare(ctx, broker.Queue{Name: q}); err != nil {
		t.Fatal(err)
	}
	msg := func(id string) broker.Publishing {
		return broker.Publishing{RoutingKey: q, Mandatory: true, Raw: protocol.Raw{ContentType: "application/json",
			Properties: protocol.Properties{CorrelationID: id, DeliveryMode: 2}, Body: []byte(`[[], {}, {}]`)}}
	}
	return b, proxy, a, msg
}

// stallProxy forwards TCP to upstream; while held, it stops passing the
// client's bytes on (they wait in the proxy, as in a socket the broker
// does not read) and replies flow as usual.
type stallProxy struct {
	addr string
	mu   sync.Mutex
	cond *sync.Cond
	held bool

	cmu   sync.Mutex
	conns []net.Conn
}

// drop closes every connection through the proxy (a network cut); the
// bytes it held are lost. New connections are accepted as before.
func (p *stallProxy) drop() {
	p.cmu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.cmu.Unlock()
}

func (p *stallProxy) hold(on bool) {
	p.mu.Lock()
	p.held = on
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *stallProxy) wait() {
	p.mu.Lock()
	for p.held {
		p.cond.Wait()
	}
	p.mu.Unlock()
}

func startStallProxy(t *testing.T, upstream string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{addr: ln.Addr().String()}
	p.cond = sync.NewCond(&p.mu)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			p.cmu.Lock()
			p.conns = append(p.conns, c, s)
			p.cmu.Unlock()
			pipe := func(dst, src net.Conn, gate bool) {
				defer wg.Done()
				defer dst.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 {
						if gate {
							p.wait()
						}
						if _, werr := dst.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}
			wg.Add(2)
			go pipe(s, c, true)
			go pipe(c, s, false)
		}
	}()
	t.Cleanup(func() {
		p.hold(false)
		ln.Close()
		p.drop()
		wg.Wait()
	})
	return p
}
