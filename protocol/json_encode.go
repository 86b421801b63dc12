package protocol

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// MarshalJSON encodes v as kombu's JSON encoder would: Python's separators
// (", " and ": "), ensure_ascii escaping, Python float repr, and kombu's
// {"__type__", "__value__"} envelopes for time.Time, Date, TimeOfDay,
// Decimal, uuid.UUID and []byte. Map keys are sorted so output is stable.
// Values of other types go through encoding/json first, so structs with
// json tags work.
func MarshalJSON(v any) ([]byte, error) {
	return AppendJSON(nil, v)
}

// AppendJSON is MarshalJSON appending to b.
func AppendJSON(b []byte, v any) ([]byte, error) {
	return appendJSON(b, v, 0)
}

// JSONAppender is a value that writes its own kombu JSON: results.Dict
// keeps its key order, *results.Exception is Celery's exception dict.
// depth is the nesting so far; the values it holds go back through
// AppendJSONDepth with depth+1, so one depth limit holds at every level.
type JSONAppender interface {
	AppendKombuJSON(b []byte, depth int) ([]byte, error)
}

// AppendJSONDepth is AppendJSON for a value nested depth levels deep, for
// JSONAppender implementations.
func AppendJSONDepth(b []byte, v any, depth int) ([]byte, error) {
	return appendJSON(b, v, depth)
}

// maxEncodeDepth bounds nesting when encoding, so a self-referencing
// value fails instead of recursing forever.
const maxEncodeDepth = DefaultMaxDepth * 4

func appendJSON(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxEncodeDepth {
		return nil, fmt.Errorf("%w: encoding more than %d levels", ErrTooDeep, maxEncodeDepth)
	}
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		if x {
			return append(b, "true"...), nil
		}
		return append(b, "false"...), nil
	case string:
		return appendPyString(b, x), nil
	case int:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int8:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int16:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int32:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case uint:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint8:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint16:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint32:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint64:
		return strconv.AppendUint(b, x, 10), nil
	case *big.Int:
		if x == nil {
			return append(b, "null"...), nil
		}
		return x.Append(b, 10), nil
	case float64:
		return appendPyFloat(b, x), nil
	case float32:
		return appendPyFloat(b, float64(x)), nil
	case json.Number:
		return append(b, x...), nil
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ", "...)
			}
			var err error
			if b, err = appendJSON(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case []string:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = appendPyString(b, e)
		}
		return append(b, ']'), nil
	case map[string]any:
		return appendJSONMap(b, x, depth)
	case time.Time:
		b = append(b, `{"__type__": "datetime", "__value__": "`...)
		b = appendISO(b, x)
		return append(b, `"}`...), nil
	case Date:
		return appendTagged(b, "date", x.String()), nil
	case TimeOfDay:
		return appendTagged(b, "time", x.String()), nil
	case Decimal:
		return appendTagged(b, "decimal", string(x)), nil
	case uuid.UUID:
		b = append(b, `{"__type__": "uuid", "__value__": {"hex": "`...)
		var hex [32]byte
		const digits = "0123456789abcdef"
		for i, c := range x {
			hex[2*i], hex[2*i+1] = digits[c>>4], digits[c&15]
		}
		b = append(b, hex[:]...)
		return append(b, `"}}`...), nil
	case []byte:
		// kombu: UTF-8 bytes travel as text, others as base64.
		if utf8.Valid(x) {
			return appendTagged(b, "bytes", string(x)), nil
		}
		return appendTagged(b, "base64", base64.StdEncoding.EncodeToString(x)), nil
	case Signature:
		return x.appendJSON(b, depth)
	case *Signature:
		if x == nil {
			return append(b, "null"...), nil
		}
		return x.appendJSON(b, depth)
	case []Signature:
		if x == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '[')
		for i := range x {
			if i > 0 {
				b = append(b, ", "...)
			}
			var err error
			if b, err = x[i].appendJSON(b, depth+1); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case JSONAppender:
		return x.AppendKombuJSON(b, depth)
	}
	// Anything else (structs, typed slices and maps): let encoding/json
	// apply its rules, then re-encode the result in Python's format.
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("protocol: cannot encode %T as JSON: %w", v, err)
	}
	generic, err := UnmarshalJSON(raw, maxEncodeDepth)
	if err != nil {
		return nil, fmt.Errorf("protocol: cannot encode %T as JSON: %w", v, err)
	}
	return appendJSON(b, generic, depth)
}

func appendJSONMap(b []byte, m map[string]any, depth int) ([]byte, error) {
	var small [16]string
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendPyString(b, k)
		b = append(b, ": "...)
		var err error
		if b, err = appendJSON(b, m[k], depth+1); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

func appendTagged(b []byte, marker, value string) []byte {
	b = append(b, `{"__type__": "`...)
	b = append(b, marker...)
	b = append(b, `", "__value__": `...)
	b = appendPyString(b, value)
	return append(b, '}')
}

// appendPyString writes s as json.dumps(ensure_ascii=True) does: ASCII
// only, lowercase \uXXXX escapes, surrogate pairs above the BMP.
func appendPyString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		// Copy the run that needs no escaping in one append: most strings
		// (ids, task names) are all of it.
		start := i
		for i < len(s) && s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\' {
			i++
		}
		b = append(b, s[start:i]...)
		if i == len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"':
				b = append(b, '\\', '"')
			case c == '\\':
				b = append(b, '\\', '\\')
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c == '\b':
				b = append(b, '\\', 'b')
			case c == '\f':
				b = append(b, '\\', 'f')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if r >= 0x10000 {
			r -= 0x10000
			hi, lo := 0xd800+(r>>10), 0xdc00+(r&0x3ff)
			b = append(b, '\\', 'u', hex[hi>>12], hex[hi>>8&15], hex[hi>>4&15], hex[hi&15])
			b = append(b, '\\', 'u', hex[lo>>12], hex[lo>>8&15], hex[lo>>4&15], hex[lo&15])
			continue
		}
		b = append(b, '\\', 'u', hex[r>>12], hex[r>>8&15], hex[r>>4&15], hex[r&15])
	}
	return append(b, '"')
}

// appendPyFloat writes f as Python's float.__repr__: shortest round-trip
// digits, scientific notation when the exponent is < -4 or >= 16, and a
// trailing ".0" on integral values.
func appendPyFloat(b []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, "NaN"...)
	case math.IsInf(f, 1):
		return append(b, "Infinity"...)
	case math.IsInf(f, -1):
		return append(b, "-Infinity"...)
	}
	var tmp [32]byte
	e := strconv.AppendFloat(tmp[:0], f, 'e', -1, 64) // -d.ddde±XX
	neg := e[0] == '-'
	if neg {
		e = e[1:]
	}
	mant, exp := e, 0
	for i, c := range e {
		if c == 'e' {
			mant = e[:i]
			exp, _ = strconv.Atoi(string(e[i+1:]))
			break
		}
	}
	digits := make([]byte, 0, len(mant))
	for _, c := range mant {
		if c != '.' {
			digits = append(digits, c)
		}
	}
	if neg {
		b = append(b, '-')
	}
	if exp < -4 || exp >= 16 {
		b = append(b, digits[0])
		if len(digits) > 1 {
			b = append(b, '.')
			b = append(b, digits[1:]...)
		}
		b = append(b, 'e')
		if exp < 0 {
			b = append(b, '-')
			exp = -exp
		} else {
			b = append(b, '+')
		}
		return appendPadded(b, exp, 2)
	}
	if exp < 0 {
		b = append(b, '0', '.')
		for i := 0; i < -exp-1; i++ {
			b = append(b, '0')
		}
		return append(b, digits...)
	}
	if len(digits) <= exp+1 {
		b = append(b, digits...)
		for i := len(digits); i <= exp; i++ {
			b = append(b, '0')
		}
		return append(b, '.', '0')
	}
	b = append(b, digits[:exp+1]...)
	b = append(b, '.')
	return append(b, digits[exp+1:]...)
}
