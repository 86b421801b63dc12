package redis

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/broker"
)

// TestMiniredis runs the transport against miniredis, the in-process
// server the demo embeds: it lacks CLIENT ID (so no BRPOP interrupt) but
// has the rest, Lua included.
func TestMiniredis(t *testing.T) {
	srv := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer client.Close()
	b := New(client, 0, Config{Logger: quietLogger(t), VisibilityTimeout: time.Second, RestoreInterval: 100 * time.Millisecond})
	defer b.Close()
	ctx := context.Background()

	p := text("q", "one")
	p.Properties.Priority = 7
	publish(t, b, p)
	publish(t, b, text("q", "two"))
	ds := consume(t, b, 1, broker.Queue{Name: "q"})
	d := recv(t, ds)
	if string(d.Body) != "two" { // priority 0 first
		t.Errorf("first delivery %q", d.Body)
	}
	if err := d.Reject(true); err != nil {
		t.Fatal(err)
	}
	d = recv(t, ds) // back of its list, which is still served first
	if string(d.Body) != "two" || !d.Redelivered {
		t.Errorf("requeued delivery %q, redelivered %v", d.Body, d.Redelivered)
	}
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
	d = recv(t, ds)
	if string(d.Body) != "one" {
		t.Errorf("third delivery %q", d.Body)
	}
	// Abandon it as a crashed consumer would: its score in the past, and
	// no keep-alive (the entry is re-added under a tag this broker does
	// not hold).
	entry := client.HGet(ctx, "unacked", d.Tag).Val()
	client.HSet(ctx, "unacked", "crashed", entry)
	client.ZAdd(ctx, "unacked_index", redis.Z{Score: score(time.Now().Add(-time.Hour)), Member: "crashed"})
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
	d = recv(t, ds)
	if string(d.Body) != "one" || !d.Redelivered {
		t.Errorf("restored delivery %q, redelivered %v", d.Body, d.Redelivered)
	}
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
	if n := client.HLen(ctx, "unacked").Val(); n != 0 {
		t.Errorf("%d unacked entries left", n)
	}
}
