package redis

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/broker"
)

// ownRedis starts a redis-server of the test's own on a free port, for
// faults the shared server must not see; it returns its address.
func ownRedis(t *testing.T, args ...string) string {
	t.Helper()
	needRedis(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	argv := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir()}, args...)
	cmd := exec.Command("redis-server", argv...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("redis-server: %v (scripts/services.sh installs it)", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := "127.0.0.1:" + strconv.Itoa(port)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	waitFor(t, 5*time.Second, "redis-server to start", func() bool { return c.Ping(context.Background()).Err() == nil })
	return addr
}

// TestSettleErrorRetried makes Redis refuse an ack with an error reply
// (NOPERM: scripts revoked), not an outage: Ack keeps it and retries it
// until it lands, so Close does not put the finished message back on its
// queue to run again, and nothing is left in unacked.
func TestSettleErrorRetried(t *testing.T) {
	addr := ownRedis(t)
	ctx := context.Background()
	a := redis.NewClient(&redis.Options{Addr: addr})
	defer a.Close()
	b, err := Dial(ctx, "redis://"+addr+"/0", Config{Logger: quietLogger(t), RestoreInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ds := consume(t, b, 1, broker.Queue{Name: "q"})
	publish(t, b, text("q", "finished"))
	d := recv(t, ds)
	if err := a.Do(ctx, "ACL", "SETUSER", "default", "-evalsha", "-eval").Err(); err != nil {
		t.Fatal(err)
	}
	if err := d.Ack(); err != nil {
		t.Errorf("Ack refused by Redis: %v, want nil (kept and retried)", err)
	}
	time.Sleep(300 * time.Millisecond) // a retry or two fail
	if err := a.Do(ctx, "ACL", "SETUSER", "default", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if n := a.LLen(ctx, "q").Val(); n != 0 {
		t.Errorf("the acked message is back on its queue %d times: it would run again", n)
	}
	if n := a.HLen(ctx, "unacked").Val(); n != 0 {
		t.Errorf("%d entries left in unacked: the visibility timeout would run them again", n)
	}
}

// TestStaleRestored holds a delivery across a short cut from Redis (not
// stale), then cuts the consumer off past the visibility timeout; another
// consumer restores and receives the message. Back online, the first's
// copy is Stale and its Ack is broker.ErrStaleDelivery, leaving the
// other's copy alone.
func TestStaleRestored(t *testing.T) {
	needRedis(t)
	pfx := unique("stale") + ":"
	a := newAdmin(t, faultDB)
	a.cleanupPrefix(pfx)
	p := newProxy(t)
	const vt = time.Second
	ctx := context.Background()
	cut, err := Dial(ctx, "redis://"+p.addr()+"/14?dial_timeout=200ms", Config{Logger: quietLogger(t), KeyPrefix: pfx,
		VisibilityTimeout: vt, RestoreInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer cut.Close()
	ds := consume(t, cut, 0, broker.Queue{Name: "q"})
	publish(t, cut, text("q", "held"))
	d := recv(t, ds)

	p.cut()
	time.Sleep(vt / 5)
	p.heal()
	if d.Stale() {
		t.Fatal("stale after a short cut")
	}
	time.Sleep(vt / 2) // the keep-alive runs again

	p.cut()
	other := dial(t, faultDB, Config{KeyPrefix: pfx, VisibilityTimeout: vt, RestoreInterval: 200 * time.Millisecond})
	od := recv(t, consume(t, other, 0, broker.Queue{Name: "q"}))
	if string(od.Body) != "held" || !od.Redelivered {
		t.Fatalf("the other consumer got %q (redelivered %v)", od.Body, od.Redelivered)
	}
	p.heal()
	waitFor(t, 5*time.Second, "the first consumer's copy to be stale", d.Stale)
	if err := d.Ack(); !errors.Is(err, broker.ErrStaleDelivery) {
		t.Errorf("Ack of the stale copy: %v, want ErrStaleDelivery", err)
	}
	if err := od.Ack(); err != nil {
		t.Errorf("Ack of the restored copy: %v", err)
	}
	waitFor(t, 5*time.Second, "unacked to empty", func() bool { return a.HLen(ctx, pfx+"unacked").Val() == 0 })
}

// TestStaleUnconfirmed cuts a consumer off Redis for longer than the
// visibility timeout while it holds a delivery: asked before running it,
// Stale cannot confirm it and gives it up (another consumer may have
// restored it); back online, the restore brings the message back and it
// is received once, so nothing is lost.
func TestStaleUnconfirmed(t *testing.T) {
	needRedis(t)
	pfx := unique("unconfirmed") + ":"
	a := newAdmin(t, faultDB)
	a.cleanupPrefix(pfx)
	p := newProxy(t)
	const vt = time.Second
	ctx := context.Background()
	cut, err := Dial(ctx, "redis://"+p.addr()+"/14?dial_timeout=200ms", Config{Logger: quietLogger(t), KeyPrefix: pfx,
		VisibilityTimeout: vt, RestoreInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer cut.Close()
	ds := consume(t, cut, 1, broker.Queue{Name: "q"})
	publish(t, cut, text("q", "held"))
	d := recv(t, ds)
	p.cut()
	time.Sleep(vt + vt/5)
	if !d.Stale() {
		t.Fatal("not stale after the visibility timeout without a confirmation")
	}
	if err := d.Ack(); !errors.Is(err, broker.ErrStaleDelivery) {
		t.Errorf("Ack of the given-up delivery: %v, want ErrStaleDelivery", err)
	}
	p.heal()
	other := dial(t, faultDB, Config{KeyPrefix: pfx, VisibilityTimeout: vt, RestoreInterval: 200 * time.Millisecond})
	ods := consume(t, other, 0, broker.Queue{Name: "q"})
	// Either consumer may receive the restored message (the first has its
	// credit back): once in all.
	var od *broker.Delivery
	select {
	case od = <-ds:
	case od = <-ods:
	case <-time.After(10 * time.Second):
		t.Fatal("the given-up message was not restored: lost")
	}
	if string(od.Body) != "held" || !od.Redelivered {
		t.Fatalf("restored %q (redelivered %v)", od.Body, od.Redelivered)
	}
	if err := od.Ack(); err != nil {
		t.Fatal(err)
	}
	noRecv(t, ds, 300*time.Millisecond)
	noRecv(t, ods, 10*time.Millisecond)
	waitFor(t, 5*time.Second, "unacked to empty", func() bool { return a.HLen(ctx, pfx+"unacked").Val() == 0 })
}
