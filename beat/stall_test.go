package beat

import (
	"context"
	"log/slog"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/broker/amqp"
	"github.com/gocelery/gocelery/producer"
)

const stallAMQP = "amqp://guest:guest@127.0.0.1:5672//"

// setWatermark runs rabbitmqctl set_vm_memory_high_watermark.
func setWatermark(t *testing.T, v string) error {
	t.Helper()
	start := time.Now()
	out, err := exec.Command("rabbitmqctl", "set_vm_memory_high_watermark", v).CombinedOutput()
	t.Logf("rabbitmqctl set_vm_memory_high_watermark %s: %s", v, time.Since(start))
	if err != nil {
		t.Logf("rabbitmqctl set_vm_memory_high_watermark %s: %v\n%s", v, err, out)
	}
	return err
}

// A run published while RabbitMQ blocks publishers (a memory alarm) waits
// past its deadline for a confirm that comes only when the alarm ends;
// beat retries it with the same task id. The run must reach the queue
// once: the retries wait for the first publish's confirm instead of
// writing the message again.
//
// The alarm blocks every publisher on the broker: run this test alone
// (CI runs packages one at a time; by hand, under
// flock -x /tmp/rabbitmq.lock). It restores the watermark however it
// ends, and a detached watchdog restores it if the test process dies.
func TestRunSentOnceThroughPublisherStall(t *testing.T) {
	if testing.Short() {
		t.Skip("blocks RabbitMQ's publishers for 9 s; skipped with -short")
	}
	const stall = 9 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	rdb, prefix := testRedis(t)
	queue := "beatstall_" + uuid.NewString()[:8]

	b, err := amqp.Dial(ctx, stallAMQP, amqp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Declare(ctx, broker.Queue{Name: queue}); err != nil {
		t.Fatal(err)
	}
	raw, err := amqp091.Dial(stallAMQP)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	rch, err := raw.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = rch.QueueDelete(queue, false, false, false) }()

	st := NewStore(rdb, prefix)
	if err := st.Put(ctx, &Entry{Name: "stall", Task: "beatstall.tick", Schedule: &Interval{Every: time.Hour},
		Options: map[string]any{"queue": queue}, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	p := producer.New(b, nil, producer.Config{DefaultQueue: queue})
	runScheduler(t, New(rdb, p, Config{KeyPrefix: prefix, LockTTL: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}))
	if err := st.RunNow(ctx, "stall"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the entry's first run sent", func() bool {
		e, err := st.Get(ctx, "stall")
		return err == nil && e.claim.State == "sent"
	})

	// Block publishers. The watchdog (its own process group, outliving
	// this process) restores the watermark if the test cannot.
	watchdog := exec.Command("sh", "-c", "sleep 45; rabbitmqctl set_vm_memory_high_watermark 0.4")
	watchdog.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	watchdog.Stdout, watchdog.Stderr = nil, nil
	if err := watchdog.Start(); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if restored {
			return
		}
		restored = setWatermark(t, "0.4") == nil
		if restored {
			_ = syscall.Kill(-watchdog.Process.Pid, syscall.SIGKILL)
			_ = watchdog.Wait()
		}
	}
	defer restore()
	if err := setWatermark(t, "0.0000001"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	waitBlocked(t, raw)
	t.Logf("publishers blocked after %s", time.Since(t0))
	if err := st.RunNow(ctx, "stall"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the stalled run claimed", func() bool {
		e, err := st.Get(ctx, "stall")
		return err == nil && e.claim.State == "claimed"
	})
	e, _ := st.Get(ctx, "stall")
	stalled := e.claim.TaskID
	time.Sleep(stall)
	if e, _ := st.Get(ctx, "stall"); e.claim.State == "sent" {
		t.Fatal("the run was confirmed while publishers were blocked: no stall")
	}
	restore()
	if !restored {
		t.Fatal("could not restore the watermark")
	}
	waitFor(t, 10*time.Second, "the stalled run marked sent", func() bool {
		e, err := st.Get(ctx, "stall")
		return err == nil && e.claim.TaskID == stalled && e.claim.State == "sent"
	})
	time.Sleep(time.Second) // a late copy would land by now

	seen := map[string]int{}
	for {
		d, ok, err := rch.Get(queue, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		seen[d.CorrelationId]++
	}
	t.Logf("after a %s publisher stall: the stalled run %s reached the queue %d times; all runs: %v", stall, stalled, seen[stalled], seen)
	if seen[stalled] != 1 {
		t.Errorf("the stalled run reached the queue %d times, want once", seen[stalled])
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("run %s reached the queue %d times", id, n)
		}
	}
}

// waitBlocked waits until RabbitMQ blocks publishers: a connection that
// publishes then gets connection.blocked.
func waitBlocked(t *testing.T, c *amqp091.Connection) {
	t.Helper()
	blocked := c.NotifyBlocked(make(chan amqp091.Blocking, 4))
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", q.Name, false, false, amqp091.Publishing{Body: []byte("probe")}); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-blocked:
		if !b.Active {
			t.Fatalf("connection.unblocked before connection.blocked")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RabbitMQ did not block publishers within 10 s")
	}
}
