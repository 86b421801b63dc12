package amqp

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
)

// The three-node cluster (scripts/ha.sh): rabbit-1..3@localhost on AMQP
// ports 5681-5683. It costs a core while it runs, so its tests run with
// GOCELERY_HA=1 only (make ha), which starts it and stops it after.
const clusterURL = "amqp://guest:guest@127.0.0.1:5681//;amqp://guest:guest@127.0.0.1:5682//;amqp://guest:guest@127.0.0.1:5683//"

func clusterRig(t *testing.T) {
	t.Helper()
	if os.Getenv("GOCELERY_HA") == "" {
		t.Skip("the RabbitMQ cluster tests run with GOCELERY_HA=1 (make ha)")
	}
	rig := func(args ...string) {
		log, err := os.CreateTemp("", "ha-rig-*.log")
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(log.Name())
		cmd := exec.Command("../../scripts/services.sh", args...)
		cmd.Stdout, cmd.Stderr = log, log // a file: the nodes must not hold a pipe of ours
		err = cmd.Run()
		log.Close()
		if err != nil {
			out, _ := os.ReadFile(log.Name())
			t.Fatalf("scripts/services.sh %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	rig("cluster-up")
	t.Cleanup(func() { rig("cluster-down") })
}

// TestClusterKillNode drains a quorum queue with late acks through a URL
// list while a producer publishes with confirms, and kill -9s the node
// both are connected to mid-run: they move to another node, every
// confirmed message is delivered (lost = 0), consuming resumes within
// 10 s. A nacked publish is not confirmed, and not counted as sent.
func TestClusterKillNode(t *testing.T) {
	clusterRig(t)
	ctx := context.Background()
	cons, err := Dial(ctx, clusterURL, Config{Logger: quietLogger(t), MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	prod, err := Dial(ctx, clusterURL, Config{Logger: quietLogger(t), MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	q := broker.Queue{Name: unique("ha-quorum"), Quorum: true}
	if err := prod.Declare(ctx, q); err != nil {
		t.Fatal(err)
	}
	const n = 5000
	ds := consume(t, cons, 50, q)

	var mu sync.Mutex
	got := make(map[string]int)
	lastRecv := time.Now()
	go func() {
		for d := range ds {
			time.Sleep(200 * time.Microsecond) // the task
			mu.Lock()
			got[string(d.Body)]++
			lastRecv = time.Now()
			mu.Unlock()
			_ = d.Ack() // a stale ack after the kill: the message comes again
		}
	}()
	confirmed := make(chan string, n)
	var failed int
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := range n {
			body := "m" + strconv.Itoa(i)
			// A nack is not a confirm: a caller of SendTask tries a
			// refused message again, as this one does (up to 10 s). On
			// RabbitMQ 3.10.8 the channel that published across the kill
			// was nacked for good (10 minutes, until the publisher moved
			// to a new channel after a nack: now 1-2 nacks in all); the
			// publisher gives up after 100 failures.
			const tries = 50
			if failed >= 100 {
				t.Errorf("%d publishes failed; giving up at message %d", failed, i)
				return
			}
			for try := 0; try < tries; try++ {
				pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := prod.Publish(pctx, text(q.Name, body))
				cancel()
				if err == nil {
					confirmed <- body
					break
				}
				if failed++; failed == 1 {
					t.Logf("first failed publish: %v", err)
				}
				if try+1 < tries {
					time.Sleep(200 * time.Millisecond)
				}
			}
		}
	}()
	received := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	waitFor(t, 60*time.Second, "1000 deliveries", func() bool { return received() >= 1000 })
	addr := cons.RemoteAddr()
	if addr == nil {
		t.Fatal("consumer not connected")
	}
	_, port, _ := net.SplitHostPort(addr.String())
	node := map[string]int{"5681": 1, "5682": 2, "5683": 3}[port]
	pid := nodePID(t, node)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	atKill := received()
	waitFor(t, 30*time.Second, "consuming from another node", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > atKill && lastRecv.After(killed.Add(100*time.Millisecond))
	})
	resumed := time.Since(killed)
	<-pubDone
	close(confirmed)
	var want []string
	for c := range confirmed {
		want = append(want, c)
	}
	lostTwice := func() (lost, twice int) {
		mu.Lock()
		defer mu.Unlock()
		for _, w := range want {
			switch got[w] {
			case 0:
				lost++
			case 1:
			default:
				twice++
			}
		}
		return
	}
	deadline := time.Now().Add(60 * time.Second)
	for l, _ := lostTwice(); l > 0 && time.Now().Before(deadline); l, _ = lostTwice() {
		time.Sleep(100 * time.Millisecond)
	}
	lost, twice := lostTwice()
	newAddr := cons.RemoteAddr()
	t.Logf("kill -9 rabbit-%d (consumer and producer on it) at %d/%d delivered: consuming again after %v on %v; "+
		"sent %d, confirmed %d, publish errors %d, lost %d, ran twice %d",
		node, atKill, n, resumed.Round(10*time.Millisecond), newAddr, n, len(want), failed, lost, twice)
	if lost != 0 {
		t.Errorf("lost %d confirmed messages", lost)
	}
	if resumed > 10*time.Second {
		t.Errorf("consuming resumed after %v, want within 10s", resumed)
	}
	if newAddr == nil || newAddr.String() == addr.String() {
		t.Errorf("consumer on %v after the kill of %v", newAddr, addr)
	}
	_ = exec.Command("../../scripts/services.sh", "cluster-revive", strconv.Itoa(node)).Run()
}

func nodePID(t *testing.T, node int) int {
	t.Helper()
	dir := os.Getenv("HA_DIR")
	if dir == "" {
		dir = "/tmp/gocelery-ha"
	}
	b, err := os.ReadFile(fmt.Sprintf("%s/rabbit-%d/pid", dir, node))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}
