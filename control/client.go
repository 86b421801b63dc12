package control

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/events"
	"github.com/gocelery/gocelery/protocol"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Exchange is the mailbox exchange; "" means "celery.pidbox".
	Exchange string
	// Clock is sent with each request; nil means the client's own.
	Clock *events.Clock
}

// Client sends remote control commands to workers, Go and Python alike,
// and collects their replies, as Celery's app.control does. It is safe
// for concurrent use; Close ends its reply consumer.
type Client struct {
	t     Transport
	cfg   ClientConfig
	clock *events.Clock
	oid   string

	mu       sync.Mutex
	declared bool
	replies  bool // the reply queue is being consumed
	waiting  map[string]chan map[string]any
	stop     context.CancelFunc
	done     chan struct{}
}

// NewClient returns a client publishing on t.
func NewClient(t Transport, cfg ClientConfig) *Client {
	if cfg.Exchange == "" {
		cfg.Exchange = DefaultExchange
	}
	c := &Client{t: t, cfg: cfg, clock: cfg.Clock, oid: uuid.NewString(), waiting: map[string]chan map[string]any{}}
	if c.clock == nil {
		c.clock = &events.Clock{}
	}
	return c
}

// Options select the workers a command goes to and how replies are
// collected.
type Options struct {
	// Destination names the nodes ("celery@host"); nil means all.
	Destination []string
	// Pattern with Matcher ("glob", "pcre") selects nodes by name when
	// Destination is nil.
	Pattern, Matcher string
	// Reply waits for replies; Timeout (default 1 s) ends the wait, or
	// Limit replies (default: len(Destination) when given).
	Reply   bool
	Timeout time.Duration
	Limit   int
}

// ErrClosed is returned by a closed Client.
var ErrClosed = errors.New("control: client closed")

// Broadcast sends method with arguments to the workers and, with
// o.Reply, returns their replies, one {node: reply} map per worker, as
// Celery's broadcast(reply=True) does.
func (c *Client) Broadcast(ctx context.Context, method string, arguments map[string]any, o Options) ([]map[string]any, error) {
	if err := c.declare(ctx); err != nil {
		return nil, err
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.Limit <= 0 && o.Destination != nil {
		o.Limit = len(o.Destination)
	}
	req := &Request{Method: method, Arguments: arguments, Destination: o.Destination, Pattern: o.Pattern, Matcher: o.Matcher}
	if o.Pattern != "" && o.Matcher == "" {
		req.Matcher = "glob"
	}
	var got chan map[string]any
	expires := 0.0
	if o.Reply {
		if err := c.consumeReplies(ctx); err != nil {
			return nil, err
		}
		req.Ticket = uuid.NewString()
		req.ReplyTo = &ReplyTo{Exchange: "reply." + c.cfg.Exchange, RoutingKey: c.oid}
		got = make(chan map[string]any, 64)
		c.mu.Lock()
		c.waiting[req.Ticket] = got
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			delete(c.waiting, req.Ticket)
			c.mu.Unlock()
		}()
		expires = float64(time.Now().Add(o.Timeout).UnixMicro()) / 1e6
	}
	body, err := protocol.AppendJSON(nil, req.Map())
	if err != nil {
		return nil, fmt.Errorf("control: encode %s: %w", method, err)
	}
	err = c.t.Publish(ctx, broker.Publishing{
		Raw: protocol.Raw{
			ContentType: protocol.ContentTypeJSON, ContentEncoding: "utf-8",
			Headers:    map[string]any{"clock": c.clock.Forward(), "expires": expires},
			Properties: protocol.Properties{DeliveryMode: 2},
			Body:       body,
		},
		Exchange: c.cfg.Exchange,
	})
	if err != nil {
		return nil, fmt.Errorf("control: send %s: %w", method, err)
	}
	if !o.Reply {
		return nil, nil
	}
	var out []map[string]any
	timer := time.NewTimer(o.Timeout)
	defer timer.Stop()
	for o.Limit <= 0 || len(out) < o.Limit {
		select {
		case r := <-got:
			out = append(out, r)
		case <-timer.C:
			return out, nil
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
	return out, nil
}

// Ping returns the nodes that answered ping within the timeout.
func (c *Client) Ping(ctx context.Context, o Options) ([]map[string]any, error) {
	o.Reply = true
	return c.Broadcast(ctx, "ping", nil, o)
}

// Inspect runs a read-only command (active, stats, registered, ...) and
// merges the replies into {node: reply}, as Celery's Inspect does.
func (c *Client) Inspect(ctx context.Context, method string, arguments map[string]any, o Options) (map[string]any, error) {
	o.Reply = true
	replies, err := c.Broadcast(ctx, method, arguments, o)
	out := map[string]any{}
	for _, r := range replies {
		for k, v := range r {
			out[k] = v
		}
	}
	return out, err
}

// Revoke revokes task ids on every worker, as app.control.revoke does;
// terminate also cancels running ones.
func (c *Client) Revoke(ctx context.Context, ids []string, terminate bool) error {
	list := make([]any, len(ids))
	for i, id := range ids {
		list[i] = id
	}
	_, err := c.Broadcast(ctx, "revoke", map[string]any{"task_id": list, "terminate": terminate, "signal": "SIGTERM"}, Options{})
	return err
}

func (c *Client) declare(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.declared {
		return nil
	}
	for _, ex := range []broker.Exchange{
		{Name: c.cfg.Exchange, Kind: "fanout", Transient: true},
		{Name: "reply." + c.cfg.Exchange, Kind: "direct", Transient: true},
	} {
		if err := c.t.DeclareExchange(ctx, ex); err != nil {
			return fmt.Errorf("control: declare %q: %w", ex.Name, err)
		}
	}
	c.declared = true
	return nil
}

// consumeReplies starts consuming the client's reply queue once.
func (c *Client) consumeReplies(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.replies {
		return nil
	}
	if c.done != nil {
		return ErrClosed
	}
	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	deliveries, err := c.t.Consume(rctx, []broker.Queue{replyQueue(c.oid, "reply."+c.cfg.Exchange)}, 100)
	if err != nil {
		stop()
		return fmt.Errorf("control: reply queue: %w", err)
	}
	c.replies, c.stop, c.done = true, stop, make(chan struct{})
	go func() {
		defer close(c.done)
		for d := range deliveries {
			_ = d.Ack()
			c.deliver(d)
		}
	}()
	return nil
}

func (c *Client) deliver(d *broker.Delivery) {
	if clk, ok := protocol.AsInt64(d.Headers["clock"]); ok {
		c.clock.Adjust(clk)
	}
	ticket, _ := d.Headers["ticket"].(string)
	v, err := protocol.UnmarshalJSON(d.Body, 0)
	if err != nil {
		return
	}
	m, ok := v.(map[string]any)
	if !ok {
		return
	}
	c.mu.Lock()
	ch := c.waiting[ticket]
	c.mu.Unlock()
	if ch != nil {
		select {
		case ch <- m:
		default: // more replies than anyone waits for
		}
	}
}

// Close stops consuming replies.
func (c *Client) Close() error {
	c.mu.Lock()
	stop, done := c.stop, c.done
	if done == nil {
		c.done = make(chan struct{})
		close(c.done)
	}
	c.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	return nil
}
