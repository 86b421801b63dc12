package protocol

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// vector is one file in testdata/vectors, written by
// interop/python/gen_vectors.py with the pinned Celery: the bytes Celery
// publishes ("wire") and what Celery's worker-side parsing sees ("expect").
// TestExportEncoded writes the same shape for the reverse direction.
type vector struct {
	name   string
	wire   *Raw
	expect map[string]any
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	files, err := filepath.Glob("testdata/vectors/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors (run make vectors): %v", err)
	}
	var out []vector
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		v, err := UnmarshalJSON(data, 0)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		doc := v.(map[string]any)
		w := doc["wire"].(map[string]any)
		props, err := propertiesFrom(w["properties"].(map[string]any))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		body, err := base64.StdEncoding.DecodeString(w["body_b64"].(string))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, vector{
			name: strings.TrimSuffix(filepath.Base(f), ".json"),
			wire: &Raw{
				ContentType:     w["content_type"].(string),
				ContentEncoding: w["content_encoding"].(string),
				Headers:         w["headers"].(map[string]any),
				Properties:      props,
				Body:            body,
			},
			expect: doc["expect"].(map[string]any),
		})
	}
	return out
}

func TestDecodeCeleryVectors(t *testing.T) {
	vecs := loadVectors(t)
	if len(vecs) < 30 {
		t.Fatalf("only %d vectors", len(vecs))
	}
	for _, v := range vecs {
		t.Run(v.name, func(t *testing.T) {
			m, err := Decode(v.wire)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			assertSameView(t, m.RequestDict(), v.expect)
		})
	}
}

// Re-encoding what Celery sent gives a message that decodes to the same
// view (modulo the encoder's own choices: lang and content type).
func TestReencodeCeleryVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			m, err := Decode(v.wire)
			if err != nil {
				t.Fatal(err)
			}
			enc := Encoder{Protocol: m.Protocol, Compression: m.Compression}
			if m.ContentType == ContentTypeMsgpack {
				enc.Serializer = "msgpack"
			}
			raw, err := enc.Encode(m)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Decode(raw)
			if err != nil {
				t.Fatal(err)
			}
			assertSameView(t, back.RequestDict(), m.RequestDict())
		})
	}
}
