package beat

import (
	"context"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/internal/redisurl"
)

// TestSentinelFailoverOneLeader: three schedulers on a store behind
// Sentinel (scripts/ha.sh's rig, started here and stopped after),
// SENTINEL FAILOVER mid-run: one leader at a time (a send never carries an
// older fence than one already seen), every due tick sent once, and the
// sends go on from the new master. About 26 s, so it runs with
// GOCELERY_HA=1 (make ha), as the other multi-node scenarios; the Redis
// broker's own Sentinel failover test runs in make test.
func TestSentinelFailoverOneLeader(t *testing.T) {
	if testing.Short() || os.Getenv("GOCELERY_HA") == "" {
		t.Skip("needs the Sentinel rig: runs with GOCELERY_HA=1 (make ha)")
	}
	rig := func(cmd string) {
		out, err := exec.Command("../scripts/services.sh", cmd).CombinedOutput()
		if err != nil {
			t.Fatalf("scripts/services.sh %s: %v\n%s", cmd, err, out)
		}
	}
	rig("sentinel-up")
	t.Cleanup(func() { rig("sentinel-down") })
	c, err := redisurl.NewClient("sentinel://127.0.0.1:26479/5;sentinel://127.0.0.1:26480/5;sentinel://127.0.0.1:26481/5",
		map[string]any{"master_name": "gocelery-ha"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	prefix := "beat-sentinel"
	st := NewStore(c.Client, prefix)
	if err := st.Put(ctx, &Entry{Name: "tick", Task: "t.tick", Schedule: &Interval{Every: 200 * time.Millisecond}, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var events []SendEvent
	older := 0
	sender := &recordingSender{}
	for range 3 {
		s := New(c.Client, sender, Config{KeyPrefix: prefix, LockTTL: 2 * time.Second,
			OnSend: func(ev SendEvent) {
				mu.Lock()
				if n := len(events); n > 0 && ev.Fence < events[n-1].Fence {
					older++
				}
				events = append(events, ev)
				mu.Unlock()
			}})
		cancel := runScheduler(t, s)
		defer cancel()
	}
	sends := func() int { return len(sender.all()) }
	waitFor(t, 20*time.Second, "10 sends", func() bool { return sends() >= 10 })
	s := redis.NewSentinelClient(&redis.Options{Addr: "127.0.0.1:26479"})
	defer s.Close()
	old, err := s.GetMasterAddrByName(ctx, "gocelery-ha").Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Failover(ctx, "gocelery-ha").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a new master", func() bool {
		a, err := s.GetMasterAddrByName(ctx, "gocelery-ha").Result()
		return err == nil && a[1] != old[1]
	})
	n := sends()
	waitFor(t, 40*time.Second, "10 sends from the new master", func() bool { return sends() >= n+10 })

	mu.Lock()
	defer mu.Unlock()
	seen := map[int64]bool{}
	ids := map[string]bool{}
	twice := 0
	for _, ev := range events {
		if seen[ev.Due.UnixMilli()] {
			twice++
		}
		seen[ev.Due.UnixMilli()] = true
		ids[ev.TaskID] = true
	}
	t.Logf("SENTINEL FAILOVER under beat: %d sends, %d fences, a due tick sent twice %d times, sends by an older leader %d",
		len(events), len(fences(events)), twice, older)
	if twice != 0 || older != 0 || len(ids) != len(events) || sends() != len(events) {
		t.Errorf("%d events, %d task ids, %d sends, %d twice, %d by an older leader", len(events), len(ids), sends(), twice, older)
	}
	c.Del(ctx, prefix+":lock")
}

func fences(evs []SendEvent) map[int64]bool {
	m := map[int64]bool{}
	for _, e := range evs {
		m[e.Fence] = true
	}
	return m
}
