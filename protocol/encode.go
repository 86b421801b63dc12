package protocol

import (
	"bytes"
	"fmt"
	"strings"
	"time"
)

// Encoder builds broker messages from task messages. The zero value sends
// protocol v2 JSON without compression, as Celery's defaults do.
type Encoder struct {
	// Serializer is "json" (default) or "msgpack". A Python worker accepts
	// msgpack only when its accept_content lists it.
	Serializer string
	// Compression is a kombu alias ("gzip", "bzip2", "lzma", "brotli",
	// "zstd") or MIME type; empty sends the body uncompressed.
	Compression string
	// Protocol is 2 (default) or 1, for consumers that only speak v1.
	Protocol int
}

// Encode encodes m with the zero Encoder.
func Encode(m *Message) (*Raw, error) {
	var e Encoder
	return e.Encode(m)
}

// Encode returns the message a Python producer's send_task would publish
// for m: every v2 header present, the 4-key embed, argsrepr/kwargsrepr.
// Empty id, root id, lang and reprs are filled in; m is not modified.
func (e *Encoder) Encode(m *Message) (*Raw, error) {
	if m.Task == "" {
		return nil, fmt.Errorf("protocol: encode: empty task name")
	}
	if m.ID == "" {
		return nil, fmt.Errorf("protocol: encode: task %q has no id", m.Task)
	}
	raw := &Raw{Properties: m.Properties}
	if raw.Properties.CorrelationID == "" {
		raw.Properties.CorrelationID = m.ID
	}
	if raw.Properties.DeliveryMode == 0 {
		raw.Properties.DeliveryMode = 2
	}
	var err error
	switch strings.ToLower(e.Serializer) {
	case "", "json", ContentTypeJSON:
		raw.ContentType, raw.ContentEncoding = ContentTypeJSON, "utf-8"
	case "msgpack", ContentTypeMsgpack:
		raw.ContentType, raw.ContentEncoding = ContentTypeMsgpack, "binary"
	default:
		return nil, &ContentTypeError{e.Serializer, "this package encodes only json and msgpack"}
	}
	switch e.Protocol {
	case 0, 2:
		raw.Headers = m.headersV2()
		raw.Body, err = e.bodyV2(m)
	case 1:
		raw.Headers = map[string]any{}
		for k, v := range m.Headers {
			if !standardHeaders[k] {
				raw.Headers[k] = v
			}
		}
		raw.Body, err = e.marshal(m.bodyV1())
	default:
		return nil, fmt.Errorf("protocol: encode: unknown protocol version %d", e.Protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("protocol: encode task %q: %w", m.Task, err)
	}
	if e.Compression != "" {
		mime, out, err := Compress(e.Compression, raw.Body)
		if err != nil {
			return nil, err
		}
		raw.Body = out
		raw.Headers["compression"] = mime
	}
	return raw, nil
}

func (e *Encoder) marshal(v any) ([]byte, error) {
	if e.Serializer == "msgpack" || e.Serializer == ContentTypeMsgpack {
		return MarshalMsgpack(v)
	}
	return MarshalJSON(v)
}

func (m *Message) headersV2() map[string]any {
	h := make(map[string]any, 20+len(m.Headers))
	for k, v := range m.Headers {
		if !standardHeaders[k] {
			h[k] = v
		}
	}
	lang := m.Lang
	if lang == "" {
		lang = "go"
	}
	rootID := m.RootID
	if rootID == "" {
		rootID = m.ID
	}
	argsrepr, kwargsrepr := m.ArgsRepr, m.KwargsRepr
	if argsrepr == "" {
		argsrepr = ReprArgs(m.Args)
	}
	if kwargsrepr == "" {
		kwargsrepr = Repr(m.Kwargs)
	}
	var groupIndex any
	if m.GroupIndex != nil {
		groupIndex = int64(*m.GroupIndex)
	}
	var stampedHeaders any
	if m.StampedHeaders != nil {
		stampedHeaders = m.StampedHeaders
	}
	stamps := m.Stamps
	if stamps == nil {
		stamps = map[string]any{}
	}
	h["lang"] = lang
	h["task"] = m.Task
	h["id"] = m.ID
	h["shadow"] = nilIfEmpty(m.Shadow)
	h["eta"] = ISOOrNil(m.ETA)
	h["expires"] = ISOOrNil(m.Expires)
	h["group"] = nilIfEmpty(m.Group)
	h["group_index"] = groupIndex
	h["retries"] = int64(m.Retries)
	h["timelimit"] = []any{seconds(m.TimeLimit.Hard), seconds(m.TimeLimit.Soft)}
	h["root_id"] = rootID
	h["parent_id"] = nilIfEmpty(m.ParentID)
	h["argsrepr"] = argsrepr
	h["kwargsrepr"] = kwargsrepr
	h["origin"] = nilIfEmpty(m.Origin)
	h["ignore_result"] = m.IgnoreResult
	h["replaced_task_nesting"] = int64(m.ReplacedTaskNesting)
	h["stamped_headers"] = stampedHeaders
	h["stamps"] = stamps
	return h
}

// ISOOrNil gives a time as Celery sends eta, expires and time_start: an
// ISO string (not a kombu datetime envelope), or nil for the zero time.
func ISOOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return FormatISO(t)
}

// bodyV2 writes [args, kwargs, embed] with the embed's keys in Celery's
// order, so a JSON body is byte-identical to Python's for the same data.
func (e *Encoder) bodyV2(m *Message) ([]byte, error) {
	args, kwargs := m.Args, m.Kwargs
	if args == nil {
		args = []any{}
	}
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	var chord any
	if m.Chord != nil {
		chord = m.Chord
	}
	embed := [4]struct {
		key string
		val any
	}{
		{"callbacks", sigsOrNil(m.Callbacks)},
		{"errbacks", sigsOrNil(m.Errbacks)},
		{"chain", sigsOrNil(m.Chain)},
		{"chord", chord},
	}
	if e.Serializer == "msgpack" || e.Serializer == ContentTypeMsgpack {
		var buf bytes.Buffer
		enc := newMsgpackEncoder(&buf)
		if err := enc.EncodeArrayLen(3); err != nil {
			return nil, err
		}
		if err := encodeMsgpack(enc, args, 1); err != nil {
			return nil, err
		}
		if err := encodeMsgpack(enc, kwargs, 1); err != nil {
			return nil, err
		}
		if err := enc.EncodeMapLen(4); err != nil {
			return nil, err
		}
		for _, kv := range embed {
			if err := enc.EncodeString(kv.key); err != nil {
				return nil, err
			}
			if err := encodeMsgpack(enc, kv.val, 2); err != nil {
				return nil, err
			}
		}
		return buf.Bytes(), nil
	}
	b := make([]byte, 0, 128)
	b = append(b, '[')
	b, err := appendJSON(b, args, 1)
	if err != nil {
		return nil, err
	}
	b = append(b, ", "...)
	if b, err = appendJSONMap(b, kwargs, 1); err != nil {
		return nil, err
	}
	b = append(b, ", {"...)
	for i, kv := range embed {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, '"')
		b = append(b, kv.key...)
		b = append(b, `": `...)
		if b, err = appendJSON(b, kv.val, 2); err != nil {
			return nil, err
		}
	}
	return append(b, "}]"...), nil
}

func sigsOrNil(s []Signature) any {
	if s == nil {
		return nil
	}
	return s
}

func (m *Message) bodyV1() map[string]any {
	args, kwargs := m.Args, m.Kwargs
	if args == nil {
		args = []any{}
	}
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	var chord, groupIndex any
	if m.Chord != nil {
		chord = m.Chord
	}
	if m.GroupIndex != nil {
		groupIndex = int64(*m.GroupIndex)
	}
	return map[string]any{
		"task": m.Task, "id": m.ID, "args": args, "kwargs": kwargs,
		"group": nilIfEmpty(m.Group), "group_index": groupIndex,
		"retries": int64(m.Retries), "eta": ISOOrNil(m.ETA), "expires": ISOOrNil(m.Expires),
		"utc": true, "callbacks": sigsOrNil(m.Callbacks), "errbacks": sigsOrNil(m.Errbacks),
		"timelimit": []any{seconds(m.TimeLimit.Hard), seconds(m.TimeLimit.Soft)},
		"taskset":   nilIfEmpty(m.Group), "chord": chord,
	}
}
