package protocol

import (
	"bytes"
	"testing"
)

// Seeds come from the Celery captures and vectors; `go test -fuzz` then
// mutates them. Every decoder must return an error, never panic, on any input.

func FuzzUnmarshalJSON(f *testing.F) {
	for _, v := range loadVectors(f) {
		if v.wire.ContentType == ContentTypeJSON && v.wire.Headers["compression"] == nil {
			f.Add(v.wire.Body)
		}
	}
	f.Add([]byte(`{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}`))
	f.Add([]byte(`[NaN, -Infinity, 1e999, "\ud83d\ude00", 123456789012345678901234567890]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := UnmarshalJSON(data, 0)
		if err != nil {
			return
		}
		// Whatever decodes must encode, and decode again to the same thing.
		out, err := MarshalJSON(v)
		if err != nil {
			t.Fatalf("re-encode %q: %v", data, err)
		}
		v2, err := UnmarshalJSON(out, 0)
		if err != nil {
			t.Fatalf("re-decode %q: %v", out, err)
		}
		out2, err := MarshalJSON(v2)
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("unstable round trip:\n%s\n%s", out, out2)
		}
	})
}

func FuzzUnmarshalMsgpack(f *testing.F) {
	for _, v := range loadVectors(f) {
		if v.wire.ContentType == ContentTypeMsgpack {
			f.Add(v.wire.Body)
		}
	}
	mp, _ := MarshalMsgpack(map[string]any{"a": []any{int64(1), -1.5, "x", []byte{1}, nil, true}})
	f.Add(mp)
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := UnmarshalMsgpack(data, 0)
		if err != nil {
			return
		}
		if _, err := MarshalMsgpack(v); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

func FuzzParseEnvelope(f *testing.F) {
	for _, c := range loadCaptures(f) {
		f.Add([]byte(c.raw))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := ParseEnvelope(data, 1<<20)
		if err != nil {
			return
		}
		_, _ = Decode(&env.Raw)
	})
}

// FuzzDecode mutates body, content type and compression of real messages.
func FuzzDecode(f *testing.F) {
	for _, v := range loadVectors(f) {
		comp, _ := v.wire.Headers["compression"].(string)
		_, isV2 := v.wire.Headers["task"]
		f.Add(v.wire.Body, v.wire.ContentType, comp, isV2)
	}
	d := Decoder{MaxBodySize: 1 << 20}
	f.Fuzz(func(t *testing.T, body []byte, contentType, compression string, v2 bool) {
		h := map[string]any{}
		if v2 {
			h["task"], h["id"] = "t", "id"
		}
		if compression != "" {
			h["compression"] = compression
		}
		m, err := d.Decode(&Raw{ContentType: contentType, ContentEncoding: "utf-8", Headers: h, Body: body})
		if err != nil {
			return
		}
		// A decoded message must re-encode.
		if _, err := Encode(m); err != nil && m.Task != "" {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

func FuzzDecompress(f *testing.F) {
	for _, name := range []string{"zlib", "bzip2", "lzma", "brotli", "zstd"} {
		_, b, _ := Compress(name, []byte(`[[1, 2], {}, null]`))
		f.Add(name, b)
	}
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		out, err := Decompress(name, data, 1<<16)
		if err == nil && len(out) > 1<<16 {
			t.Fatalf("limit ignored: %d bytes", len(out))
		}
	})
}
