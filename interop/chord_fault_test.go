package interop

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gocelery/gocelery/broker/amqp"
	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// A chord's join meets a result backend that drops connections: for
// joinOutage every command that touches the chord's join keys reaches
// Redis (the script runs, the dispatch claim is taken) and then the
// connection is cut before the reply, longer than the Redis client's own
// retries last. The Go worker still publishes the body, exactly once.
// The same fault with a Python Celery 5.7 worker is measured and logged
// (its redis-py retries a few times, then the part is lost: the body
// never runs).
func TestChordJoinSurvivesBackendDrops(t *testing.T) {
	celery := celeryBinary(t)
	const url = "amqp://guest:guest@127.0.0.1:5672//"
	const joinOutage = 3 * time.Second
	for _, w := range []struct {
		name, prefix string
		python       bool
	}{{"go worker", "interop.", false}, {"python worker", "pyinterop.", true}} {
		t.Run(w.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			gid := uuid.NewString()
			proxy := startDropProxy(t, "127.0.0.1:6379", "celery-taskset-meta-"+gid+".j", joinOutage)
			proxied := "redis://" + proxy.addr + "/13"
			queue := "chordfault_" + uuid.NewString()[:8]
			// Closed by t.Cleanup, after the worker stops.
			b, err := amqp.Dial(ctx, url, amqp.Config{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			direct, err := results.OpenRedis(nestedBackendURL, results.Config{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { direct.Close() })
			if w.python {
				startPythonWorkerOn(t, celery, url, proxied, queue, nil)
			} else {
				wb, err := results.OpenRedis(proxied, results.Config{})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { wb.Close() })
				startGoWorker(t, ctx, b, wb, queue)
			}
			key := "chordfault:ran:" + gid
			defer direct.Client().Del(context.Background(), key)
			var header []protocol.Signature
			for i := range 5 {
				header = append(header, producer.Sig(w.prefix+"add", i, i))
			}
			c := producer.Chord(header, producer.Si(w.prefix+"counter", key))
			c.Options = map[string]any{"task_id": gid}
			p := producer.New(b, direct, producer.Config{DefaultQueue: queue})
			r, err := p.Apply(ctx, c, nil)
			if err != nil {
				t.Fatal(err)
			}
			// The body runs once the outage is over.
			wctx, wcancel := context.WithTimeout(ctx, joinOutage+3*time.Second)
			defer wcancel()
			_, werr := r.Get(wctx)
			time.Sleep(300 * time.Millisecond) // a second body would have run by now
			ran, _ := direct.Client().Get(ctx, key).Int()
			drops := proxy.drops.Load()
			t.Logf("%s: header 5, join connections cut after the command ran: %d, body ran %d times (body result: %v)", w.name, drops, ran, werr)
			if drops == 0 {
				t.Fatal("the proxy cut no join connection: the fault was not injected")
			}
			if w.python {
				return // Celery's figure, for the report
			}
			if werr != nil || ran != 1 {
				t.Errorf("body ran %d times (result: %v), want once", ran, werr)
			}
		})
	}
}

// dropProxy forwards TCP to Redis; a client write that contains trigger,
// from the first one for outage, is passed to Redis and then the
// connection is closed before any reply gets back.
type dropProxy struct {
	addr  string
	drops atomic.Int64
}

func startDropProxy(t *testing.T, upstream, trigger string, outage time.Duration) *dropProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{addr: ln.Addr().String()}
	var (
		mu    sync.Mutex
		until time.Time // zero: the outage has not started
		wg    sync.WaitGroup
		conns []net.Conn
	)
	cutting := func() bool {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		if until.IsZero() {
			until = now.Add(outage)
		}
		return now.Before(until)
	}
	track := func(c ...net.Conn) {
		mu.Lock()
		conns = append(conns, c...)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", upstream)
			if err != nil {
				client.Close()
				continue
			}
			track(client, server)
			var mute atomic.Bool // set before a cut command is forwarded
			wg.Add(2)
			go func() { // replies
				defer wg.Done()
				buf := make([]byte, 32<<10)
				for {
					n, err := server.Read(buf)
					if n > 0 && !mute.Load() {
						if _, werr := client.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						client.Close()
						return
					}
				}
			}()
			go func() { // commands
				defer wg.Done()
				buf := make([]byte, 32<<10)
				for {
					n, err := client.Read(buf)
					if n > 0 {
						cut := bytes.Contains(buf[:n], []byte(trigger)) && cutting()
						if cut {
							mute.Store(true)
						}
						if _, werr := server.Write(buf[:n]); werr != nil {
							return
						}
						if cut {
							p.drops.Add(1)
							time.Sleep(20 * time.Millisecond) // Redis runs it
							client.Close()
							server.Close()
							return
						}
					}
					if err != nil {
						if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "closed") {
							t.Logf("proxy: %v", err)
						}
						server.Close()
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}
