package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/broker/amqp"
	"github.com/gocelery/gocelery/broker/redis"
)

// pidboxTransport is what remote control needs from a transport.
type pidboxTransport interface {
	DeclareExchange(ctx context.Context, ex broker.Exchange) error
	Consume(ctx context.Context, qs []broker.Queue, prefetch int) (<-chan *broker.Delivery, error)
	Publish(ctx context.Context, p broker.Publishing) error
	Close() error
}

// TestPidboxTransport proves the transport layer of Celery's remote
// control on both brokers, with no control package in between: Celery
// 5.7's app.control.ping(destination=[node]) (broadcast("ping",
// reply=True) through kombu's Mailbox) publishes a request that a Go
// consumer of <node>.celery.pidbox receives, and the reply Go publishes as
// a Celery worker's Node does (exchange reply.celery.pidbox, routing key
// reply_to.routing_key, headers ticket and clock, JSON body {node: {"ok":
// "pong"}}) is what ping returns: [{node: {"ok": "pong"}}].
func TestPidboxTransport(t *testing.T) {
	py, err := filepath.Abs("../.venv/bin/python")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("no Celery venv (run scripts/services.sh): %v", err)
	}
	for _, tc := range []struct {
		name, url string
		dial      func(ctx context.Context, url string) (pidboxTransport, error)
	}{
		{"amqp", "amqp://guest:guest@127.0.0.1:5672//", func(ctx context.Context, url string) (pidboxTransport, error) {
			return amqp.Dial(ctx, url, amqp.Config{})
		}},
		{"redis", "redis://127.0.0.1:6379/7", func(ctx context.Context, url string) (pidboxTransport, error) {
			return redis.Dial(ctx, url, redis.Config{})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			b, err := tc.dial(ctx, tc.url)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			// As kombu's Mailbox declares them with Celery's defaults.
			for _, ex := range []broker.Exchange{
				{Name: "celery.pidbox", Kind: "fanout", Transient: true},
				{Name: "reply.celery.pidbox", Kind: "direct", Transient: true},
			} {
				if err := b.DeclareExchange(ctx, ex); err != nil {
					t.Fatal(err)
				}
			}
			// A node name no real worker has: other nodes on the broker
			// get the broadcast too, and ignore it (destination).
			node := "gopidbox-" + uuid.NewString()[:8] + "@" + tc.name
			q := broker.Queue{Name: node + ".celery.pidbox", Exchange: "celery.pidbox", ExchangeType: "fanout",
				Transient: true, AutoDelete: true, Exclusive: true,
				Arguments: map[string]any{"x-expires": 10000, "x-message-ttl": 300000}}
			cctx, stop := context.WithCancel(ctx)
			defer stop()
			requests, err := b.Consume(cctx, []broker.Queue{q}, 10)
			if err != nil {
				t.Fatal(err)
			}

			cmd := exec.CommandContext(ctx, py, "python/pidbox_client.py", "ping", tc.url, node, "10")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waited := false
			defer func() {
				if !waited {
					_ = cmd.Process.Kill()
					_ = cmd.Wait()
				}
			}()

			var d *broker.Delivery
			select {
			case d = <-requests:
			case <-time.After(30 * time.Second):
				t.Fatalf("no request within 30s; python: %s", stderr.String())
			}
			if err := d.Ack(); err != nil {
				t.Errorf("Ack: %v", err)
			}
			var req struct {
				Method      string         `json:"method"`
				Arguments   map[string]any `json:"arguments"`
				Destination []string       `json:"destination"`
				Ticket      string         `json:"ticket"`
				ReplyTo     struct {
					Exchange   string `json:"exchange"`
					RoutingKey string `json:"routing_key"`
				} `json:"reply_to"`
			}
			if err := json.Unmarshal(d.Body, &req); err != nil {
				t.Fatalf("request body %s: %v", d.Body, err)
			}
			if req.Method != "ping" || !reflect.DeepEqual(req.Destination, []string{node}) || req.Ticket == "" ||
				req.ReplyTo.Exchange != "reply.celery.pidbox" || req.ReplyTo.RoutingKey == "" {
				t.Fatalf("request %s", d.Body)
			}
			if d.ContentType != "application/json" || d.Exchange != "celery.pidbox" || d.Queue != q.Name || d.Headers["clock"] == nil {
				t.Errorf("request delivery: content type %q, exchange %q, queue %q, headers %v", d.ContentType, d.Exchange, d.Queue, d.Headers)
			}

			reply := broker.Publishing{Exchange: req.ReplyTo.Exchange, RoutingKey: req.ReplyTo.RoutingKey, Mandatory: true}
			reply.ContentType, reply.ContentEncoding = "application/json", "utf-8"
			reply.Properties.DeliveryMode = 1 // transient, as kombu's _publish_reply
			reply.Headers = map[string]any{"ticket": req.Ticket, "clock": 1}
			reply.Body, _ = json.Marshal(map[string]any{node: map[string]any{"ok": "pong"}})
			if err := b.Publish(ctx, reply); err != nil {
				t.Fatalf("reply: %v", err)
			}

			err = cmd.Wait()
			waited = true
			if err != nil {
				t.Fatalf("pidbox_client.py: %v\n%s", err, stderr.String())
			}
			var got []map[string]map[string]string
			if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
				t.Fatalf("ping returned %q: %v", stdout.String(), err)
			}
			if want := []map[string]map[string]string{{node: {"ok": "pong"}}}; !reflect.DeepEqual(got, want) {
				t.Errorf("app.control.ping = %v, want %v", got, want)
			}
		})
	}
}
