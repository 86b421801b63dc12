// Package control speaks Celery's remote control protocol (kombu's pidbox):
// a Node makes a Go worker answer `celery inspect` and `celery control`
// (ping, stats, active, revoke, rate_limit, shutdown, ...), and a Client
// sends those commands from Go to Python and Go workers alike.
package control

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
)

// Names of Celery's default mailbox (control_exchange "celery").
const (
	DefaultExchange      = "celery.pidbox"       // fanout: every node gets every request
	DefaultReplyExchange = "reply.celery.pidbox" // direct: replies by the caller's oid
)

// Celery's control_queue_ttl and control_queue_expires defaults, in ms.
const (
	queueTTL     = 300_000
	queueExpires = 10_000
)

// Request is a remote control request as kombu's Mailbox publishes it.
type Request struct {
	Method      string
	Arguments   map[string]any
	Destination []string // nil: every node
	Pattern     string   // used when Destination is nil, with Matcher
	Matcher     string   // "glob" or "pcre"
	Ticket      string   // set when replies are wanted
	ReplyTo     *ReplyTo
}

// ReplyTo says where replies go.
type ReplyTo struct {
	Exchange   string
	RoutingKey string
}

// ParseRequest decodes a pidbox request body (JSON).
func ParseRequest(raw *protocol.Raw) (*Request, error) {
	if raw.ContentType != protocol.ContentTypeJSON && raw.ContentType != "" {
		return nil, fmt.Errorf("control: %w: %s", protocol.ErrUnsupportedContentType, raw.ContentType)
	}
	v, err := protocol.UnmarshalJSON(raw.Body, 0)
	if err != nil {
		return nil, fmt.Errorf("control: request: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("control: %w: request is %T, not an object", protocol.ErrMalformed, v)
	}
	r := &Request{}
	if r.Method, ok = m["method"].(string); !ok || r.Method == "" {
		return nil, fmt.Errorf("control: %w: request without a method", protocol.ErrMalformed)
	}
	r.Arguments, _ = m["arguments"].(map[string]any)
	switch d := m["destination"].(type) {
	case []any:
		for _, x := range d {
			if s, ok := x.(string); ok {
				r.Destination = append(r.Destination, s)
			}
		}
		if r.Destination == nil {
			r.Destination = []string{} // an empty list matches no node
		}
	case string:
		r.Destination = []string{d}
	}
	r.Pattern, _ = m["pattern"].(string)
	r.Matcher, _ = m["matcher"].(string)
	r.Ticket, _ = m["ticket"].(string)
	if rt, ok := m["reply_to"].(map[string]any); ok {
		ex, _ := rt["exchange"].(string)
		key, _ := rt["routing_key"].(string)
		r.ReplyTo = &ReplyTo{Exchange: ex, RoutingKey: key}
	}
	return r, nil
}

// Map returns the request body as kombu writes it.
func (r *Request) Map() map[string]any {
	m := map[string]any{
		"method": r.Method, "arguments": r.Arguments, "destination": nil,
		"pattern": nilIfEmpty(r.Pattern), "matcher": nilIfEmpty(r.Matcher),
	}
	if r.Arguments == nil {
		m["arguments"] = map[string]any{}
	}
	if r.Destination != nil {
		d := make([]any, len(r.Destination))
		for i, s := range r.Destination {
			d[i] = s
		}
		m["destination"] = d
	}
	if r.Ticket != "" {
		m["ticket"] = r.Ticket
	}
	if r.ReplyTo != nil {
		m["reply_to"] = map[string]any{"exchange": r.ReplyTo.Exchange, "routing_key": r.ReplyTo.RoutingKey}
	}
	return m
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// For reports whether the node named hostname must handle r, as kombu's
// Node does: a destination list names it, or (with no list) the pattern
// matches, or neither is given.
func (r *Request) For(hostname string) bool {
	if r.Destination != nil {
		for _, d := range r.Destination {
			if d == hostname {
				return true
			}
		}
		return false
	}
	if r.Pattern == "" || r.Matcher == "" {
		return true
	}
	switch r.Matcher {
	case "pcre":
		re, err := regexp.Compile(r.Pattern)
		if err != nil {
			return false
		}
		loc := re.FindStringIndex(hostname) // re.match: anchored at the start
		return loc != nil && loc[0] == 0
	default: // glob, fnmatch
		ok, _ := path.Match(r.Pattern, hostname)
		return ok
	}
}

// nodeQueue is the queue a node consumes, as kombu's Mailbox.get_queue
// declares it with Celery's defaults.
func nodeQueue(hostname, exchange string) broker.Queue {
	return broker.Queue{
		Name:         hostname + "." + strings.TrimSuffix(exchange, ".pidbox") + ".pidbox",
		Exchange:     exchange,
		ExchangeType: "fanout",
		Transient:    true,
		AutoDelete:   true,
		Exclusive:    true, // control_queue_exclusive defaults to True in Celery 5.7
		Arguments:    map[string]any{"x-message-ttl": int32(queueTTL), "x-expires": int32(queueExpires)},
	}
}

// replyQueue is a client's reply queue (kombu's get_reply_queue).
func replyQueue(oid, replyExchange string) broker.Queue {
	return broker.Queue{
		Name:       oid + "." + replyExchange,
		Exchange:   replyExchange,
		RoutingKey: oid,
		Transient:  true,
		AutoDelete: true,
		Exclusive:  true,
		Arguments:  map[string]any{"x-message-ttl": int32(queueTTL), "x-expires": int32(queueExpires)},
	}
}

func ok(msg string) map[string]any  { return map[string]any{"ok": msg} }
func nok(msg string) map[string]any { return map[string]any{"error": msg} }
