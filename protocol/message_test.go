package protocol

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func simpleMessage() *Message {
	return &Message{
		ID: "11111111-1111-1111-1111-111111111111", Task: "proj.add",
		Args: []any{int64(2), int64(2)}, Kwargs: map[string]any{"z": int64(1)},
		Origin:     "gen13553@vm",
		Properties: Properties{ReplyTo: "a0420ce6-9749-3314-bef0-7c24336e25a6"},
	}
}

// The JSON body Go writes for the captured producer-simple message is the
// exact byte string Python wrote.
func TestEncodeBodyIsByteIdenticalToCelery(t *testing.T) {
	raw, err := Encode(simpleMessage())
	if err != nil {
		t.Fatal(err)
	}
	want := `[[2, 2], {"z": 1}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`
	if string(raw.Body) != want {
		t.Errorf("body\n got  %s\n want %s", raw.Body, want)
	}
	if raw.Headers["argsrepr"] != "(2, 2)" || raw.Headers["kwargsrepr"] != "{'z': 1}" {
		t.Errorf("reprs = %v %v", raw.Headers["argsrepr"], raw.Headers["kwargsrepr"])
	}
	for _, k := range []string{"lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries", "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps"} {
		if _, ok := raw.Headers[k]; !ok {
			t.Errorf("header %q missing", k)
		}
	}
	if raw.Properties.CorrelationID != raw.Headers["id"] || raw.Properties.DeliveryMode != 2 {
		t.Errorf("properties = %+v", raw.Properties)
	}
	// The msgpack body matches the captured Python bytes too.
	mp, err := (&Encoder{Serializer: "msgpack"}).Encode(&Message{ID: "mp1", Task: "proj.add", Args: []any{int64(1), int64(2)}})
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(mp.Body); got != "939201028084a963616c6c6261636b73c0a86572726261636b73c0a5636861696ec0a563686f7264c0" {
		t.Errorf("msgpack body %s", got)
	}
}

func fullMessage() *Message {
	gi := 1
	chordBody := Signature{Task: "proj.tsum", Options: map[string]any{"task_id": "body1", "group_id": "g1"}}
	return &Message{
		ID: "full-1", Task: "proj.add", Args: []any{int64(1), "é", 1.5, nil, []any{true}},
		Kwargs:  map[string]any{"big": new(big.Int).Lsh(big.NewInt(1), 70), "d": Decimal("1.10"), "when": time.Date(2030, 1, 2, 3, 4, 5, 678901000, time.UTC)},
		ETA:     time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		Expires: time.Date(2030, 1, 2, 4, 4, 5, 500000000, time.UTC),
		Retries: 3, TimeLimit: TimeLimit{Hard: 30 * time.Second, Soft: 1500 * time.Millisecond},
		RootID: "root", ParentID: "parent", Group: "g1", GroupIndex: &gi, Shadow: "shadowed",
		IgnoreResult: true, Lang: "go", Origin: "gen1@host", ArgsRepr: "(1, 'é')", KwargsRepr: "{}",
		ReplacedTaskNesting: 1, StampedHeaders: []string{"s"}, Stamps: map[string]any{"s": "v"},
		Headers:   map[string]any{"x-custom": int64(1), "periodic_task_name": "foo"},
		Callbacks: []Signature{{Task: "proj.add", Args: []any{int64(10)}, Options: map[string]any{"task_id": "cb1"}}},
		Errbacks:  []Signature{{Task: "proj.add", Args: []any{int64(0), int64(0)}, Immutable: true}},
		Chain: []Signature{
			{Task: "celery.chord", Kwargs: map[string]any{"header": Signature{Task: "celery.group", SubtaskType: SubtaskGroup, Kwargs: map[string]any{"tasks": []Signature{{Task: "a"}, {Task: "b"}}}}, "body": Signature{Task: "c"}, "kwargs": map[string]any{}}, SubtaskType: SubtaskChord},
			{Task: "proj.add", Args: []any{int64(4)}, Extra: map[string]any{"chord_size": int64(2)}},
		},
		Chord:      &chordBody,
		Properties: Properties{CorrelationID: "full-1", ReplyTo: "r", DeliveryMode: 2, Priority: 7},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, enc := range []Encoder{
		{}, {Serializer: "msgpack"}, {Compression: "gzip"}, {Compression: "bzip2"},
		{Compression: "lzma"}, {Compression: "brotli"}, {Compression: "zstd"},
		{Serializer: "msgpack", Compression: "zlib"}, {Protocol: 1},
	} {
		t.Run(enc.Serializer+"/"+enc.Compression+"/"+string(rune('0'+enc.Protocol)), func(t *testing.T) {
			in := fullMessage()
			if enc.Serializer == "msgpack" {
				in.Kwargs["big"] = int64(math.MaxInt64)
			}
			raw, err := enc.Encode(in)
			if err != nil {
				t.Fatal(err)
			}
			out, err := Decode(raw)
			if err != nil {
				t.Fatal(err)
			}
			want := in.RequestDict()
			want["protocol"] = int64(2)
			want["content_type"], want["content_encoding"] = raw.ContentType, raw.ContentEncoding
			want["compression"] = nilIfEmpty(out.Compression)
			if enc.Compression != "" && out.Compression == "" {
				t.Error("compression lost")
			}
			if enc.Serializer == "msgpack" { // msgpack has no kombu types: they travel as text
				want["kwargs"] = map[string]any{"big": in.Kwargs["big"], "d": "1.10", "when": "2030-01-02T03:04:05.678901+00:00"}
				want["chain"] = roundTripMsgpack(t, want["chain"])
			}
			if enc.Protocol == 1 { // v1 carries none of these
				for _, k := range []string{"shadow", "origin", "argsrepr", "kwargsrepr", "lang", "parent_id", "stamped_headers"} {
					want[k] = nil
				}
				want["protocol"], want["ignore_result"], want["replaced_task_nesting"] = int64(1), false, int64(0)
				want["root_id"], want["stamps"], want["chain"] = nil, map[string]any{}, nil
			}
			assertSameView(t, out.RequestDict(), want)
		})
	}
}

func roundTripMsgpack(t *testing.T, v any) any {
	b, err := MarshalMsgpack(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := UnmarshalMsgpack(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMsgpackBigIntRefused(t *testing.T) {
	_, err := (&Encoder{Serializer: "msgpack"}).Encode(fullMessage())
	if err == nil || !strings.Contains(err.Error(), "64 bits") {
		t.Errorf("err = %v, want a 64-bit overflow error", err)
	}
}

func TestUnmarshalMsgpack(t *testing.T) {
	// Cross-check against vmihailenco/msgpack's encoder for every type.
	in := map[string]any{
		"i": int64(-5), "u": uint64(math.MaxUint64), "f": 1.25, "s": "é", "b": []byte{0, 1}, "nb": []byte{0xff},
		"n": nil, "t": true, "a": []any{int64(1), "x", map[string]any{"k": []any{}}},
		"big": int64(math.MinInt64),
	}
	data, err := msgpack.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalMsgpack(data, 0)
	if err != nil {
		t.Fatal(err)
	}
	gj, _ := MarshalJSON(got)
	want := `{"a": [1, "x", {"k": []}], "b": {"__type__": "bytes", "__value__": "\u0000\u0001"}, "big": -9223372036854775808, "f": 1.25, "i": -5, "n": null, "nb": {"__type__": "base64", "__value__": "/w=="}, "s": "\u00e9", "t": true, "u": 18446744073709551615}`
	if string(gj) != want {
		t.Errorf("got  %s\nwant %s", gj, want)
	}
	ts, _ := msgpack.Marshal(time.Unix(1700000000, 5).UTC())
	if v, err := UnmarshalMsgpack(ts, 0); err != nil || !v.(time.Time).Equal(time.Unix(1700000000, 5)) {
		t.Errorf("timestamp ext = %v, %v", v, err)
	}
	intKey := []byte{0x81, 0x01, 0xa1, 'x'} // {1: "x"}
	if v, err := UnmarshalMsgpack(intKey, 0); err != nil || v.(map[string]any)["1"] != "x" {
		t.Errorf("int key = %v, %v", v, err)
	}
}

func TestUnmarshalMsgpackHostile(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"deep", bytes.Repeat([]byte{0x91}, DefaultMaxDepth+1), ErrTooDeep},
		{"array32 claims 4G", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}, ErrMalformed},
		{"map32 claims 4G", []byte{0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0}, ErrMalformed},
		{"str32 truncated", []byte{0xdb, 0x00, 0x10, 0x00, 0x00, 'a'}, ErrMalformed},
		{"reserved byte", []byte{0xc1}, ErrMalformed},
		{"unknown ext", []byte{0xd4, 0x05, 0x00}, ErrMalformed},
		{"trailing", []byte{0xc0, 0xc0}, ErrMalformed},
		{"map key array", []byte{0x81, 0x90, 0xc0}, ErrMalformed},
		{"empty", nil, ErrMalformed},
	}
	for _, tt := range tests {
		if _, err := UnmarshalMsgpack(tt.in, 0); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := Encode(simpleMessage())
	with := func(f func(r *Raw)) *Raw {
		r := *good
		r.Headers = map[string]any{}
		for k, v := range good.Headers {
			r.Headers[k] = v
		}
		f(&r)
		return &r
	}
	bomb := func() []byte {
		_, b, _ := Compress("zlib", make([]byte, DefaultMaxBodySize+1))
		return b
	}()
	tests := []struct {
		name string
		raw  *Raw
		want error
	}{
		{"pickle", with(func(r *Raw) { r.ContentType = ContentTypePickle }), ErrUnsupportedContentType},
		{"yaml", with(func(r *Raw) { r.ContentType = ContentTypeYAML }), ErrUnsupportedContentType},
		{"unknown type", with(func(r *Raw) { r.ContentType = "text/html" }), ErrUnsupportedContentType},
		{"latin-1 json", with(func(r *Raw) { r.ContentEncoding = "latin-1" }), ErrUnsupportedContentType},
		{"bad json", with(func(r *Raw) { r.Body = []byte(`[[1], {}`) }), ErrMalformed},
		{"truncated", with(func(r *Raw) { r.Body = r.Body[:len(r.Body)/2] }), ErrMalformed},
		{"body not 3 parts", with(func(r *Raw) { r.Body = []byte(`[[1], {}]`) }), ErrMalformed},
		{"args not list", with(func(r *Raw) { r.Body = []byte(`[1, {}, null]`) }), ErrMalformed},
		{"bad eta", with(func(r *Raw) { r.Headers["eta"] = "soon" }), ErrMalformed},
		{"bad timelimit", with(func(r *Raw) { r.Headers["timelimit"] = []any{int64(1)} }), ErrMalformed},
		{"bad retries", with(func(r *Raw) { r.Headers["retries"] = "x" }), ErrMalformed},
		{"task not string", with(func(r *Raw) { r.Headers["task"] = int64(1) }), ErrMalformed},
		{"no id", with(func(r *Raw) { r.Headers["id"] = nil; r.Properties.CorrelationID = "" }), ErrMalformed},
		{"bad callback", with(func(r *Raw) {
			r.Body = []byte(`[[], {}, {"callbacks": [{"args": []}], "errbacks": null, "chain": null, "chord": null}]`)
		}), ErrMalformed},
		{"not a task", with(func(r *Raw) { delete(r.Headers, "task"); r.Body = []byte(`{"hello": 1}`) }), ErrNotTaskMessage},
		{"oversized", with(func(r *Raw) { r.Body = make([]byte, DefaultMaxBodySize+1) }), ErrTooLarge},
		{"zlib bomb", with(func(r *Raw) { r.Body = bomb; r.Headers["compression"] = CompressionZlib }), ErrTooLarge},
		{"corrupt zlib", with(func(r *Raw) { r.Headers["compression"] = CompressionZlib }), ErrMalformed},
		{"unknown compression", with(func(r *Raw) { r.Headers["compression"] = "application/x-snappy" }), ErrUnsupportedCompression},
	}
	for _, tt := range tests {
		_, err := Decode(tt.raw)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	var cte *ContentTypeError
	if _, err := Decode(with(func(r *Raw) { r.ContentType = ContentTypePickle })); !errors.As(err, &cte) || cte.ContentType != ContentTypePickle {
		t.Errorf("pickle error does not name the content type: %v", err)
	}
	d := Decoder{Accept: []string{"json"}}
	if _, err := d.Decode(with(func(r *Raw) { r.ContentType = ContentTypeMsgpack })); !errors.Is(err, ErrUnsupportedContentType) {
		t.Errorf("msgpack outside Accept: %v", err)
	}
	d = Decoder{MaxDepth: 2}
	if _, err := d.Decode(with(func(r *Raw) { r.Body = []byte(`[[[[1]]], {}, null]`) })); !errors.Is(err, ErrTooDeep) {
		t.Errorf("MaxDepth: %v", err)
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	raw, _ := Encode(simpleMessage())
	env := &Envelope{Raw: *raw, Exchange: "", RoutingKey: "celery", DeliveryTag: "tag-1"}
	data, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseEnvelope(data, 0)
	if err != nil {
		t.Fatal(err)
	}
	if back.RoutingKey != "celery" || back.DeliveryTag != "tag-1" || !bytes.Equal(back.Body, raw.Body) {
		t.Errorf("envelope round trip lost data: %+v", back)
	}
	m, err := Decode(&back.Raw)
	if err != nil || m.Task != "proj.add" {
		t.Errorf("decode after envelope: %v %v", m, err)
	}
}

func TestSignatureComposites(t *testing.T) {
	m := fullMessage()
	raw, _ := Encode(m)
	out, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	chord := out.Chain[0]
	header, err := chord.Header()
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := header.Tasks()
	if err != nil || len(tasks) != 2 || tasks[1].Task != "b" {
		t.Errorf("chord header tasks = %v, %v", tasks, err)
	}
	if body, err := chord.Body(); err != nil || body.Task != "c" {
		t.Errorf("chord body = %v, %v", body, err)
	}
	if out.Chain[1].Extra["chord_size"] != int64(2) {
		t.Errorf("extra key lost: %v", out.Chain[1].Extra)
	}
	if _, err := out.Chain[1].Tasks(); !errors.Is(err, ErrMalformed) {
		t.Errorf("Tasks on a plain signature: %v", err)
	}
	if out.Callbacks[0].ID() != "cb1" {
		t.Errorf("callback id = %q", out.Callbacks[0].ID())
	}
}
