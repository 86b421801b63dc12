package redis

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
)

// The fault-injection tests of the pop window use database 14.
const faultDB = 14

// dropProxy is a TCP proxy to Redis that, for every other command it sees
// that takes a message off a list (the pop script, or a BRPOP), drops times
// in all, lets
// the command reach Redis and run, then throws its reply away and closes
// the connection: the reply lost on the way back, the case where a
// popping client cannot know what it took.
type dropProxy struct {
	t     testing.TB
	ln    net.Listener
	match [][]byte
	drops atomic.Int64 // left to drop
	seen  atomic.Int64 // replies dropped
	// matched counts the commands that matched.
	matched atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newDropProxy(t testing.TB, drops int64, match ...[]byte) *dropProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{t: t, ln: ln, match: match, conns: map[net.Conn]struct{}{}}
	p.drops.Store(drops)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *dropProxy) addr() string { return p.ln.Addr().String() }

func (p *dropProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", redisAddr())
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[s] = struct{}{}, struct{}{}
		p.mu.Unlock()
		var drop atomic.Bool
		p.wg.Add(2)
		go p.up(c, s, &drop)
		go p.down(s, c, &drop)
	}
}

// up copies the client's commands to Redis, arming drop before it
// forwards a matching one (go-redis writes a command in one write).
func (p *dropProxy) up(c, s net.Conn, drop *atomic.Bool) {
	defer p.wg.Done()
	defer s.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			for _, m := range p.match {
				// Every other one, so that the call made again gets through.
				if bytes.Contains(bytes.ToLower(buf[:n]), m) && p.matched.Add(1)%2 == 1 && p.drops.Add(-1) >= 0 {
					drop.Store(true)
					break
				}
			}
			if _, werr := s.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// down copies Redis's replies back, except the one after an armed drop.
func (p *dropProxy) down(s, c net.Conn, drop *atomic.Bool) {
	defer p.wg.Done()
	defer c.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			if drop.Load() {
				p.seen.Add(1)
				s.Close()
				return
			}
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *dropProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestPopReplyLost drops the replies of the commands that take messages
// (the pop script, whether go-redis or the consumer sends it again): every
// message must still be received once, and nothing be left in unacked.
// kombu's BRPOP, and a pop script a client simply retries, lose them (the
// message is gone, or sits recorded in unacked until the visibility
// timeout, an hour by default).
func TestPopReplyLost(t *testing.T) {
	needRedis(t)
	for _, tc := range []struct {
		name       string
		maxRetries int // go-redis's: 0 is its default (3), -1 none
	}{
		{"go-redis retries", 0},
		{"consumer retries", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pfx := unique("popdrop") + ":"
			a := newAdmin(t, faultDB)
			a.cleanupPrefix(pfx)
			const idle, burst, drops = 4, 12, 8
			p := newDropProxy(t, drops, []byte(popRecordScript.Hash()), []byte("brpop"))
			client := redis.NewClient(&redis.Options{Addr: p.addr(), DB: faultDB, MaxRetries: tc.maxRetries,
				MinRetryBackoff: time.Millisecond, MaxRetryBackoff: 5 * time.Millisecond})
			defer client.Close()
			b := New(client, faultDB, Config{Logger: quietLogger(t), KeyPrefix: pfx, RestoreInterval: -1})
			defer b.Close()
			pub := dial(t, faultDB, Config{KeyPrefix: pfx})
			ds := consume(t, b, 0, broker.Queue{Name: "q"})

			seen := map[string]int{}
			take := func(wait time.Duration) bool {
				select {
				case d := <-ds:
					seen[string(d.Body)]++
					if err := d.Ack(); err != nil {
						t.Errorf("Ack: %v", err)
					}
					return true
				case <-time.After(wait):
					return false
				}
			}
			// First messages after idle: the consumer is waiting when
			// each is published.
			for i := range idle {
				time.Sleep(50 * time.Millisecond)
				publish(t, pub, text("q", fmt.Sprint("idle-", i)))
				take(3 * time.Second)
			}
			for i := range burst {
				publish(t, pub, text("q", fmt.Sprint("burst-", i)))
			}
			for len(seen) < idle+burst && take(3*time.Second) {
			}
			lost, twice := 0, 0
			for i := range idle + burst {
				body := fmt.Sprint("idle-", i)
				if i >= idle {
					body = fmt.Sprint("burst-", i-idle)
				}
				switch seen[body] {
				case 0:
					lost++
				case 1:
				default:
					twice++
				}
			}
			t.Logf("sent %d, replies dropped %d, lost %d, received twice %d", idle+burst, p.seen.Load(), lost, twice)
			if lost != 0 || twice != 0 {
				t.Errorf("lost %d, received twice %d of %d", lost, twice, idle+burst)
			}
			if p.seen.Load() < drops/2 {
				t.Errorf("only %d replies dropped: the fault was not injected", p.seen.Load())
			}
			ctx := context.Background()
			waitFor(t, 5*time.Second, "unacked to empty", func() bool {
				return a.HLen(ctx, pfx+"unacked").Val() == 0 && a.ZCard(ctx, pfx+"unacked_index").Val() == 0
			})
			if n := a.llen(pfx + "q"); n != 0 {
				t.Errorf("%d messages left in the queue", n)
			}
		})
	}
}

// TestPopKilled kills a consumer with SIGKILL right after a pop's reply
// arrived, before it did anything with the message: the message must be
// in unacked, so that the visibility timeout brings it back (here kombu's
// restore), both for a message waiting when the consumer starts and for
// the first message after idle (kombu's BRPOP loses that one).
func TestPopKilled(t *testing.T) {
	needRedis(t)
	pfx := unique("popkill") + ":"
	a := newAdmin(t, faultDB)
	a.cleanupPrefix(pfx)
	pub := dial(t, faultDB, Config{KeyPrefix: pfx})
	for i, idle := range []bool{false, true} {
		body := fmt.Sprint("idle=", idle)
		if !idle {
			publish(t, pub, text("q", body))
		}
		killedAtPop(t, faultDB, pfx, "q", func() {
			if idle {
				time.Sleep(300 * time.Millisecond) // waiting in its idle wait
				publish(t, pub, text("q", body))
			}
		})
		if n := a.HLen(context.Background(), pfx+"unacked").Val(); n != int64(i+1) {
			t.Errorf("%s: %d entries in unacked after the kill, want %d", body, n, i+1)
		}
	}
	// kombu's restore_visible brings both back (a Python worker sharing
	// the queue would), and a Go consumer receives them.
	time.Sleep(1100 * time.Millisecond)
	t.Setenv("VT", "1")
	runPython(t, kombuRestore, pyArgs(faultDB, "q", pfx)...)
	b := dial(t, faultDB, Config{KeyPrefix: pfx, RestoreInterval: -1})
	ds := consume(t, b, 0, broker.Queue{Name: "q"})
	got := map[string]bool{}
	deadline := time.After(10 * time.Second)
	for len(got) < 2 {
		select {
		case d := <-ds:
			got[string(d.Body)] = d.Redelivered
			if err := d.Ack(); err != nil {
				t.Error(err)
			}
		case <-deadline:
			t.Fatalf("restored after the kills: %v, want both (lost %d)", got, 2-len(got))
		}
	}
	for body, redelivered := range got {
		if !redelivered {
			t.Errorf("%s not marked redelivered", body)
		}
	}
}

// killedAtPop runs a helper process that consumes queue and kills itself
// with SIGKILL at its first pop's reply; then is called once it waits.
func killedAtPop(t *testing.T, db int, prefix, queue string, then func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := helperCommand(ctx, db, prefix, queue, time.Hour, "KILL_AT=popped")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "consuming\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper: %q, %v", line, err)
	}
	then()
	_, _ = io.Copy(io.Discard, out)
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper did not die of SIGKILL at its pop: %v", err)
	}
}

// killAtHook is the helper's testHook for helperEnv_KILL_AT.
func killAtHook(point string) func(string) {
	return func(p string) {
		if p == point {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
}

// TestMalformedMoved pushes messages that are not envelopes this worker
// can read: each must land in "<queue>.malformed", wrapped with its
// original bytes as the body and the reason in a header, nothing is left
// in unacked, and a good message after them is delivered.
func TestMalformedMoved(t *testing.T) {
	needRedis(t)
	pfx := unique("malformed") + ":"
	a := newAdmin(t, faultDB)
	a.cleanupPrefix(pfx)
	b := dial(t, faultDB, Config{KeyPrefix: pfx})
	ctx := context.Background()
	bad := []string{
		"not json \xff\x00", // the script's check
		`[1, 2, 3]`,         // the script's check
		`{"body": 42, "properties": {"delivery_tag": "t-1"}}`, // Go's check: recorded first
	}
	for _, m := range bad {
		if err := a.LPush(ctx, pfx+"q", m).Err(); err != nil {
			t.Fatal(err)
		}
	}
	publish(t, b, text("q", "good"))
	ds := consume(t, b, 0, broker.Queue{Name: "q"})
	d := recv(t, ds)
	if string(d.Body) != "good" {
		t.Fatalf("delivered %q", d.Body)
	}
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
	got := a.list(pfx + "q.malformed")
	if len(got) != len(bad) {
		t.Fatalf("%d messages in q.malformed, want %d", len(got), len(bad))
	}
	for i, m := range got {
		env, err := protocol.ParseEnvelope([]byte(m), 0)
		if err != nil {
			t.Fatalf("dead-lettered message %d is not an envelope: %v", i, err)
		}
		if string(env.Body) != bad[i] {
			t.Errorf("dead-lettered body %q, want %q", env.Body, bad[i])
		}
		if env.Headers["x-gocelery-reason"] == "" || env.Headers["x-gocelery-queue"] != "q" || env.RoutingKey != "q.malformed" {
			t.Errorf("dead-lettered headers %v, routing key %q", env.Headers, env.RoutingKey)
		}
	}
	waitFor(t, 5*time.Second, "unacked to empty", func() bool { return a.HLen(ctx, pfx+"unacked").Val() == 0 })
}

// TestWaitWithoutBLMOVE consumes from a server without BLMOVE (Redis
// before 6.2, here renamed away): the idle wait falls back to BRPOPLPUSH
// list list, and messages published to an idle consumer, one at a time
// and several at once, all arrive once.
func TestWaitWithoutBLMOVE(t *testing.T) {
	addr := ownRedis(t, "--rename-command", "BLMOVE", "")
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	waits := &commandCounter{}
	b := New(client, 0, Config{Logger: quietLogger(t), RestoreInterval: -1})
	b.waiterHooks = []redis.Hook{waits}
	defer b.Close()
	ds := consume(t, b, 0, broker.Queue{Name: "q"})
	seen := map[string]int{}
	for i := range 3 {
		time.Sleep(100 * time.Millisecond) // idle, waiting
		publish(t, b, text("q", fmt.Sprint("one-", i)))
		d := recv(t, ds)
		seen[string(d.Body)]++
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	for i := range 5 {
		publish(t, b, text("q", fmt.Sprint("many-", i)))
	}
	for range 5 {
		d := recv(t, ds)
		seen[string(d.Body)]++
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != 8 {
		t.Errorf("received %v, want 8 distinct messages once each", seen)
	}
	for body, n := range seen {
		if n != 1 {
			t.Errorf("%s received %d times", body, n)
		}
	}
	if waits.get("brpoplpush") == 0 {
		t.Error("no BRPOPLPUSH: the fallback was not used")
	}
	if n := client.LLen(context.Background(), "q").Val(); n != 0 {
		t.Errorf("%d messages left in the queue", n)
	}
}

// TestAckReplyLost drops the reply of an ack (and of a reject with
// requeue): go-redis sends the script again, which finds the entry gone.
// That is the earlier attempt having landed, not a restore by someone
// else: Ack must not report broker.ErrStaleDelivery (the worker would then
// drop an early-acked task, and it would be lost), and the requeued
// message is on its queue once.
func TestAckReplyLost(t *testing.T) {
	needRedis(t)
	pfx := unique("ackdrop") + ":"
	a := newAdmin(t, faultDB)
	a.cleanupPrefix(pfx)
	p := newDropProxy(t, 2, []byte(settleScript.Hash()), []byte(requeueScript.Hash()))
	client := redis.NewClient(&redis.Options{Addr: p.addr(), DB: faultDB,
		MinRetryBackoff: time.Millisecond, MaxRetryBackoff: 5 * time.Millisecond})
	defer client.Close()
	b := New(client, faultDB, Config{Logger: quietLogger(t), KeyPrefix: pfx, RestoreInterval: -1})
	defer b.Close()
	ds := consume(t, b, 1, broker.Queue{Name: "q"})
	publish(t, b, text("q", "acked"))
	d := recv(t, ds)
	if err := d.Ack(); err != nil {
		t.Errorf("Ack whose reply was lost: %v, want nil", err)
	}
	if d.Stale() {
		t.Error("acked delivery reported stale")
	}
	publish(t, b, text("q", "requeued"))
	d = recv(t, ds)
	p.matched.Store(0) // drop the next one
	if err := d.Reject(true); err != nil {
		t.Errorf("Reject(requeue) whose reply was lost: %v, want nil", err)
	}
	d = recv(t, ds)
	if string(d.Body) != "requeued" || !d.Redelivered {
		t.Errorf("after the requeue got %q (redelivered %v)", d.Body, d.Redelivered)
	}
	if err := d.Ack(); err != nil {
		t.Error(err)
	}
	noRecv(t, ds, 300*time.Millisecond)
	if p.seen.Load() != 2 {
		t.Errorf("%d replies dropped, want 2", p.seen.Load())
	}
	if n := a.HLen(context.Background(), pfx+"unacked").Val(); n != 0 {
		t.Errorf("%d entries left in unacked", n)
	}
}
