package protocol

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/vmihailenco/msgpack/v5"
)

// UnmarshalMsgpack decodes a msgpack document as Python's msgpack.unpackb
// (raw=False) gives it to kombu. Map keys that are integers become decimal
// strings, as they would after a JSON round trip; the timestamp extension
// becomes time.Time; other extensions are refused. maxDepth <= 0 means
// DefaultMaxDepth.
//
// This decoder is hand-written rather than vmihailenco/msgpack's because
// hostile input must not be able to recurse without bound or make it
// allocate more than the input could hold.
func UnmarshalMsgpack(data []byte, maxDepth int) (any, error) {
	if maxDepth <= 0 {
		maxDepth = DefaultMaxDepth
	}
	d := mpDecoder{data: data, maxDepth: maxDepth}
	v, err := d.value()
	if err != nil {
		return nil, err
	}
	if d.pos != len(data) {
		return nil, d.errf("trailing data")
	}
	return v, nil
}

type mpDecoder struct {
	data     []byte
	pos      int
	depth    int
	maxDepth int
}

func (d *mpDecoder) errf(format string, args ...any) error {
	return &SyntaxError{"msgpack", d.pos, fmt.Sprintf(format, args...)}
}

func (d *mpDecoder) take(n int) ([]byte, error) {
	if n < 0 || len(d.data)-d.pos < n {
		return nil, d.errf("unexpected end of input")
	}
	b := d.data[d.pos : d.pos+n]
	d.pos += n
	return b, nil
}

func (d *mpDecoder) uint(n int) (uint64, error) {
	b, err := d.take(n)
	if err != nil {
		return 0, err
	}
	switch n {
	case 1:
		return uint64(b[0]), nil
	case 2:
		return uint64(binary.BigEndian.Uint16(b)), nil
	case 4:
		return uint64(binary.BigEndian.Uint32(b)), nil
	}
	return binary.BigEndian.Uint64(b), nil
}

func (d *mpDecoder) value() (any, error) {
	b, err := d.take(1)
	if err != nil {
		return nil, err
	}
	c := b[0]
	switch {
	case c <= 0x7f:
		return int64(c), nil
	case c >= 0xe0:
		return int64(int8(c)), nil
	case c >= 0x80 && c <= 0x8f:
		return d.mapN(int(c & 0x0f))
	case c >= 0x90 && c <= 0x9f:
		return d.arrayN(int(c & 0x0f))
	case c >= 0xa0 && c <= 0xbf:
		return d.strN(int(c & 0x1f))
	}
	switch c {
	case 0xc0:
		return nil, nil
	case 0xc2:
		return false, nil
	case 0xc3:
		return true, nil
	case 0xc4, 0xc5, 0xc6: // bin 8/16/32
		n, err := d.uint(1 << (c - 0xc4))
		if err != nil {
			return nil, err
		}
		p, err := d.take(int(min(n, math.MaxInt32)))
		if err != nil {
			return nil, err
		}
		return bytes.Clone(p), nil
	case 0xc7, 0xc8, 0xc9: // ext 8/16/32
		n, err := d.uint(1 << (c - 0xc7))
		if err != nil {
			return nil, err
		}
		return d.ext(int(min(n, math.MaxInt32)))
	case 0xca:
		u, err := d.uint(4)
		return float64(math.Float32frombits(uint32(u))), err
	case 0xcb:
		u, err := d.uint(8)
		return math.Float64frombits(u), err
	case 0xcc, 0xcd, 0xce, 0xcf:
		u, err := d.uint(1 << (c - 0xcc))
		if err != nil {
			return nil, err
		}
		if u > math.MaxInt64 {
			return new(big.Int).SetUint64(u), nil
		}
		return int64(u), nil
	case 0xd0:
		u, err := d.uint(1)
		return int64(int8(u)), err
	case 0xd1:
		u, err := d.uint(2)
		return int64(int16(u)), err
	case 0xd2:
		u, err := d.uint(4)
		return int64(int32(u)), err
	case 0xd3:
		u, err := d.uint(8)
		return int64(u), err
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1..16
		return d.ext(1 << (c - 0xd4))
	case 0xd9, 0xda, 0xdb:
		n, err := d.uint(1 << (c - 0xd9))
		if err != nil {
			return nil, err
		}
		return d.strN(int(min(n, math.MaxInt32)))
	case 0xdc, 0xdd:
		n, err := d.uint(2 << (c - 0xdc))
		if err != nil {
			return nil, err
		}
		return d.arrayN(int(min(n, math.MaxInt32)))
	case 0xde, 0xdf:
		n, err := d.uint(2 << (c - 0xde))
		if err != nil {
			return nil, err
		}
		return d.mapN(int(min(n, math.MaxInt32)))
	}
	d.pos--
	return nil, d.errf("invalid type byte 0x%02x", c)
}

func (d *mpDecoder) strN(n int) (any, error) {
	p, err := d.take(n)
	if err != nil {
		return nil, err
	}
	return string(p), nil
}

func (d *mpDecoder) enter(n, minSize int) error {
	d.depth++
	if d.depth > d.maxDepth {
		return fmt.Errorf("%w: more than %d levels at offset %d", ErrTooDeep, d.maxDepth, d.pos)
	}
	// Every element takes at least minSize bytes: refuse counts the
	// remaining input cannot hold before allocating for them.
	if n > (len(d.data)-d.pos)/minSize {
		return d.errf("length %d exceeds input", n)
	}
	return nil
}

func (d *mpDecoder) arrayN(n int) (any, error) {
	if err := d.enter(n, 1); err != nil {
		return nil, err
	}
	arr := make([]any, n)
	for i := range arr {
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		arr[i] = v
	}
	d.depth--
	return arr, nil
}

func (d *mpDecoder) mapN(n int) (any, error) {
	if err := d.enter(n, 2); err != nil {
		return nil, err
	}
	m := make(map[string]any, n)
	for range n {
		kpos := d.pos
		k, err := d.value()
		if err != nil {
			return nil, err
		}
		var key string
		switch kk := k.(type) {
		case string:
			key = kk
		case int64:
			key = strconv.FormatInt(kk, 10)
		case []byte:
			key = string(kk)
		default:
			d.pos = kpos
			return nil, d.errf("map key of type %T", k)
		}
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		m[key] = v
	}
	d.depth--
	return m, nil
}

func (d *mpDecoder) ext(n int) (any, error) {
	t, err := d.take(1)
	if err != nil {
		return nil, err
	}
	p, err := d.take(n)
	if err != nil {
		return nil, err
	}
	if int8(t[0]) != -1 {
		return nil, d.errf("unsupported extension type %d", int8(t[0]))
	}
	switch n {
	case 4:
		return time.Unix(int64(binary.BigEndian.Uint32(p)), 0).UTC(), nil
	case 8:
		u := binary.BigEndian.Uint64(p)
		return time.Unix(int64(u&0x3ffffffff), int64(u>>34)).UTC(), nil
	case 12:
		ns := binary.BigEndian.Uint32(p)
		return time.Unix(int64(binary.BigEndian.Uint64(p[4:])), int64(ns)).UTC(), nil
	}
	return nil, d.errf("invalid timestamp extension length %d", n)
}

// MarshalMsgpack encodes v as kombu's msgpack serializer would
// (use_bin_type=True). msgpack has no datetime, Decimal or UUID, and Python
// could not pack them either; they are sent as their ISO or text form.
func MarshalMsgpack(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := newMsgpackEncoder(&buf)
	if err := encodeMsgpack(enc, v, 0); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func newMsgpackEncoder(buf *bytes.Buffer) *msgpack.Encoder {
	enc := msgpack.NewEncoder(buf)
	enc.UseCompactInts(true) // as Python packs ints: smallest format
	enc.SetSortMapKeys(true)
	return enc
}

func encodeMsgpack(enc *msgpack.Encoder, v any, depth int) error {
	if depth > DefaultMaxDepth*4 {
		return fmt.Errorf("%w: encoding more than %d levels", ErrTooDeep, DefaultMaxDepth*4)
	}
	switch x := v.(type) {
	case []any:
		if err := enc.EncodeArrayLen(len(x)); err != nil {
			return err
		}
		for _, e := range x {
			if err := encodeMsgpack(enc, e, depth+1); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		if err := enc.EncodeMapLen(len(x)); err != nil {
			return err
		}
		keys := sortedKeys(x)
		for _, k := range keys {
			if err := enc.EncodeString(k); err != nil {
				return err
			}
			if err := encodeMsgpack(enc, x[k], depth+1); err != nil {
				return err
			}
		}
		return nil
	case nil, bool, string, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64, []byte:
		return enc.Encode(x)
	case *big.Int:
		if x.IsInt64() {
			return enc.EncodeInt(x.Int64())
		}
		if x.IsUint64() {
			return enc.EncodeUint(x.Uint64())
		}
		return fmt.Errorf("protocol: integer %s does not fit msgpack's 64 bits", x)
	case time.Time:
		return enc.EncodeString(FormatISO(x))
	case Date:
		return enc.EncodeString(x.String())
	case TimeOfDay:
		return enc.EncodeString(x.String())
	case Decimal:
		return enc.EncodeString(string(x))
	case uuid.UUID:
		return enc.EncodeString(x.String())
	case Signature:
		return encodeMsgpack(enc, x.Map(), depth)
	case *Signature:
		if x == nil {
			return enc.EncodeNil()
		}
		return encodeMsgpack(enc, x.Map(), depth)
	case []Signature:
		if x == nil {
			return enc.EncodeNil()
		}
		if err := enc.EncodeArrayLen(len(x)); err != nil {
			return err
		}
		for i := range x {
			if err := encodeMsgpack(enc, x[i].Map(), depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	// Other types take the same path as in JSON, so one struct definition
	// (json tags) serves both serializers.
	raw, err := MarshalJSON(v)
	if err != nil {
		return err
	}
	generic, err := UnmarshalJSON(raw, DefaultMaxDepth*4)
	if err != nil {
		return err
	}
	return encodeMsgpack(enc, generic, depth)
}
