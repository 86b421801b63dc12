package protocol

import (
	"encoding/base64"
	"fmt"
)

// Envelope is a message as kombu's Redis transport stores it in a list: a
// JSON object with base64 body, headers, properties, and the delivery
// details kombu adds.
type Envelope struct {
	Raw
	Exchange    string // properties.delivery_info.exchange
	RoutingKey  string // properties.delivery_info.routing_key
	DeliveryTag string // properties.delivery_tag, a UUID string
}

// ParseEnvelope decodes kombu's Redis envelope. maxSize bounds the input
// (0 means DefaultMaxBodySize, plus room for base64).
func ParseEnvelope(data []byte, maxSize int) (*Envelope, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxBodySize*4/3 + 64<<10
	}
	if len(data) > maxSize {
		return nil, fmt.Errorf("%w: envelope of %d bytes exceeds %d", ErrTooLarge, len(data), maxSize)
	}
	v, err := UnmarshalJSON(data, 0)
	if err != nil {
		return nil, fmt.Errorf("redis envelope: %w", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: redis envelope must be an object, got %T", ErrMalformed, v)
	}
	e := &Envelope{}
	if e.ContentType, err = asString("content-type", obj["content-type"]); err != nil {
		return nil, err
	}
	if e.ContentEncoding, err = asString("content-encoding", obj["content-encoding"]); err != nil {
		return nil, err
	}
	if e.Headers, err = asMap("headers", obj["headers"]); err != nil {
		return nil, err
	}
	if e.Headers == nil {
		e.Headers = map[string]any{}
	}
	props, err := asMap("properties", obj["properties"])
	if err != nil {
		return nil, err
	}
	bodyEncoding, _ := props["body_encoding"].(string)
	switch body := obj["body"].(type) {
	case string:
		if bodyEncoding == "base64" {
			if e.Body, err = base64.StdEncoding.DecodeString(body); err != nil {
				return nil, fmt.Errorf("%w: body is not valid base64: %v", ErrMalformed, err)
			}
		} else {
			e.Body = []byte(body)
		}
	case nil:
	default:
		return nil, fmt.Errorf("%w: envelope body must be a string, got %T", ErrMalformed, body)
	}
	e.Properties, err = propertiesFrom(props)
	if err != nil {
		return nil, err
	}
	if di, ok := props["delivery_info"].(map[string]any); ok {
		e.Exchange, _ = di["exchange"].(string)
		e.RoutingKey, _ = di["routing_key"].(string)
	}
	e.DeliveryTag, _ = props["delivery_tag"].(string)
	return e, nil
}

// propertiesFrom reads Celery's properties from a map; keys without a field
// go to Extra, except the transport's own bookkeeping.
func propertiesFrom(p map[string]any) (Properties, error) {
	var out Properties
	var err error
	if out.CorrelationID, err = asString("correlation_id", p["correlation_id"]); err != nil {
		return out, err
	}
	if out.ReplyTo, err = asString("reply_to", p["reply_to"]); err != nil {
		return out, err
	}
	if out.DeliveryMode, err = asInt("delivery_mode", p["delivery_mode"]); err != nil {
		return out, err
	}
	if out.Priority, err = asInt("priority", p["priority"]); err != nil {
		return out, err
	}
	switch x := p["expiration"].(type) {
	case nil:
	case string:
		out.Expiration = x
	default:
		if n, ok := asInt64(x); ok {
			out.Expiration = fmt.Sprint(n)
		}
	}
	for k, v := range p {
		switch k {
		case "correlation_id", "reply_to", "delivery_mode", "priority", "expiration",
			"delivery_info", "body_encoding", "delivery_tag":
		default:
			if out.Extra == nil {
				out.Extra = map[string]any{}
			}
			out.Extra[k] = v
		}
	}
	return out, nil
}

// Marshal encodes the envelope as kombu's Redis transport does (base64
// body), ready to LPUSH.
func (e *Envelope) Marshal() ([]byte, error) {
	props := make(map[string]any, 8+len(e.Properties.Extra))
	for k, v := range e.Properties.Extra {
		props[k] = v
	}
	props["correlation_id"] = e.Properties.CorrelationID
	props["reply_to"] = e.Properties.ReplyTo
	props["delivery_mode"] = int64(e.Properties.DeliveryMode)
	props["priority"] = int64(e.Properties.Priority)
	if e.Properties.Expiration != "" {
		props["expiration"] = e.Properties.Expiration
	}
	props["delivery_info"] = map[string]any{"exchange": e.Exchange, "routing_key": e.RoutingKey}
	props["body_encoding"] = "base64"
	props["delivery_tag"] = e.DeliveryTag
	headers := e.Headers
	if headers == nil {
		headers = map[string]any{}
	}
	return MarshalJSON(map[string]any{
		"body":             base64.StdEncoding.EncodeToString(e.Body),
		"content-encoding": e.ContentEncoding,
		"content-type":     e.ContentType,
		"headers":          headers,
		"properties":       props,
	})
}
