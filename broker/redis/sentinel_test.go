package redis

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/broker"
)

// The Sentinel rig (scripts/ha.sh): master "gocelery-ha" on 26390 with a
// replica on 26391, sentinels on 26479-26481. Each test that needs it
// starts it through scripts/services.sh and stops it at the end.
const (
	sentinelMaster = "gocelery-ha"
	sentinelURL    = "sentinel://127.0.0.1:26479/0;sentinel://127.0.0.1:26480/0;sentinel://127.0.0.1:26481/0"
)

var sentinelAddrs = []string{"127.0.0.1:26479", "127.0.0.1:26480", "127.0.0.1:26481"}

func sentinelRig(t *testing.T) *redis.SentinelClient {
	t.Helper()
	needRedis(t)
	rig := func(cmd string) {
		out, err := exec.Command("../../scripts/services.sh", cmd).CombinedOutput()
		if err != nil {
			t.Fatalf("scripts/services.sh %s: %v\n%s", cmd, err, out)
		}
	}
	rig("sentinel-up")
	t.Cleanup(func() { rig("sentinel-down") })
	s := redis.NewSentinelClient(&redis.Options{Addr: sentinelAddrs[0]})
	t.Cleanup(func() { s.Close() })
	return s
}

func masterAddr(t *testing.T, s *redis.SentinelClient) string {
	t.Helper()
	a, err := s.GetMasterAddrByName(context.Background(), sentinelMaster).Result()
	if err != nil {
		t.Fatal(err)
	}
	return a[0] + ":" + a[1]
}

// failover runs SENTINEL FAILOVER and waits until the sentinel names the
// new master.
func failover(t *testing.T, s *redis.SentinelClient) (string, string) {
	t.Helper()
	old := masterAddr(t, s)
	var err error
	for try := 0; try < 50; try++ { // "INPROG" or "NOGOODSLAVE" right after a previous switch
		if err = s.Failover(context.Background(), sentinelMaster).Err(); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	var now string
	waitFor(t, 20*time.Second, "the sentinels to name a new master", func() bool {
		now = masterAddr(t, s)
		return now != old
	})
	return old, now
}

func TestSentinelURL(t *testing.T) {
	_, err := Dial(context.Background(), sentinelURL, Config{})
	if err == nil || !strings.Contains(err.Error(), "master_name") {
		t.Fatalf("Dial without master_name: %v, want an error naming master_name", err)
	}
}

// TestSentinelFailover publishes and consumes under load through the
// sentinels while SENTINEL FAILOVER moves the master: every confirmed
// message arrives, the consumer follows the new master (the pop-and-record
// script runs there), a delivery held across the switch is kept alive on
// the new master (no restore although it outlives the visibility timeout),
// and the visibility-timeout restore works there.
func TestSentinelFailover(t *testing.T) {
	s := sentinelRig(t)
	pfx := unique("sentinel") + ":"
	// Longer than the rig's write pause after a switch (the new master
	// takes writes again once the old one resynced as its replica).
	const vt = 10 * time.Second
	ctx := context.Background()
	b, err := Dial(ctx, sentinelURL, Config{Logger: quietLogger(t), KeyPrefix: pfx, VisibilityTimeout: vt,
		RestoreInterval: 300 * time.Millisecond, TransportOptions: map[string]any{"master_name": sentinelMaster, "wait_replicas": 1.0}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	held := consume(t, b, 1, broker.Queue{Name: "held"})
	publish(t, b, text("held", "held"))
	h := recv(t, held)

	const n = 3000
	ds := consume(t, b, 100, broker.Queue{Name: "q"})
	var mu sync.Mutex
	got := make(map[string]int)
	go func() {
		for d := range ds {
			mu.Lock()
			got[string(d.Body)]++
			mu.Unlock()
			_ = d.Ack()
		}
	}()
	confirmed := make(chan string, n)
	var failed int
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := range n {
			pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			body := "m" + strconv.Itoa(i)
			if err := b.Publish(pctx, text("q", body)); err != nil {
				if failed++; failed == 1 {
					t.Logf("first failed publish: %v", err)
				}
			} else {
				confirmed <- body
			}
			cancel()
			if i%3 == 0 {
				time.Sleep(time.Millisecond) // a steady stream, not one burst
			}
		}
	}()
	waitFor(t, 30*time.Second, "a third of the messages", func() bool { return len(confirmed) > n/3 })
	start := time.Now()
	old, now := failover(t, s)
	<-pubDone
	close(confirmed)
	var want []string
	for c := range confirmed {
		want = append(want, c)
	}
	lost := func() (l, twice int) {
		mu.Lock()
		defer mu.Unlock()
		for _, w := range want {
			switch got[w] {
			case 0:
				l++
			case 1:
			default:
				twice++
			}
		}
		return l, twice
	}
	deadline := time.Now().Add(30 * time.Second)
	for l, _ := lost(); l > 0 && time.Now().Before(deadline); l, _ = lost() {
		time.Sleep(50 * time.Millisecond)
	}
	l, twice := lost()
	t.Logf("SENTINEL FAILOVER %s -> %s under load: sent %d, confirmed %d, publish errors %d, lost %d, ran twice %d (switch and drain %v)",
		old, now, n, len(want), failed, l, twice, time.Since(start).Round(time.Millisecond))
	if l != 0 || failed != 0 {
		t.Errorf("lost %d confirmed messages, %d publishes failed", l, failed)
	}

	// The delivery held across the switch is kept alive on the new
	// master: its score there moves past the switch, and nobody restores
	// it.
	nm := redis.NewClient(&redis.Options{Addr: now})
	defer nm.Close()
	switched := float64(start.Unix())
	waitFor(t, 3*vt, "the held delivery's keep-alive on the new master", func() bool {
		sc, err := nm.ZScore(ctx, pfx+"unacked_index", h.Tag).Result()
		return err == nil && sc > switched+1
	})
	noRecv(t, held, 100*time.Millisecond)
	if err := h.Ack(); err != nil {
		t.Fatal(err)
	}
	// The drain's last acks may still be on their way: a settle refused
	// during the switch (NOREPLICAS) is retried until it lands.
	waitFor(t, 5*time.Second, "no delivery left unacked on the new master", func() bool {
		n, _ := nm.HLen(ctx, pfx+"unacked").Result()
		return n == 0
	})

	// The restore runs on the new master: a delivery of a consumer that
	// died (recorded, never refreshed) comes back after the timeout.
	lost2 := consumedAndAbandoned(t, now, pfx, "held")
	d := recv(t, held)
	if d.Tag != lost2 {
		t.Errorf("restored %s, want %s", d.Tag, lost2)
	}
	_ = d.Ack()
	nm.Del(ctx, keysWithPrefix(t, nm, pfx)...)
}

// consumedAndAbandoned records a delivery as kombu would for a consumer
// that then died: in unacked with a score far in the past.
func consumedAndAbandoned(t *testing.T, addr, pfx, queue string) string {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	tag := unique("dead")
	msg := fmt.Sprintf(`{"body": "ZGVhZA==", "content-encoding": "utf-8", "content-type": "text/plain", "headers": {}, "properties": {"delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": %q}, "priority": 0, "body_encoding": "base64", "delivery_tag": %q}}`, queue, tag)
	payload := fmt.Sprintf(`[%s, "", %q]`, msg, queue)
	ctx := context.Background()
	if err := c.HSet(ctx, pfx+"unacked", tag, payload).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ZAdd(ctx, pfx+"unacked_index", redis.Z{Score: float64(time.Now().Add(-time.Hour).Unix()), Member: tag}).Err(); err != nil {
		t.Fatal(err)
	}
	return tag
}

func keysWithPrefix(t *testing.T, c *redis.Client, pfx string) []string {
	keys, err := c.Keys(context.Background(), pfx+"*").Result()
	if err != nil || len(keys) == 0 {
		return []string{pfx + "none"}
	}
	return keys
}
