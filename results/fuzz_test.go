package results

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecodeMeta: whatever a Redis key holds (another writer, a hostile
// one, a truncated compressed value), decoding returns a meta or an error.
func FuzzDecodeMeta(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.json")
	for _, name := range files {
		if data, err := os.ReadFile(name); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(`{"status": "SUCCESS", "result": 1, "traceback": null, "children": [], "date_done": null, "task_id": "x"}`))
	f.Add([]byte("\x00celery-compressed\x00application/x-gzip\x00junk"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMeta(data)
		if err == nil {
			if _, err := m.Encode(); err != nil && m.Status != "" {
				t.Logf("decoded meta does not re-encode: %v", err)
			}
			_ = m.Err()
		}
	})
}

// FuzzChordMember: a chord's sorted set may hold members written by any
// worker; reading one returns a result or an error.
func FuzzChordMember(f *testing.F) {
	f.Add([]byte(`[1, "tid", "SUCCESS", 4]`))
	f.Add([]byte(`[1, "tid", "FAILURE", {"exc_type": "ValueError", "exc_message": ["x"], "exc_module": "builtins"}]`))
	f.Add([]byte(`[1, "tid", "FAILURE", "not an exception"]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cr, err := decodeChordMember(data)
		if err == nil {
			j := &ChordJoin{Results: []ChordResult{cr}}
			_ = j.Err()
			_ = j.Values()
		}
	})
}
