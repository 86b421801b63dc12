package worker

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestFileRevokedStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	s := &fileRevokedStore{path: path}
	ctx := context.Background()
	got, err := s.Load(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("missing file: %v %v", got, err)
	}
	if err := s.Add(ctx, "a", "b"); err != nil {
		t.Fatal(err)
	}
	// An old entry and a torn last line, as after a crash mid-write.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	old := float64(time.Now().Add(-4*time.Hour).UnixMicro()) / 1e6
	f.WriteString(`{"id": "old", "t": ` + formatFloat(old) + "}\n" + `{"id": "c", "t`)
	f.Close()
	got, err = (&fileRevokedStore{path: path}).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["a"].IsZero() || got["b"].IsZero() {
		t.Errorf("loaded %v, want a and b (old expired, torn line skipped)", got)
	}
	// Load compacted the file to the live ids.
	again, _ := (&fileRevokedStore{path: path}).Load(ctx)
	if len(again) != 2 {
		t.Errorf("after compaction %v", again)
	}
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'f', 6, 64) }
