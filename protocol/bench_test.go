package protocol

import (
	"testing"
)

func simpleRaw(b *testing.B) *Raw {
	for _, c := range loadCaptures(b) {
		if c.file == "producer-simple.json" {
			env, err := ParseEnvelope([]byte(c.raw), 0)
			if err != nil {
				b.Fatal(err)
			}
			return &env.Raw
		}
	}
	b.Fatal("producer-simple fixture missing")
	return nil
}

// BenchmarkDecode decodes the captured producer-simple message once its
// transport has handed over headers and body (the worker's hot path).
func BenchmarkDecode(b *testing.B) {
	for _, ser := range []string{"json", "msgpack"} {
		b.Run(ser, func(b *testing.B) {
			raw := simpleRaw(b)
			if ser == "msgpack" {
				m, _ := Decode(raw)
				var err error
				if raw, err = (&Encoder{Serializer: "msgpack"}).Encode(m); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(raw.Body)))
			for b.Loop() {
				if _, err := Decode(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeEnvelope includes parsing kombu's Redis JSON envelope.
func BenchmarkDecodeEnvelope(b *testing.B) {
	var data []byte
	for _, c := range loadCaptures(b) {
		if c.file == "producer-simple.json" {
			data = []byte(c.raw)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		env, err := ParseEnvelope(data, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Decode(&env.Raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, ser := range []string{"json", "msgpack"} {
		b.Run(ser, func(b *testing.B) {
			m := simpleMessage()
			enc := Encoder{Serializer: ser}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := enc.Encode(m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
