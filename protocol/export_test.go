package protocol

import (
	"encoding/base64"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
)

// exportCases are Go-encoded messages that interop/python/test_go_encoded.py
// feeds to Celery's own worker-side parsing.
func exportCases() []struct {
	name string
	enc  Encoder
	msg  *Message
} {
	big70, _ := new(big.Int).SetString("1180591620717411303424", 10)
	gi := 0
	typed := []any{
		time.Date(2030, 1, 2, 3, 4, 5, 678901000, time.UTC), Date{2030, 1, 2}, TimeOfDay{3, 4, 5, 678901, ""},
		Decimal("1.10"), uuid.MustParse("12345678-1234-5678-1234-567812345678"), []byte("abc"), []byte{0xff, 0},
	}
	numbers := []any{int64(1<<53 + 1), int64(math.MaxInt64), int64(math.MinInt64), big70, 0.1, 1e16, math.Copysign(0, -1), 1234567.0}
	chordBody := Signature{Task: "proj.tsum", Options: map[string]any{"task_id": "go-body", "group_id": "go-group"}}
	full := fullMessage()
	full.ID, full.Properties.CorrelationID = "go-full", "go-full"
	type c = struct {
		name string
		enc  Encoder
		msg  *Message
	}
	return []c{
		{"go-simple", Encoder{}, simpleMessage()},
		{"go-full", Encoder{}, full},
		{"go-kombu-types", Encoder{}, &Message{ID: "go-types", Task: "proj.echo", Args: typed, Kwargs: map[string]any{"when": typed[0], "u": typed[4]}}},
		{"go-numbers", Encoder{}, &Message{ID: "go-numbers", Task: "proj.echo", Args: numbers}},
		{"go-unicode", Encoder{}, &Message{ID: "go-unicode", Task: "proj.echo", Args: []any{"é€😀", "漢字", "\x00\n\"'"}, Kwargs: map[string]any{"ключ": "значение"}}},
		{"go-eta-expires", Encoder{}, &Message{ID: "go-eta", Task: "proj.add", Args: []any{int64(1), int64(2)},
			ETA: time.Date(2030, 1, 2, 3, 4, 5, 678901000, time.UTC), Expires: time.Date(2030, 1, 2, 4, 0, 0, 0, time.FixedZone("", 3600)),
			TimeLimit: TimeLimit{Hard: 30 * time.Second, Soft: 20 * time.Second}, Retries: 2, Properties: Properties{Priority: 7}}},
		{"go-chord-header", Encoder{}, &Message{ID: "go-h0", Task: "proj.add", Args: []any{int64(1), int64(1)}, Group: "go-group", GroupIndex: &gi, Chord: &chordBody}},
		{"go-chain", Encoder{}, &Message{ID: "go-c1", Task: "proj.add", Args: []any{int64(2), int64(2)}, Chain: []Signature{
			{Task: "proj.add", Args: []any{int64(8)}, Options: map[string]any{"task_id": "go-c3"}},
			{Task: "proj.add", Args: []any{int64(4)}, Options: map[string]any{"task_id": "go-c2"}},
		}}},
		{"go-msgpack", Encoder{Serializer: "msgpack"}, &Message{ID: "go-mp", Task: "proj.add", Args: []any{int64(1), "x", []byte{0xff}}, Kwargs: map[string]any{"k": []any{1.5, nil}}}},
		{"go-zlib", Encoder{Compression: "gzip"}, &Message{ID: "go-zlib", Task: "proj.add", Args: []any{int64(1), int64(2)}}},
		{"go-bzip2", Encoder{Compression: "bzip2"}, &Message{ID: "go-bz2", Task: "proj.add", Args: []any{int64(1), int64(2)}}},
		{"go-lzma", Encoder{Compression: "lzma"}, &Message{ID: "go-xz", Task: "proj.add", Args: []any{int64(1), int64(2)}}},
		{"go-v1", Encoder{Protocol: 1}, &Message{ID: "go-v1", Task: "proj.add", Args: []any{int64(1), int64(2)},
			ETA: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), TimeLimit: TimeLimit{Hard: 5 * time.Second, Soft: 3 * time.Second}}},
	}
}

// TestExportEncoded encodes messages in Go and checks they decode to what
// was encoded. With GOCELERY_EXPORT_DIR set it also writes them in the
// vector schema for the Python side to check against Celery.
func TestExportEncoded(t *testing.T) {
	dir := os.Getenv("GOCELERY_EXPORT_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	for _, tc := range exportCases() {
		raw, err := tc.enc.Encode(tc.msg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		back, err := Decode(raw)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		view := back.RequestDict()
		want := tc.msg.RequestDict()
		for _, k := range []string{"id", "task", "args", "kwargs", "eta", "expires", "retries", "timelimit", "group", "group_index", "callbacks", "errbacks", "chord", "priority"} {
			g, _ := canonicalJSON(view[k])
			w, _ := canonicalJSON(want[k])
			if g != w {
				t.Errorf("%s: %s = %s, encoded %s", tc.name, k, g, w)
			}
		}
		props := map[string]any{
			"correlation_id": raw.Properties.CorrelationID, "reply_to": raw.Properties.ReplyTo,
			"delivery_mode": int64(raw.Properties.DeliveryMode), "priority": int64(raw.Properties.Priority),
		}
		doc := map[string]any{
			"name":        tc.name,
			"description": "encoded by gocelery protocol.Encoder",
			"wire": map[string]any{
				"content_type": raw.ContentType, "content_encoding": raw.ContentEncoding,
				"headers": raw.Headers, "properties": props,
				"body_b64": base64.StdEncoding.EncodeToString(raw.Body),
			},
			"expect": view,
		}
		data, err := MarshalJSON(doc)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, tc.name+".json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
