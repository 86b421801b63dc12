package protocol

import (
	"encoding/base64"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/google/uuid"
)

// DefaultMaxDepth bounds nesting of arrays and objects. Python's own json
// module stops near 1,000 levels; Celery payloads never get close to this.
const DefaultMaxDepth = 128

// UnmarshalJSON decodes kombu JSON (see the package doc for the value
// mapping). maxDepth <= 0 means DefaultMaxDepth.
func UnmarshalJSON(data []byte, maxDepth int) (any, error) {
	if maxDepth <= 0 {
		maxDepth = DefaultMaxDepth
	}
	if !utf8.Valid(data) {
		return nil, &SyntaxError{"json", 0, "not valid UTF-8"}
	}
	d := jsonDecoder{data: data, maxDepth: maxDepth}
	d.skipSpace()
	v, err := d.value()
	if err != nil {
		return nil, err
	}
	d.skipSpace()
	if d.pos != len(d.data) {
		return nil, d.errf("trailing data")
	}
	return v, nil
}

type jsonDecoder struct {
	data     []byte
	pos      int
	depth    int
	maxDepth int
}

func (d *jsonDecoder) errf(format string, args ...any) error {
	return &SyntaxError{"json", d.pos, fmt.Sprintf(format, args...)}
}

func (d *jsonDecoder) skipSpace() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *jsonDecoder) literal(word string, v any) (any, error) {
	if len(d.data)-d.pos < len(word) || string(d.data[d.pos:d.pos+len(word)]) != word {
		return nil, d.errf("invalid literal")
	}
	d.pos += len(word)
	return v, nil
}

func (d *jsonDecoder) value() (any, error) {
	if d.pos >= len(d.data) {
		return nil, d.errf("unexpected end of input")
	}
	switch c := d.data[d.pos]; c {
	case '{':
		return d.object()
	case '[':
		return d.array()
	case '"':
		return d.str()
	case 't':
		return d.literal("true", true)
	case 'f':
		return d.literal("false", false)
	case 'n':
		return d.literal("null", nil)
	case 'N': // Python's json writes NaN and Infinity (allow_nan=True).
		return d.literal("NaN", math.NaN())
	case 'I':
		return d.literal("Infinity", math.Inf(1))
	default:
		if c == '-' && d.pos+1 < len(d.data) && d.data[d.pos+1] == 'I' {
			d.pos++
			return d.literal("Infinity", math.Inf(-1))
		}
		if c == '-' || (c >= '0' && c <= '9') {
			return d.number()
		}
		return nil, d.errf("unexpected character %q", c)
	}
}

func (d *jsonDecoder) enter() error {
	d.depth++
	if d.depth > d.maxDepth {
		return fmt.Errorf("%w: more than %d levels at offset %d", ErrTooDeep, d.maxDepth, d.pos)
	}
	return nil
}

func (d *jsonDecoder) array() (any, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	d.pos++ // '['
	d.skipSpace()
	arr := []any{}
	if d.pos < len(d.data) && d.data[d.pos] == ']' {
		d.pos++
		d.depth--
		return arr, nil
	}
	for {
		d.skipSpace()
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
		d.skipSpace()
		if d.pos >= len(d.data) {
			return nil, d.errf("unexpected end of input in array")
		}
		switch d.data[d.pos] {
		case ',':
			d.pos++
		case ']':
			d.pos++
			d.depth--
			return arr, nil
		default:
			return nil, d.errf("expected ',' or ']' in array")
		}
	}
}

func (d *jsonDecoder) object() (any, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	d.pos++ // '{'
	d.skipSpace()
	obj := map[string]any{}
	if d.pos < len(d.data) && d.data[d.pos] == '}' {
		d.pos++
		d.depth--
		return obj, nil
	}
	for {
		d.skipSpace()
		if d.pos >= len(d.data) || d.data[d.pos] != '"' {
			return nil, d.errf("expected string key in object")
		}
		k, v, err := d.member()
		if err != nil {
			return nil, err
		}
		obj[k] = v
		d.skipSpace()
		if d.pos >= len(d.data) {
			return nil, d.errf("unexpected end of input in object")
		}
		switch d.data[d.pos] {
		case ',':
			d.pos++
		case '}':
			d.pos++
			d.depth--
			if len(obj) == 2 {
				return d.kombuTag(obj)
			}
			return obj, nil
		default:
			return nil, d.errf("expected ',' or '}' in object")
		}
	}
}

// member reads `"key": value` with the cursor on the key's quote.
func (d *jsonDecoder) member() (string, any, error) {
	k, err := d.key()
	if err != nil {
		return "", nil, err
	}
	d.skipSpace()
	if d.pos >= len(d.data) || d.data[d.pos] != ':' {
		return "", nil, d.errf("expected ':' after object key")
	}
	d.pos++
	d.skipSpace()
	v, err := d.value()
	return k, v, err
}

// key reads an object key, returning the keys Celery repeats in every
// message without allocating.
func (d *jsonDecoder) key() (string, error) {
	end := d.pos + 1
	for end < len(d.data) && d.data[end] != '"' && d.data[end] != '\\' && d.data[end] >= 0x20 {
		end++
	}
	if end < len(d.data) && d.data[end] == '"' {
		if k, ok := internKey(d.data[d.pos+1 : end]); ok {
			d.pos = end + 1
			return k, nil
		}
	}
	v, err := d.str()
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

func internKey(b []byte) (string, bool) {
	switch string(b) { // the compiler does not allocate for this conversion
	case "callbacks":
		return "callbacks", true
	case "errbacks":
		return "errbacks", true
	case "chain":
		return "chain", true
	case "chord":
		return "chord", true
	case "task":
		return "task", true
	case "args":
		return "args", true
	case "kwargs":
		return "kwargs", true
	case "options":
		return "options", true
	case "subtask_type":
		return "subtask_type", true
	case "immutable":
		return "immutable", true
	case "task_id":
		return "task_id", true
	case "reply_to":
		return "reply_to", true
	case "group_id":
		return "group_id", true
	case "group_index":
		return "group_index", true
	case "__type__":
		return "__type__", true
	case "__value__":
		return "__value__", true
	}
	return "", false
}

// kombuTag converts {"__type__": marker, "__value__": v} as kombu's
// object_hook does; like kombu, an unknown marker fails the decode.
func (d *jsonDecoder) kombuTag(obj map[string]any) (any, error) {
	marker, ok1 := obj["__type__"].(string)
	raw, ok2 := obj["__value__"]
	if !ok1 || !ok2 {
		return obj, nil
	}
	s, isStr := raw.(string)
	bad := func() (any, error) {
		return nil, d.errf("invalid value for kombu type %q", marker)
	}
	switch marker {
	case "datetime":
		if !isStr {
			return bad()
		}
		t, err := ParseISO(s)
		if err != nil {
			return bad()
		}
		return t, nil
	case "date":
		if !isStr {
			return bad()
		}
		v, err := parseDate(s)
		if err != nil {
			return bad()
		}
		return v, nil
	case "time":
		if !isStr {
			return bad()
		}
		v, err := parseTimeOfDay(s)
		if err != nil {
			return bad()
		}
		return v, nil
	case "decimal":
		if !isStr {
			return bad()
		}
		return Decimal(s), nil
	case "uuid":
		m, ok := raw.(map[string]any)
		hex, _ := m["hex"].(string)
		if !ok {
			// Tolerate a bare string, as older producers wrote.
			hex = s
		}
		u, err := uuid.Parse(hex)
		if err != nil {
			return bad()
		}
		return u, nil
	case "bytes":
		if !isStr {
			return bad()
		}
		return []byte(s), nil
	case "base64":
		if !isStr {
			return bad()
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return bad()
		}
		return b, nil
	}
	return nil, d.errf("unsupported kombu type %q", marker)
}

func (d *jsonDecoder) number() (any, error) {
	start := d.pos
	isFloat := false
	if d.data[d.pos] == '-' {
		d.pos++
	}
	digits := func() int {
		n := 0
		for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' {
			d.pos++
			n++
		}
		return n
	}
	intStart := d.pos
	if n := digits(); n == 0 {
		return nil, d.errf("invalid number")
	} else if n > 1 && d.data[intStart] == '0' {
		return nil, d.errf("leading zero in number")
	}
	if d.pos < len(d.data) && d.data[d.pos] == '.' {
		isFloat = true
		d.pos++
		if digits() == 0 {
			return nil, d.errf("invalid number fraction")
		}
	}
	if d.pos < len(d.data) && (d.data[d.pos] == 'e' || d.data[d.pos] == 'E') {
		isFloat = true
		d.pos++
		if d.pos < len(d.data) && (d.data[d.pos] == '+' || d.data[d.pos] == '-') {
			d.pos++
		}
		if digits() == 0 {
			return nil, d.errf("invalid number exponent")
		}
	}
	text := d.data[start:d.pos]
	if isFloat {
		f, err := strconv.ParseFloat(string(text), 64)
		if err != nil && !isRangeErr(err) {
			return nil, d.errf("invalid number")
		}
		return f, nil // out-of-range floats become ±Inf, as in Python
	}
	if len(text) <= 18 { // fast path: fits in int64 without checking
		var n int64
		neg := text[0] == '-'
		for _, c := range text {
			if c != '-' {
				n = n*10 + int64(c-'0')
			}
		}
		if neg {
			n = -n
		}
		return n, nil
	}
	if n, err := strconv.ParseInt(string(text), 10, 64); err == nil {
		return n, nil
	}
	if len(text) > 4300 { // CPython's int/str conversion limit
		return nil, d.errf("integer literal too long")
	}
	b, ok := new(big.Int).SetString(string(text), 10)
	if !ok {
		return nil, d.errf("invalid integer")
	}
	return b, nil
}

func isRangeErr(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

func (d *jsonDecoder) str() (any, error) {
	d.pos++ // opening quote
	start := d.pos
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		if c == '"' {
			s := string(d.data[start:d.pos])
			d.pos++
			return s, nil
		}
		if c == '\\' {
			return d.strSlow(start)
		}
		if c < 0x20 {
			return nil, d.errf("control character in string")
		}
		d.pos++
	}
	return nil, d.errf("unterminated string")
}

func (d *jsonDecoder) strSlow(start int) (any, error) {
	buf := append([]byte(nil), d.data[start:d.pos]...)
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			d.pos++
			return string(buf), nil
		case c < 0x20:
			return nil, d.errf("control character in string")
		case c != '\\':
			buf = append(buf, c)
			d.pos++
			continue
		}
		d.pos++
		if d.pos >= len(d.data) {
			break
		}
		e := d.data[d.pos]
		d.pos++
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := d.hex4()
			if !ok {
				return nil, d.errf("invalid \\u escape")
			}
			if utf16.IsSurrogate(r) {
				// A pair becomes one rune; a lone surrogate (legal in
				// Python) becomes U+FFFD as Go strings cannot hold it.
				save := d.pos
				if d.pos+1 < len(d.data) && d.data[d.pos] == '\\' && d.data[d.pos+1] == 'u' {
					d.pos += 2
					if r2, ok := d.hex4(); ok {
						if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
							r = dec
							buf = utf8.AppendRune(buf, r)
							continue
						}
					}
				}
				d.pos = save
				r = utf8.RuneError
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return nil, d.errf("invalid escape %q", e)
		}
	}
	return nil, d.errf("unterminated string")
}

func (d *jsonDecoder) hex4() (rune, bool) {
	if len(d.data)-d.pos < 4 {
		return 0, false
	}
	var r rune
	for _, c := range d.data[d.pos : d.pos+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	d.pos += 4
	return r, true
}

// bodyV2 parses a protocol v2 JSON body, [args, kwargs, embed], into m
// without building the intermediate embed map.
func (d *jsonDecoder) bodyV2(m *Message) error {
	if !utf8.Valid(d.data) {
		return &SyntaxError{"json", 0, "not valid UTF-8"}
	}
	bad := func(what string) error {
		return fmt.Errorf("%w: v2 body must be [args, kwargs, embed]: %s", ErrMalformed, what)
	}
	expect := func(c byte) bool {
		d.skipSpace()
		if d.pos < len(d.data) && d.data[d.pos] == c {
			d.pos++
			return true
		}
		return false
	}
	d.skipSpace()
	if d.pos >= len(d.data) || d.data[d.pos] != '[' {
		return bad("not an array")
	}
	if err := d.enter(); err != nil {
		return err
	}
	d.pos++
	d.skipSpace()
	args, err := d.value()
	if err != nil {
		return err
	}
	if m.Args, err = asList("args", args); err != nil {
		return err
	}
	if !expect(',') {
		return bad("missing kwargs")
	}
	d.skipSpace()
	kwargs, err := d.value()
	if err != nil {
		return err
	}
	if m.Kwargs, err = asMap("kwargs", kwargs); err != nil {
		return err
	}
	if !expect(',') {
		return bad("missing embed")
	}
	d.skipSpace()
	if d.pos < len(d.data) && d.data[d.pos] == '{' {
		if err := d.embed(m); err != nil {
			return err
		}
	} else if v, err := d.value(); err != nil {
		return err
	} else if v != nil {
		return fieldErr("embed", v, "an object")
	}
	if !expect(']') {
		return bad("more than 3 elements")
	}
	d.skipSpace()
	if d.pos != len(d.data) {
		return d.errf("trailing data")
	}
	return nil
}

func (d *jsonDecoder) embed(m *Message) error {
	if err := d.enter(); err != nil {
		return err
	}
	d.pos++ // '{'
	d.skipSpace()
	if d.pos < len(d.data) && d.data[d.pos] == '}' {
		d.pos++
		d.depth--
		return nil
	}
	for {
		d.skipSpace()
		if d.pos >= len(d.data) || d.data[d.pos] != '"' {
			return d.errf("expected string key in embed")
		}
		k, v, err := d.member()
		if err != nil {
			return err
		}
		switch k {
		case "callbacks":
			m.Callbacks, err = SignaturesFrom(v)
		case "errbacks":
			m.Errbacks, err = SignaturesFrom(v)
		case "chain":
			m.Chain, err = SignaturesFrom(v)
		case "chord":
			if v != nil {
				var s Signature
				s, err = SignatureFrom(v)
				m.Chord = &s
			}
		}
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		d.skipSpace()
		if d.pos >= len(d.data) {
			return d.errf("unexpected end of input in embed")
		}
		switch d.data[d.pos] {
		case ',':
			d.pos++
		case '}':
			d.pos++
			d.depth--
			return nil
		default:
			return d.errf("expected ',' or '}' in embed")
		}
	}
}
