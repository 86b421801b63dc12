package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"
)

// fileRevokedStore keeps revoked task ids in a file, one JSON line per
// revoke, so a restarted worker still discards them (Celery's --statedb,
// whose shelve format only Python reads). Load compacts the file to the
// ids still within the expiry.
type fileRevokedStore struct {
	path string
	mu   sync.Mutex
}

type revokedLine struct {
	ID   string  `json:"id"`
	Time float64 `json:"t"`
}

// revokedKeep matches the worker's default revoke expiry.
const revokedKeep = 3 * time.Hour

func (s *fileRevokedStore) Add(_ context.Context, ids ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.OpenFile(s.path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("statedb: %w", err)
	}
	now := float64(time.Now().UnixMicro()) / 1e6
	enc := json.NewEncoder(f)
	for _, id := range ids {
		if err := enc.Encode(revokedLine{ID: id, Time: now}); err != nil {
			f.Close()
			return fmt.Errorf("statedb: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("statedb: %w", err)
	}
	return f.Close()
}

func (s *fileRevokedStore) Load(_ context.Context) (map[string]time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]time.Time{}
	f, err := os.Open(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("statedb: %w", err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l revokedLine
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.ID == "" {
			continue // a torn last line after a crash
		}
		t := time.UnixMicro(int64(l.Time * 1e6))
		if time.Since(t) < revokedKeep {
			out[l.ID] = t
		}
	}
	f.Close()
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("statedb: %w", err)
	}
	// Compact: rewrite only the live ids, atomically.
	tmp := s.path + ".tmp"
	w, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return out, nil // reading worked; compaction is an optimisation
	}
	enc := json.NewEncoder(w)
	for id, t := range out {
		_ = enc.Encode(revokedLine{ID: id, Time: float64(t.UnixMicro()) / 1e6})
	}
	if w.Close() == nil {
		_ = os.Rename(tmp, s.path)
	}
	return out, nil
}
