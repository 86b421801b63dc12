package amqp

import (
	"encoding"
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
)

// ErrHeaderValue is returned by Publish and Declare for a header or
// argument value an AMQP field table cannot carry.
var ErrHeaderValue = errors.New("amqp: value not representable in an AMQP field table")

// maxTableDepth bounds the nesting of tables and arrays, so a map that
// contains itself fails instead of recursing forever.
const maxTableDepth = 64

// fromTable turns the application_headers of a delivery into the values
// package protocol decodes: nested tables become map[string]any and
// decimals protocol.Decimal; everything else is kept as amqp091 read it
// (every integer width, float32/float64, string, []byte, bool, nil, and
// time.Time, in UTC). The table is converted in place: amqp091 allocates a
// fresh one per delivery, and a flat table then costs nothing.
func fromTable(t amqp.Table) map[string]any {
	if t == nil {
		return nil
	}
	for k, v := range t {
		if c, ok := fromField(v); ok {
			t[k] = c
		}
	}
	return map[string]any(t)
}

// fromField converts one value; ok is false when v is kept as it is.
func fromField(v any) (any, bool) {
	switch x := v.(type) {
	case amqp.Table:
		return fromTable(x), true
	case []any:
		for i, e := range x {
			if c, ok := fromField(e); ok {
				x[i] = c
			}
		}
		return x, false
	case amqp.Decimal:
		return decimalString(x), true
	case time.Time:
		return x.UTC(), true
	}
	return v, false
}

// decimalString writes an AMQP decimal (value × 10^-scale) in the exact
// form Python's Decimal prints for it, trailing zeros included: {2, 110}
// is "1.10", {3, -5} is "-0.005".
func decimalString(d amqp.Decimal) protocol.Decimal {
	v := int64(d.Value)
	neg := v < 0
	if neg {
		v = -v
	}
	digits := strconv.FormatInt(v, 10)
	if s := int(d.Scale); s > 0 {
		if len(digits) <= s {
			digits = strings.Repeat("0", s-len(digits)+1) + digits
		}
		digits = digits[:len(digits)-s] + "." + digits[len(digits)-s:]
	}
	if neg {
		digits = "-" + digits
	}
	return protocol.Decimal(digits)
}

// toTable converts headers or x-arguments for amqp091, which writes Go's
// int as a 32-bit field (silently truncating) and rejects types it does
// not know. The rules, chosen to match what py-amqp writes and reads:
//
//   - int and uint kinds: int32 when the value fits, else int64 ('l');
//     int8, int16, int32, int64, uint8, uint16 and uint32 keep their width.
//     A uint64 beyond int64 is an error.
//   - *big.Int: int64 when it fits, else an error. AMQP tables have no
//     wider integer, and py-amqp cannot send one either, so a string
//     would only move the surprise to the consumer.
//   - protocol.Decimal: an AMQP decimal ('D', which py-amqp reads as a
//     Decimal) when the unscaled value fits in 32 bits and the scale in
//     8; else an error, for the same reason.
//   - map[string]any, amqp.Table and maps with string keys: nested tables.
//   - []any and other slices or arrays (except []byte): arrays.
//   - nil, bool, string, []byte, float32, float64, time.Time,
//     amqp.Decimal: as they are. A time.Time travels as whole seconds
//     ('T'), as the AMQP timestamp type has no fraction.
//   - encoding.TextMarshaler values (uuid.UUID, ...): their text.
//
// Anything else is an error wrapping ErrHeaderValue. The input is not
// modified.
func toTable(m map[string]any) (amqp.Table, error) {
	if m == nil {
		return nil, nil
	}
	return tableOf(m, "", 0)
}

func tableOf(m map[string]any, path string, depth int) (amqp.Table, error) {
	if depth > maxTableDepth {
		return nil, fmt.Errorf("%w: %s nested deeper than %d", ErrHeaderValue, path, maxTableDepth)
	}
	t := make(amqp.Table, len(m))
	for k, v := range m {
		if len(k) > 255 {
			return nil, fmt.Errorf("%w: key %.20q... longer than 255 bytes", ErrHeaderValue, k)
		}
		c, err := toField(v, joinPath(path, k), depth)
		if err != nil {
			return nil, err
		}
		t[k] = c
	}
	return t, nil
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func toField(v any, path string, depth int) (any, error) {
	switch x := v.(type) {
	case nil, bool, string, []byte, float32, float64, int8, int16, int32, int64,
		uint8, uint16, uint32, amqp.Decimal:
		return v, nil
	case int:
		return narrowInt(int64(x)), nil
	case uint:
		return toField(uint64(x), path, depth)
	case uint64:
		if x > math.MaxInt64 {
			return nil, fmt.Errorf("%w: %s = %d exceeds int64", ErrHeaderValue, path, x)
		}
		return narrowInt(int64(x)), nil
	case time.Time:
		return x, nil
	case *big.Int:
		if x == nil {
			return nil, nil
		}
		if !x.IsInt64() {
			return nil, fmt.Errorf("%w: %s = %s exceeds int64", ErrHeaderValue, path, x)
		}
		return x.Int64(), nil
	case protocol.Decimal:
		d, err := decimalField(x)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrHeaderValue, path, err)
		}
		return d, nil
	case map[string]any:
		return tableOf(x, path, depth+1)
	case amqp.Table:
		return tableOf(x, path, depth+1)
	case []any:
		return arrayOf(len(x), func(i int) any { return x[i] }, path, depth)
	case []string:
		return arrayOf(len(x), func(i int) any { return x[i] }, path, depth)
	case encoding.TextMarshaler:
		b, err := x.MarshalText()
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrHeaderValue, path, err)
		}
		return string(b), nil
	}
	// The rarer shapes: []int, map[string]string, named types.
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		return arrayOf(rv.Len(), func(i int) any { return rv.Index(i).Interface() }, path, depth)
	case reflect.Map:
		if rv.Type().Key().Kind() == reflect.String {
			m := make(map[string]any, rv.Len())
			for it := rv.MapRange(); it.Next(); {
				m[it.Key().String()] = it.Value().Interface()
			}
			return tableOf(m, path, depth+1)
		}
	case reflect.String:
		return rv.String(), nil
	case reflect.Bool:
		return rv.Bool(), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return narrowInt(rv.Int()), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return toField(rv.Uint(), path, depth)
	case reflect.Float32, reflect.Float64:
		return rv.Float(), nil
	}
	return nil, fmt.Errorf("%w: %s has type %T", ErrHeaderValue, path, v)
}

func arrayOf(n int, at func(int) any, path string, depth int) ([]any, error) {
	if depth > maxTableDepth {
		return nil, fmt.Errorf("%w: %s nested deeper than %d", ErrHeaderValue, path, maxTableDepth)
	}
	a := make([]any, n)
	for i := range n {
		c, err := toField(at(i), path+"["+strconv.Itoa(i)+"]", depth+1)
		if err != nil {
			return nil, err
		}
		a[i] = c
	}
	return a, nil
}

// narrowInt picks the field width py-amqp would: 'I' when the value fits
// in 32 bits, 'l' beyond, so a Go int arrives in Python as the same int
// and a Go declaration's x-arguments match a kombu one byte for byte.
func narrowInt(n int64) any {
	if n >= math.MinInt32 && n <= math.MaxInt32 {
		return int32(n)
	}
	return n
}

// decimalField parses a Python Decimal string ("1.10", "-5", "1E+3")
// into an AMQP decimal.
func decimalField(d protocol.Decimal) (amqp.Decimal, error) {
	s := string(d)
	mant, exp := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e, err := strconv.Atoi(s[i+1:])
		if err != nil {
			return amqp.Decimal{}, fmt.Errorf("decimal %q: bad exponent", s)
		}
		mant, exp = s[:i], e
	}
	neg := strings.HasPrefix(mant, "-")
	mant = strings.TrimPrefix(strings.TrimPrefix(mant, "-"), "+")
	scale := 0
	if i := strings.IndexByte(mant, '.'); i >= 0 {
		scale = len(mant) - i - 1
		mant = mant[:i] + mant[i+1:]
	}
	if mant == "" {
		return amqp.Decimal{}, fmt.Errorf("decimal %q: no digits", s)
	}
	v, err := strconv.ParseInt(mant, 10, 64)
	if err != nil {
		return amqp.Decimal{}, fmt.Errorf("decimal %q: %w", s, err)
	}
	scale -= exp
	for ; scale < 0; scale++ { // 1E+3: no negative scales in AMQP
		if v > math.MaxInt64/10 {
			return amqp.Decimal{}, fmt.Errorf("decimal %q: out of range", s)
		}
		v *= 10
	}
	if neg {
		v = -v
	}
	if scale > math.MaxUint8 || v < math.MinInt32 || v > math.MaxInt32 {
		return amqp.Decimal{}, fmt.Errorf("decimal %q: out of range (32-bit value, scale <= 255)", s)
	}
	return amqp.Decimal{Scale: uint8(scale), Value: int32(v)}, nil
}

// Property names kept in protocol.Properties.Extra: the AMQP basic
// properties with no field there, named as kombu names them.
const (
	propMessageID = "message_id"
	propTimestamp = "timestamp"
	propType      = "type"
	propUserID    = "user_id"
	propAppID     = "app_id"
)

// rawOf converts what amqp091 delivered.
func rawOf(d *amqp.Delivery) protocol.Raw {
	r := protocol.Raw{
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		Headers:         fromTable(d.Headers),
		Properties: protocol.Properties{
			CorrelationID: d.CorrelationId,
			ReplyTo:       d.ReplyTo,
			DeliveryMode:  int(d.DeliveryMode),
			Priority:      int(d.Priority),
			Expiration:    d.Expiration,
		},
		Body: d.Body,
	}
	if d.MessageId != "" || !d.Timestamp.IsZero() || d.Type != "" || d.UserId != "" || d.AppId != "" {
		x := make(map[string]any, 1)
		setNonEmpty(x, propMessageID, d.MessageId)
		setNonEmpty(x, propType, d.Type)
		setNonEmpty(x, propUserID, d.UserId)
		setNonEmpty(x, propAppID, d.AppId)
		if !d.Timestamp.IsZero() {
			x[propTimestamp] = d.Timestamp.UTC()
		}
		r.Properties.Extra = x
	}
	return r
}

func setNonEmpty(m map[string]any, k, v string) {
	if v != "" {
		m[k] = v
	}
}

// publishingOf converts a message to send. Extra properties with an AMQP
// counterpart (message_id, type, user_id, app_id, timestamp) are sent;
// others are dropped, as py-amqp drops them (a retry's "origin").
func publishingOf(p *broker.Publishing) (amqp.Publishing, error) {
	pr := p.Properties
	if pr.DeliveryMode < 0 || pr.DeliveryMode > math.MaxUint8 {
		return amqp.Publishing{}, fmt.Errorf("amqp: delivery mode %d out of range", pr.DeliveryMode)
	}
	if pr.Priority < 0 || pr.Priority > math.MaxUint8 {
		return amqp.Publishing{}, fmt.Errorf("amqp: priority %d out of range 0..255", pr.Priority)
	}
	h, err := toTable(p.Headers)
	if err != nil {
		return amqp.Publishing{}, err
	}
	m := amqp.Publishing{
		Headers:         h,
		ContentType:     p.ContentType,
		ContentEncoding: p.ContentEncoding,
		DeliveryMode:    uint8(pr.DeliveryMode),
		Priority:        uint8(pr.Priority),
		CorrelationId:   pr.CorrelationID,
		ReplyTo:         pr.ReplyTo,
		Expiration:      pr.Expiration,
		Body:            p.Body,
	}
	for k, v := range pr.Extra {
		switch k {
		case propMessageID:
			m.MessageId, _ = v.(string)
		case propType:
			m.Type, _ = v.(string)
		case propUserID:
			m.UserId, _ = v.(string)
		case propAppID:
			m.AppId, _ = v.(string)
		case propTimestamp:
			switch t := v.(type) {
			case time.Time:
				m.Timestamp = t
			case int64:
				m.Timestamp = time.Unix(t, 0)
			case float64:
				m.Timestamp = time.Unix(int64(t), 0)
			}
		}
	}
	return m, nil
}
