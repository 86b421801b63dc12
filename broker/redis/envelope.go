package redis

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/gocelery/gocelery/protocol"
)

// errEnvelope reports an envelope or unacked entry this package cannot
// take apart.
var errEnvelope = errors.New("redis: malformed envelope")

// The helpers below edit kombu's JSON without decoding the values they do
// not touch: every other byte stays as the producer wrote it. kombu loads a
// message, changes it and dumps it again; for JSON that kombu (or
// protocol.MarshalJSON) wrote, splicing the raw values back with Python's
// separators gives the very bytes kombu would store.

// unackedEntry is the value kombu's QoS.append stores in the unacked hash:
// dumps([message, exchange, routing_key]).
func unackedEntry(envelope []byte, exchange, routingKey string) []byte {
	b := make([]byte, 0, len(envelope)+len(exchange)+len(routingKey)+16)
	b = append(b, '[')
	b = append(b, bytes.TrimSpace(envelope)...)
	b = append(b, ", "...)
	b = appendPyString(b, exchange)
	b = append(b, ", "...)
	b = appendPyString(b, routingKey)
	return append(b, ']')
}

func appendPyString(b []byte, s string) []byte {
	out, _ := protocol.AppendJSON(b, s) // a string always encodes
	return out
}

// parseEntry takes an unacked entry apart: the envelope (raw), exchange
// and routing key.
func parseEntry(entry []byte) (envelope []byte, exchange, routingKey string, err error) {
	var parts []json.RawMessage
	if err := json.Unmarshal(entry, &parts); err != nil {
		return nil, "", "", fmt.Errorf("%w: unacked entry: %v", errEnvelope, err)
	}
	if len(parts) != 3 {
		return nil, "", "", fmt.Errorf("%w: unacked entry has %d elements, want 3", errEnvelope, len(parts))
	}
	if err := json.Unmarshal(parts[1], &exchange); err != nil {
		return nil, "", "", fmt.Errorf("%w: unacked entry exchange: %v", errEnvelope, err)
	}
	if err := json.Unmarshal(parts[2], &routingKey); err != nil {
		return nil, "", "", fmt.Errorf("%w: unacked entry routing key: %v", errEnvelope, err)
	}
	return parts[0], exchange, routingKey, nil
}

// markRedelivered returns the envelope with headers.redelivered and
// properties.delivery_info.redelivered set to true, as kombu's
// _do_restore_message does before putting a message back: an existing key
// keeps its place, a new one goes last, like a Python dict assignment.
func markRedelivered(envelope []byte) ([]byte, error) {
	top, err := splitObject(envelope)
	if err != nil {
		return nil, err
	}
	if i := top.index("headers"); i >= 0 {
		if h, err := splitObject(top[i].value); err == nil {
			top[i].value = h.set("redelivered", []byte("true")).join()
		}
	}
	if i := top.index("properties"); i >= 0 {
		if props, err := splitObject(top[i].value); err == nil {
			if j := props.index("delivery_info"); j >= 0 {
				if di, err := splitObject(props[j].value); err == nil {
					props[j].value = di.set("redelivered", []byte("true")).join()
					top[i].value = props.join()
				}
			}
		}
	}
	return top.join(), nil
}

// envelopePriority reads properties.priority as kombu's
// _get_message_priority does: int() of it, clamped to 0..9, and 0 when it
// is missing or not a number.
func envelopePriority(envelope []byte) int {
	var m struct {
		Properties struct {
			Priority any `json:"priority"`
		} `json:"properties"`
	}
	if json.Unmarshal(envelope, &m) != nil {
		return 0
	}
	var p float64
	switch v := m.Properties.Priority.(type) {
	case float64:
		p = v
	case bool:
		if v {
			p = 1
		}
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return 0
		}
		p = float64(n)
	default:
		return 0
	}
	if math.IsNaN(p) {
		return 0
	}
	return int(min(max(math.Trunc(p), 0), 9))
}

// member is one key of a JSON object and its raw value.
type member struct {
	key   string
	raw   []byte // the key as written, quotes included
	value []byte
}

type object []member

func (o object) index(key string) int {
	for i := len(o) - 1; i >= 0; i-- { // Python keeps the last duplicate
		if o[i].key == key {
			return i
		}
	}
	return -1
}

func (o object) set(key string, value []byte) object {
	if i := o.index(key); i >= 0 {
		o[i].value = value
		return o
	}
	return append(o, member{key: key, raw: appendPyString(nil, key), value: value})
}

// join writes the object with Python's separators.
func (o object) join() []byte {
	n := 2
	for _, m := range o {
		n += len(m.raw) + len(m.value) + 4
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, m := range o {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, m.raw...)
		b = append(b, ": "...)
		b = append(b, m.value...)
	}
	return append(b, '}')
}

// splitObject splits a JSON object into its members without decoding the
// values.
func splitObject(data []byte) (object, error) {
	data = bytes.TrimSpace(data)
	if !json.Valid(data) || len(data) < 2 || data[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", errEnvelope)
	}
	var o object
	i := skipSpace(data, 1)
	if data[i] == '}' {
		return o, nil
	}
	for {
		end := stringEnd(data, i)
		raw := data[i:end]
		var key string
		if err := json.Unmarshal(raw, &key); err != nil {
			return nil, fmt.Errorf("%w: %v", errEnvelope, err)
		}
		i = skipSpace(data, end)
		i = skipSpace(data, i+1) // the ':'
		vend := valueEnd(data, i)
		o = append(o, member{key: key, raw: raw, value: data[i:vend]})
		i = skipSpace(data, vend)
		if data[i] == '}' {
			return o, nil
		}
		i = skipSpace(data, i+1) // the ','
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns the index after the string starting at data[i] ('"').
// The input is valid JSON.
func stringEnd(data []byte, i int) int {
	for i++; i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(data)
}

// valueEnd returns the index after the value starting at data[i]. The
// input is valid JSON.
func valueEnd(data []byte, i int) int {
	switch data[i] {
	case '"':
		return stringEnd(data, i)
	case '{', '[':
		depth := 0
		for ; i < len(data); i++ {
			switch data[i] {
			case '"':
				i = stringEnd(data, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return len(data)
	default: // number, true, false, null
		for ; i < len(data); i++ {
			switch data[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
		}
		return len(data)
	}
}
