package redis

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/broker"
)

// TestRestoreRouting runs one restore over hand-made unacked entries and
// checks where each message goes, including the cases kombu gets wrong.
func TestRestoreRouting(t *testing.T) {
	pfx := unique("rroute") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	b := dial(t, testDB, Config{KeyPrefix: pfx, VisibilityTimeout: time.Minute, RestoreInterval: -1})
	ctx := context.Background()
	// Bindings as another process declared them: this broker knows
	// neither exchange's type.
	a.SAdd(ctx, pfx+"_kombu.binding.dx", bindingMember("k", "", "dq"))
	a.SAdd(ctx, pfx+"_kombu.binding.tx", bindingMember("a.*.#", topicPattern("a.*.#"), "tq"))

	env := func(tag string, pri int) string {
		return `{"body": "eA==", "content-encoding": "utf-8", "content-type": "text/plain", "headers": {}, "properties": {"delivery_info": {"exchange": "", "routing_key": "x"}, "priority": ` +
			itoa(pri) + `, "body_encoding": "base64", "delivery_tag": "` + tag + `"}}`
	}
	tests := []struct {
		tag, entry string
		age        time.Duration
		list       string // where it must be afterwards; "" = left in unacked
		gone       bool   // removed without a push
	}{
		{tag: "anon", entry: `[` + env("anon", 0) + `, "", "aq"]`, age: time.Hour, list: "aq"},
		{tag: "pri7", entry: `[` + env("pri7", 7) + `, "", "aq"]`, age: time.Hour, list: "aq\x06\x166"},
		{tag: "direct", entry: `[` + env("direct", 0) + `, "dx", "k"]`, age: time.Hour, list: "dq"},
		// kombu would route this as direct and lose it.
		{tag: "topic", entry: `[` + env("topic", 0) + `, "tx", "a.b.c"]`, age: time.Hour, list: "tq"},
		// kombu would drop these two.
		{tag: "nobinding", entry: `[` + env("nobinding", 0) + `, "dx", "nomatch"]`, age: time.Hour},
		{tag: "garbage", entry: `not json`, age: time.Hour},
		{tag: "young", entry: `[` + env("young", 0) + `, "", "aq"]`, age: time.Second},
		{tag: "indexonly", age: time.Hour, gone: true},
	}
	for _, tt := range tests {
		if tt.entry != "" {
			a.HSet(ctx, pfx+"unacked", tt.tag, tt.entry)
		}
		a.ZAdd(ctx, pfx+"unacked_index", redis.Z{Score: score(time.Now().Add(-tt.age)), Member: tt.tag})
	}
	// A live delivery of this broker whose score looks expired (its
	// keep-alive has not run yet) is the keeper's, not the restorer's.
	publish(t, b, text("lq", "live"))
	live := recv(t, consume(t, b, 1, broker.Queue{Name: "lq"}))
	old := score(time.Now().Add(-time.Hour))
	f := live.Private.(*inflight)
	f.mu.Lock()
	f.addScore(old) // so it stays this broker's
	f.mu.Unlock()
	a.ZAdd(ctx, pfx+"unacked_index", redis.Z{Score: old, Member: live.Tag})

	n, err := newRestorer(restorerParams{b: b, every: time.Hour}).run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("restored %d messages, want 4", n)
	}
	for _, tt := range tests {
		inUnacked := a.hexists(pfx+"unacked", tt.tag)
		switch {
		case tt.gone:
			if a.ZScore(ctx, pfx+"unacked_index", tt.tag).Err() != redis.Nil {
				t.Errorf("%s: index entry not cleaned", tt.tag)
			}
		case tt.list == "":
			if !inUnacked || a.ZScore(ctx, pfx+"unacked_index", tt.tag).Err() != nil {
				t.Errorf("%s: not left in place", tt.tag)
			}
		default:
			got := a.list(pfx + tt.list)
			if inUnacked || len(got) == 0 || !strings.Contains(got[len(got)-1], `"delivery_tag": "`+tt.tag+`"`) ||
				!strings.Contains(got[len(got)-1], `"redelivered": true}`) {
				t.Errorf("%s: unacked %v, list %q holds %q", tt.tag, inUnacked, tt.list, got)
			}
		}
	}
	if !a.hexists(pfx+"unacked", live.Tag) || a.llen(pfx+"lq") != 0 {
		t.Error("the restorer took this process's own live delivery")
	}
	if err := live.Ack(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := a.Exists(ctx, pfx+"unacked_mutex").Result(); ok != 0 {
		t.Error("unacked_mutex not released")
	}

	// Held by someone else: no scan.
	a.Set(ctx, pfx+"unacked_mutex", "python", time.Minute)
	a.ZAdd(ctx, pfx+"unacked_index", redis.Z{Score: 1, Member: "young"})
	if n, err := newRestorer(restorerParams{b: b, every: time.Hour}).run(ctx); n != 0 || err != nil {
		t.Errorf("with the mutex held: restored %d, %v", n, err)
	}
}

func itoa(n int) string { return string(rune('0' + n)) }

// TestRequeueOrigin checks that a rejected message goes back only to the
// queue it came from, even when its routing key binds several queues
// (kombu re-routes it and so duplicates it in the others).
func TestRequeueOrigin(t *testing.T) {
	pfx := unique("origin") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	b := dial(t, testDB, Config{KeyPrefix: pfx})
	q1 := broker.Queue{Name: "q1", Exchange: "dx", RoutingKey: "k"}
	q2 := broker.Queue{Name: "q2", Exchange: "dx", RoutingKey: "k"}
	if err := b.Declare(context.Background(), q1, q2); err != nil {
		t.Fatal(err)
	}
	p := text("k", "both")
	p.Exchange = "dx"
	publish(t, b, p)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	ds, err := b.Consume(ctx, []broker.Queue{q1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := recv(t, ds)
	// Stopped first: a running consumer would take the requeued message
	// again at once, under the same tag, and the check below would race.
	stop()
	for range ds {
	}
	if err := d.Reject(true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the requeue", func() bool { return !a.hexists(pfx+"unacked", d.Tag) })
	if n := a.llen(pfx + "q1"); n != 1 {
		t.Errorf("q1 holds %d messages, want the requeued one", n)
	}
	if n := a.llen(pfx + "q2"); n != 1 {
		t.Errorf("q2 holds %d messages, want its own copy only", n)
	}
}

// TestRestoreAfterScannerKilled kills a consumer (a helper process) while
// its restore scan holds unacked_mutex: the lock must expire after
// UnackedMutexExpire, not kombu's default 300s, and another consumer then
// restores the message a second crashed consumer left unacked.
func TestRestoreAfterScannerKilled(t *testing.T) {
	needRedis(t)
	pfx := unique("scankill") + ":"
	a := newAdmin(t, testDB)
	a.cleanupPrefix(pfx)
	const vt, expire = time.Second, 2 * time.Second
	publish(t, dial(t, testDB, Config{KeyPrefix: pfx, RestoreInterval: -1}), text("q", "left"))
	tag := crashedConsumer(t, testDB, pfx, "q", vt)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := helperCommand(ctx, testDB, pfx, "other", vt, "KILL_AT=restore-locked", "MUTEX_EXPIRE="+expire.String())
	if err := cmd.Run(); err == nil {
		t.Fatal("helper exited cleanly; want it killed in its scan")
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper did not die of SIGKILL in its scan: %v", cmd.ProcessState)
	}
	ttl, err := a.PTTL(ctx, pfx+"unacked_mutex").Result()
	if err != nil || ttl <= 0 || ttl > expire {
		t.Fatalf("unacked_mutex left with PTTL %v (%v), want (0, %v]", ttl, err, expire)
	}

	b := dial(t, testDB, Config{KeyPrefix: pfx, VisibilityTimeout: vt, RestoreInterval: 200 * time.Millisecond, UnackedMutexExpire: expire})
	ds := consume(t, b, 1, broker.Queue{Name: "q"})
	select {
	case d := <-ds:
		if d.Tag != tag || !d.Redelivered {
			t.Fatalf("got %s (redelivered %v), want %s redelivered", d.Tag, d.Redelivered, tag)
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	case <-time.After(expire + 5*time.Second):
		t.Fatalf("%s not restored %v after the scanner's death", tag, expire+5*time.Second)
	}
}

func TestApplyTransportOptions(t *testing.T) {
	tests := []struct {
		opts    map[string]any
		set     Config // fields already set
		vt, mut time.Duration
		replica int
		err     bool
	}{
		{opts: map[string]any{}, vt: 0, mut: 0},
		{opts: map[string]any{"visibility_timeout": 3600, "unacked_mutex_expire": 5.5}, vt: time.Hour, mut: 5500 * time.Millisecond},
		{opts: map[string]any{"visibility_timeout": "43200"}, vt: 12 * time.Hour},
		{opts: map[string]any{"visibility_timeout": 10}, set: Config{VisibilityTimeout: time.Minute}, vt: time.Minute},
		{opts: map[string]any{"wait_replicas": 1.0}, replica: 1},
		{opts: map[string]any{"visibility_timeout": "soon"}, err: true},
		{opts: map[string]any{"unacked_mutex_expire": -1}, err: true},
		{opts: map[string]any{"unacked_mutex_expire": 1e300}, err: true},
		{opts: map[string]any{"wait_replicas": "x"}, err: true},
	}
	for _, tt := range tests {
		c := tt.set
		c.TransportOptions = tt.opts
		err := applyTransportOptions(&c)
		if tt.err {
			if !errors.Is(err, ErrURL) {
				t.Errorf("%v: err = %v, want ErrURL", tt.opts, err)
			}
			continue
		}
		if err != nil || c.VisibilityTimeout != tt.vt || c.UnackedMutexExpire != tt.mut || c.WaitReplicas != tt.replica {
			t.Errorf("%v: got vt %v mutex %v replicas %d err %v, want %v %v %d", tt.opts, c.VisibilityTimeout, c.UnackedMutexExpire, c.WaitReplicas, err, tt.vt, tt.mut, tt.replica)
		}
	}
}
