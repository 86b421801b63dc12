package protocol

import (
	"fmt"
	"strings"
)

// DefaultMaxBodySize bounds a message body before and after decompression.
const DefaultMaxBodySize = 16 << 20

// Decoder turns raw broker messages into task messages. The zero value is
// ready to use with the defaults.
type Decoder struct {
	// MaxBodySize bounds the body, compressed and decompressed; 0 means
	// DefaultMaxBodySize.
	MaxBodySize int
	// MaxDepth bounds the nesting of arrays and objects; 0 means
	// DefaultMaxDepth.
	MaxDepth int
	// Accept lists the content types to decode; nil means JSON and
	// msgpack. Pickle and YAML are refused whatever it says.
	Accept []string
}

// Decode decodes raw with the default limits.
func Decode(raw *Raw) (*Message, error) {
	var d Decoder
	return d.Decode(raw)
}

func (d *Decoder) maxBody() int {
	if d.MaxBodySize > 0 {
		return d.MaxBodySize
	}
	return DefaultMaxBodySize
}

// Decode detects the protocol version as a Celery worker does and returns
// the task message. Errors wrap the package's sentinel errors.
func (d *Decoder) Decode(raw *Raw) (*Message, error) {
	if raw == nil {
		return nil, fmt.Errorf("%w: nil message", ErrMalformed)
	}
	compression, err := asString("compression header", raw.Headers["compression"])
	if err != nil {
		return nil, err
	}
	format, data, err := d.prepare(raw.ContentType, raw.ContentEncoding, compression, raw.Body)
	if err != nil {
		return nil, err
	}
	m := &Message{
		Properties:      raw.Properties,
		ContentType:     raw.ContentType,
		ContentEncoding: raw.ContentEncoding,
	}
	if compression != "" {
		m.Compression, _ = CompressionType(compression)
	}
	_, v2 := raw.Headers["task"]
	var body any
	if v2 && format == ContentTypeJSON {
		// The hot path: read [args, kwargs, embed] straight into m.
		jd := jsonDecoder{data: data, maxDepth: d.maxDepth()}
		err = jd.bodyV2(m)
	} else {
		body, err = d.unmarshal(format, data)
	}
	if err != nil {
		return nil, err
	}
	if v2 {
		m.Protocol = 2
		if err := m.fromHeaders(raw.Headers); err != nil {
			return nil, err
		}
		if format != ContentTypeJSON {
			if err := m.fromBodyV2(body); err != nil {
				return nil, err
			}
		}
	} else if bm, ok := body.(map[string]any); ok && bm["task"] != nil {
		m.Protocol = 1
		if err := m.fromBodyV1(bm); err != nil {
			return nil, err
		}
		m.customHeaders(raw.Headers)
	} else {
		return nil, fmt.Errorf("%w: no \"task\" header and the body is not a v1 task (%T)", ErrNotTaskMessage, body)
	}
	if m.Task == "" {
		return nil, fmt.Errorf("%w: empty task name", ErrMalformed)
	}
	if m.ID == "" {
		m.ID = raw.Properties.CorrelationID
	}
	if m.ID == "" {
		return nil, fmt.Errorf("%w: task %q has no id", ErrMalformed, m.Task)
	}
	return m, nil
}

// DecodeBody checks the size, decompresses and deserializes a body by its
// content type, as kombu's Message.decode does.
func (d *Decoder) DecodeBody(contentType, contentEncoding, compression string, body []byte) (any, error) {
	format, data, err := d.prepare(contentType, contentEncoding, compression, body)
	if err != nil {
		return nil, err
	}
	return d.unmarshal(format, data)
}

func (d *Decoder) maxDepth() int {
	if d.MaxDepth > 0 {
		return d.MaxDepth
	}
	return DefaultMaxDepth
}

func (d *Decoder) unmarshal(format string, data []byte) (any, error) {
	if format == ContentTypeMsgpack {
		return UnmarshalMsgpack(data, d.MaxDepth)
	}
	return UnmarshalJSON(data, d.MaxDepth)
}

// prepare checks the size and content type and decompresses; it returns
// ContentTypeJSON or ContentTypeMsgpack and the bytes to parse.
func (d *Decoder) prepare(contentType, contentEncoding, compression string, body []byte) (string, []byte, error) {
	limit := d.maxBody()
	if len(body) > limit {
		return "", nil, fmt.Errorf("%w: body of %d bytes exceeds %d", ErrTooLarge, len(body), limit)
	}
	ct := strings.ToLower(strings.TrimSpace(contentType))
	if i := strings.IndexByte(ct, ';'); i >= 0 { // "application/json; charset=utf-8"
		ct = strings.TrimSpace(ct[:i])
	}
	switch ct {
	case ContentTypePickle:
		return "", nil, &ContentTypeError{contentType, "pickle is never deserialized (Python code execution); send json or msgpack"}
	case ContentTypeYAML:
		return "", nil, &ContentTypeError{contentType, "yaml is not accepted; send json or msgpack"}
	}
	if !d.accepts(ct) {
		return "", nil, &ContentTypeError{contentType, "not in the accepted content types"}
	}
	var format string
	switch ct {
	case ContentTypeJSON:
		enc := strings.ToLower(contentEncoding)
		if enc != "" && enc != "utf-8" && enc != "utf8" && enc != "ascii" && enc != "us-ascii" {
			return "", nil, &ContentTypeError{contentType + "; encoding " + contentEncoding, "JSON must be UTF-8"}
		}
		format = ContentTypeJSON
	case ContentTypeMsgpack, "application/msgpack":
		format = ContentTypeMsgpack
	default:
		return "", nil, &ContentTypeError{contentType, "no decoder for it"}
	}
	if compression != "" {
		var err error
		if body, err = Decompress(compression, body, limit); err != nil {
			return "", nil, err
		}
	}
	return format, body, nil
}

func (d *Decoder) accepts(ct string) bool {
	if d.Accept == nil {
		return ct == ContentTypeJSON || ct == ContentTypeMsgpack || ct == "application/msgpack"
	}
	for _, a := range d.Accept {
		switch strings.ToLower(a) {
		case ct:
			return true
		case "json":
			if ct == ContentTypeJSON {
				return true
			}
		case "msgpack":
			if ct == ContentTypeMsgpack || ct == "application/msgpack" {
				return true
			}
		}
	}
	return false
}

func (m *Message) fromHeaders(h map[string]any) error {
	// Count the standard headers present: when that is all of h, the scan
	// for custom headers can be skipped (most messages have none).
	present := 0
	get := func(k string) any {
		v, ok := h[k]
		if ok {
			present++
		}
		return v
	}
	var err error
	str := func(field string, dst *string) {
		if err == nil {
			*dst, err = asString(field, get(field))
		}
	}
	str("task", &m.Task)
	str("id", &m.ID)
	str("shadow", &m.Shadow)
	str("group", &m.Group)
	str("root_id", &m.RootID)
	str("parent_id", &m.ParentID)
	str("lang", &m.Lang)
	str("origin", &m.Origin)
	str("argsrepr", &m.ArgsRepr)
	str("kwargsrepr", &m.KwargsRepr)
	if err != nil {
		return err
	}
	if m.ETA, err = asTime("eta", get("eta")); err != nil {
		return err
	}
	if m.Expires, err = asTime("expires", get("expires")); err != nil {
		return err
	}
	if m.GroupIndex, err = asOptInt("group_index", get("group_index")); err != nil {
		return err
	}
	if m.Retries, err = asInt("retries", get("retries")); err != nil {
		return err
	}
	if m.TimeLimit, err = asTimeLimit(get("timelimit")); err != nil {
		return err
	}
	if m.IgnoreResult, err = asBool("ignore_result", get("ignore_result")); err != nil {
		return err
	}
	if m.ReplacedTaskNesting, err = asInt("replaced_task_nesting", get("replaced_task_nesting")); err != nil {
		return err
	}
	if m.StampedHeaders, err = asStrings("stamped_headers", get("stamped_headers")); err != nil {
		return err
	}
	if m.Stamps, err = asMap("stamps", get("stamps")); err != nil {
		return err
	}
	get("compression")
	get("meth")
	if len(h) > present {
		m.customHeaders(h)
	}
	return nil
}

func (m *Message) customHeaders(h map[string]any) {
	for k, v := range h {
		if !standardHeaders[k] {
			if m.Headers == nil {
				m.Headers = make(map[string]any, 4)
			}
			m.Headers[k] = v
		}
	}
}

func (m *Message) fromBodyV2(body any) error {
	parts, ok := body.([]any)
	if !ok || len(parts) != 3 {
		return fmt.Errorf("%w: v2 body must be [args, kwargs, embed], got %s", ErrMalformed, describe(body))
	}
	var err error
	if m.Args, err = asList("args", parts[0]); err != nil {
		return err
	}
	if m.Kwargs, err = asMap("kwargs", parts[1]); err != nil {
		return err
	}
	// Python producers always send the 4-key embed; null is tolerated as
	// all-null, as Celery's trace does.
	embed, err := asMap("embed", parts[2])
	if err != nil {
		return err
	}
	return m.fromEmbed(embed)
}

func (m *Message) fromEmbed(e map[string]any) error {
	var err error
	if m.Callbacks, err = SignaturesFrom(e["callbacks"]); err != nil {
		return fmt.Errorf("callbacks: %w", err)
	}
	if m.Errbacks, err = SignaturesFrom(e["errbacks"]); err != nil {
		return fmt.Errorf("errbacks: %w", err)
	}
	if m.Chain, err = SignaturesFrom(e["chain"]); err != nil {
		return fmt.Errorf("chain: %w", err)
	}
	if c := e["chord"]; c != nil {
		s, err := SignatureFrom(c)
		if err != nil {
			return fmt.Errorf("chord: %w", err)
		}
		m.Chord = &s
	}
	return nil
}

// fromBodyV1 reads a protocol v1 body, as celery.worker.strategy's
// proto1_to_proto2 does.
func (m *Message) fromBodyV1(b map[string]any) error {
	var err error
	if m.Task, err = asString("task", b["task"]); err != nil {
		return err
	}
	if m.ID, err = asString("id", b["id"]); err != nil {
		return err
	}
	if m.Args, err = asList("args", b["args"]); err != nil {
		return err
	}
	if m.Kwargs, err = asMap("kwargs", b["kwargs"]); err != nil {
		return err
	}
	if m.Retries, err = asInt("retries", b["retries"]); err != nil {
		return err
	}
	// v1 "utc": false means naive times are the sender's local time, which
	// cannot be known here; they are taken as UTC like v2 does.
	if m.ETA, err = asTime("eta", b["eta"]); err != nil {
		return err
	}
	if m.Expires, err = asTime("expires", b["expires"]); err != nil {
		return err
	}
	if m.TimeLimit, err = asTimeLimit(b["timelimit"]); err != nil {
		return err
	}
	// proto1_to_proto2 reads the group from "taskset", falling back to "group".
	group := b["taskset"]
	if group == nil {
		group = b["group"]
	}
	if m.Group, err = asString("taskset", group); err != nil {
		return err
	}
	if m.GroupIndex, err = asOptInt("group_index", b["group_index"]); err != nil {
		return err
	}
	if err := m.fromEmbed(map[string]any{
		"callbacks": b["callbacks"], "errbacks": b["errbacks"], "chord": b["chord"],
	}); err != nil {
		return err
	}
	// Like proto1_to_proto2, v1 leaves root_id and parent_id unset.
	return nil
}

func describe(v any) string {
	if a, ok := v.([]any); ok {
		return fmt.Sprintf("an array of %d", len(a))
	}
	return fmt.Sprintf("%T", v)
}
