package results

import (
	"bytes"
	"fmt"
	"math"
	"time"

	"github.com/gocelery/gocelery/protocol"
)

// Meta is one task's stored state, the value of celery-task-meta-<id>.
// Its zero values map to what Celery writes when it has nothing to say, so
// a Meta built from a Go worker's request encodes byte for byte like the
// Python worker's.
type Meta struct {
	TaskID string
	Status string
	// Result is the return value for SUCCESS, an exception for the
	// exception states (an [*Exception], or any error, which is converted
	// with [ExceptionFrom]), {"pid", "hostname"} for STARTED (see
	// [StartedResult]) and the meta passed to update_state for custom
	// states. Get returns exception results as *Exception.
	Result any
	// Traceback is the formatted Python traceback; "" is stored as null.
	Traceback string
	// Children are result tuples ([ResultTuple], [GroupTuple]) of the
	// tasks this task sent; nil is stored as [].
	Children []any
	// NullChildren stores children as null instead of [], as Celery does
	// for states written without a task request (a REVOKED written by the
	// revoke control command). Get sets it when children is null.
	NullChildren bool
	// DateDone is when a ready state was reached; the zero time is stored
	// as null. Store sets it to the current UTC time for ready states when
	// it is zero, as Celery always stamps them.
	DateDone time.Time
	// GroupID is written only when non-empty (the task is in a group or a
	// chord header).
	GroupID string
	// ParentID is written only when non-empty.
	ParentID string

	// Extended writes the request fields below, as result_extended=True
	// does. With Name empty the request is unknown (Celery's unregistered
	// task failure) and all six fields are written as null; otherwise a nil
	// Args is [] and a nil Kwargs is {}, and an empty Worker or Queue is
	// null, as Celery writes a missing hostname or routing key.
	Extended bool
	Name     string
	Args     []any
	// Kwargs keys are written sorted; Python would keep the caller's order.
	Kwargs  map[string]any
	Worker  string
	Retries int
	// Queue is the routing key the task message was delivered with.
	Queue string
	// StampedHeaders and Stamps are the message's stamps (Celery's
	// stamping API), written after queue when Extended is set and
	// StampedHeaders is not empty: "stamped_headers" and then each stamp in
	// StampedHeaders order. Stamps named like a meta key are not written.
	StampedHeaders []string
	Stamps         map[string]any

	// ReplyTo and CorrelationID are the task message's reply_to and
	// correlation_id properties: where the rpc:// backend ([RPC]) sends
	// the state. They are never part of the encoded meta.
	ReplyTo       string
	CorrelationID string
}

// Ready reports whether m holds a final state.
func (m *Meta) Ready() bool { return IsReady(m.Status) }

// Err returns the stored exception for FAILURE and REVOKED, the states for
// which Python's AsyncResult.get raises; nil otherwise.
func (m *Meta) Err() error {
	if !isPropagate(m.Status) {
		return nil
	}
	switch r := m.Result.(type) {
	case *Exception:
		if r != nil {
			return r
		}
	case error:
		return r
	}
	return &Exception{Type: "Exception", Message: []any{protocol.Repr(m.Result)}, Module: "builtins"}
}

// Item is one key and value of a [Dict].
type Item struct {
	Key   string
	Value any
}

// Dict is a JSON object that keeps its keys in the given order, as a Python
// dict does. Use it where byte-exact output matters; a map[string]any is
// written with sorted keys.
type Dict []Item

// StartedResult is the result Celery stores with STARTED:
// {"pid": <pid>, "hostname": "<worker nodename>"}, in that order.
func StartedResult(pid int, hostname string) Dict {
	return Dict{{"pid", pid}, {"hostname", hostname}}
}

// ResultTuple is AsyncResult.as_tuple() for a task without a parent:
// [[id, null], null]. Children lists and group results are made of these.
func ResultTuple(taskID string) []any {
	return []any{[]any{taskID, nil}, nil}
}

// GroupTuple is GroupResult.as_tuple() for a group of plain tasks:
// [[group_id, null], [[[id, null], null], ...]].
func GroupTuple(groupID string, childIDs []string) []any {
	children := make([]any, len(childIDs))
	for i, id := range childIDs {
		children[i] = ResultTuple(id)
	}
	return []any{[]any{groupID, nil}, children}
}

// Encode returns the JSON Store writes for m: kombu JSON in Python's
// format, keys in the order Celery's _get_result_meta builds them. It does
// not fill in DateDone; Store does that before encoding.
func (m *Meta) Encode() ([]byte, error) {
	return m.appendJSON(make([]byte, 0, 256))
}

func (m *Meta) appendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, `{"status": `...)
	b = appendString(b, m.Status)
	b = append(b, `, "result": `...)
	if b, err = appendResult(b, m.Status, m.Result); err != nil {
		return nil, fmt.Errorf("results: encoding result of task %q: %w", m.TaskID, err)
	}
	b = append(b, `, "traceback": `...)
	b = appendOptString(b, m.Traceback)
	b = append(b, `, "children": `...)
	switch {
	case m.Children != nil:
		if b, err = appendValue(b, m.Children, 0); err != nil {
			return nil, fmt.Errorf("results: encoding children of task %q: %w", m.TaskID, err)
		}
	case m.NullChildren:
		b = append(b, "null"...)
	default:
		b = append(b, "[]"...)
	}
	b = append(b, `, "date_done": `...)
	if m.DateDone.IsZero() {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = append(b, protocol.FormatISO(m.DateDone)...)
		b = append(b, '"')
	}
	if m.GroupID != "" {
		b = append(b, `, "group_id": `...)
		b = appendString(b, m.GroupID)
	}
	if m.ParentID != "" {
		b = append(b, `, "parent_id": `...)
		b = appendString(b, m.ParentID)
	}
	if m.Extended {
		if b, err = m.appendExtended(b); err != nil {
			return nil, fmt.Errorf("results: encoding request of task %q: %w", m.TaskID, err)
		}
	}
	b = append(b, `, "task_id": `...)
	b = appendString(b, m.TaskID)
	return append(b, '}'), nil
}

func (m *Meta) appendExtended(b []byte) ([]byte, error) {
	if m.Name == "" {
		return append(b, `, "name": null, "args": null, "kwargs": null, "worker": null, "retries": null, "queue": null`...), nil
	}
	var err error
	b = append(b, `, "name": `...)
	b = appendString(b, m.Name)
	b = append(b, `, "args": `...)
	args := m.Args
	if args == nil {
		args = []any{}
	}
	if b, err = appendValue(b, args, 0); err != nil {
		return nil, err
	}
	b = append(b, `, "kwargs": `...)
	kwargs := m.Kwargs
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	if b, err = appendValue(b, kwargs, 0); err != nil {
		return nil, err
	}
	b = append(b, `, "worker": `...)
	b = appendOptString(b, m.Worker)
	b = append(b, `, "retries": `...)
	b = appendInt(b, m.Retries)
	b = append(b, `, "queue": `...)
	b = appendOptString(b, m.Queue)
	if len(m.StampedHeaders) == 0 {
		return b, nil
	}
	b = append(b, `, "stamped_headers": `...)
	if b, err = protocol.AppendJSON(b, m.StampedHeaders); err != nil {
		return nil, err
	}
	for _, h := range m.StampedHeaders {
		v, ok := m.Stamps[h]
		if !ok || isMetaKey(h) {
			continue
		}
		b = append(b, ", "...)
		b = appendString(b, h)
		b = append(b, ": "...)
		if b, err = appendValue(b, v, 0); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// isMetaKey reports whether Celery's meta uses key itself; stamps cannot
// take these names.
func isMetaKey(key string) bool {
	switch key {
	case "status", "result", "traceback", "children", "date_done", "group_id", "parent_id",
		"name", "args", "kwargs", "worker", "retries", "queue", "stamped_headers", "task_id":
		return true
	}
	return false
}

// appendResult writes the result as Celery's encode_result does: errors
// in exception states become exception dicts.
func appendResult(b []byte, status string, result any) ([]byte, error) {
	if IsException(status) {
		switch r := result.(type) {
		case error:
			if e := ExceptionFrom(r); e != nil {
				return appendException(b, e, 0)
			}
		case map[string]any:
			if e, ok := exceptionFromDict(r); ok {
				return appendException(b, e, 0)
			}
		}
	}
	return appendValue(b, result, 0)
}

// MarshalValue encodes v as kombu JSON the way this package writes results:
// [Dict] keeps its key order and [*Exception] becomes Celery's exception
// dict, at any depth (both are protocol.JSONAppenders); everything else is
// protocol.AppendJSON. Chord joins store results in this form.
func MarshalValue(v any) ([]byte, error) {
	return protocol.AppendJSON(nil, v)
}

func appendValue(b []byte, v any, depth int) ([]byte, error) {
	return protocol.AppendJSONDepth(b, v, depth)
}

// AppendKombuJSON writes d in its own key order (protocol.JSONAppender).
func (d Dict) AppendKombuJSON(b []byte, depth int) ([]byte, error) {
	if d == nil {
		return append(b, "null"...), nil
	}
	b = append(b, '{')
	var err error
	for i, it := range d {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendString(b, it.Key)
		b = append(b, ": "...)
		if b, err = protocol.AppendJSONDepth(b, it.Value, depth+1); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

func appendString(b []byte, s string) []byte {
	b, _ = protocol.AppendJSON(b, s) // strings always encode
	return b
}

func appendOptString(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return appendString(b, s)
}

func appendInt(b []byte, n int) []byte {
	b, _ = protocol.AppendJSON(b, n) // ints always encode
	return b
}

// compressedMagic starts a payload compressed by Celery 5.7's
// result_compression: magic, content type, NUL, compressed body.
const compressedMagic = "\x00celery-compressed\x00"

// DecodeMeta parses a stored or published task state: kombu JSON, or
// msgpack when the writer used result_serializer='msgpack', optionally
// compressed by Celery 5.7's result_compression. Exception results are
// returned as [*Exception]. Errors wrap [ErrMalformed].
func DecodeMeta(data []byte) (*Meta, error) {
	v, err := decodePayload(data)
	if err != nil {
		return nil, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: task meta is %T, not an object", ErrMalformed, v)
	}
	return metaFromObject(obj)
}

func decodePayload(data []byte) (any, error) {
	if bytes.HasPrefix(data, []byte(compressedMagic)) {
		ct, body, ok := bytes.Cut(data[len(compressedMagic):], []byte{0})
		if !ok {
			return nil, fmt.Errorf("%w: compressed payload without content type", ErrMalformed)
		}
		out, err := protocol.Decompress(string(ct), body, maxValueSize)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		data = out
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	var v any
	var err error
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		v, err = protocol.UnmarshalJSON(data, 0)
	} else {
		v, err = protocol.UnmarshalMsgpack(data, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return v, nil
}

func metaFromObject(obj map[string]any) (*Meta, error) {
	m := &Meta{}
	var err error
	status, ok := obj["status"].(string)
	if !ok || status == "" {
		return nil, fmt.Errorf("%w: task meta has no status", ErrMalformed)
	}
	m.Status = status
	if m.TaskID, err = optString(obj, "task_id"); err != nil {
		return nil, err
	}
	m.Result = obj["result"]
	if IsException(status) {
		if e, ok := exceptionFromDict(m.Result); ok {
			m.Result = e
		}
	}
	if m.Traceback, err = optString(obj, "traceback"); err != nil {
		return nil, err
	}
	if c, present := obj["children"]; present {
		switch c := c.(type) {
		case nil:
			m.NullChildren = true
		case []any:
			m.Children = c
		default:
			return nil, fieldError("children", c)
		}
	}
	switch d := obj["date_done"].(type) {
	case nil:
	case string:
		if m.DateDone, err = protocol.ParseISO(d); err != nil {
			return nil, fmt.Errorf("%w: date_done: %w", ErrMalformed, err)
		}
		if _, off := m.DateDone.Zone(); off == 0 {
			m.DateDone = m.DateDone.UTC() // not time.Local, even where Local is UTC
		}
	case time.Time:
		m.DateDone = d
	default:
		return nil, fieldError("date_done", d)
	}
	if m.GroupID, err = optString(obj, "group_id"); err != nil {
		return nil, err
	}
	if m.ParentID, err = optString(obj, "parent_id"); err != nil {
		return nil, err
	}
	for _, k := range [...]string{"name", "args", "kwargs", "worker", "retries", "queue"} {
		if _, ok := obj[k]; ok {
			m.Extended = true
			break
		}
	}
	if !m.Extended {
		return m, nil
	}
	if err := m.decodeExtended(obj); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Meta) decodeExtended(obj map[string]any) error {
	var err error
	if m.Name, err = optString(obj, "name"); err != nil {
		return err
	}
	if m.Worker, err = optString(obj, "worker"); err != nil {
		return err
	}
	if m.Queue, err = optString(obj, "queue"); err != nil {
		return err
	}
	switch a := obj["args"].(type) {
	case nil:
	case []any:
		m.Args = a
	default:
		return fieldError("args", a)
	}
	switch k := obj["kwargs"].(type) {
	case nil:
	case map[string]any:
		m.Kwargs = k
	default:
		return fieldError("kwargs", k)
	}
	switch r := obj["retries"].(type) {
	case nil:
	case int64:
		if r < math.MinInt32 || r > math.MaxInt32 {
			return fieldError("retries", r)
		}
		m.Retries = int(r)
	default:
		return fieldError("retries", r)
	}
	if hs, ok := obj["stamped_headers"].([]any); ok {
		for _, h := range hs {
			name, ok := h.(string)
			if !ok {
				return fieldError("stamped_headers", hs)
			}
			m.StampedHeaders = append(m.StampedHeaders, name)
			if v, ok := obj[name]; ok && !isMetaKey(name) {
				if m.Stamps == nil {
					m.Stamps = make(map[string]any)
				}
				m.Stamps[name] = v
			}
		}
	}
	return nil
}

func optString(obj map[string]any, key string) (string, error) {
	switch s := obj[key].(type) {
	case nil:
		return "", nil
	case string:
		return s, nil
	default:
		return "", fieldError(key, s)
	}
}

func fieldError(key string, v any) error {
	return fmt.Errorf("%w: task meta field %q has unexpected type %T", ErrMalformed, key, v)
}
