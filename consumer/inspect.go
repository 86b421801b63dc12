package consumer

import (
	"maps"
	"sort"
	"time"
)

// TaskInfo is one registered task (inspect registered).
type TaskInfo struct {
	Name      string
	RateLimit string
}

// Registered returns the worker's tasks, sorted.
func (rc *Remote) Registered() []TaskInfo {
	w := rc.w
	names := w.mux.Names()
	sort.Strings(names)
	out := make([]TaskInfo, len(names))
	for i, n := range names {
		out[i] = TaskInfo{Name: n, RateLimit: rc.RateLimit(n)}
	}
	return out
}

// TotalByTask counts the tasks this worker took, by name (stats "total").
func (rc *Remote) TotalByTask() map[string]int64 {
	w := rc.w
	w.track.mu.Lock()
	defer w.track.mu.Unlock()
	return maps.Clone(w.track.total)
}

// Hostname returns the worker's node name.
func (w *Worker) Hostname() string { return w.cfg.Hostname }

// Started returns when Run began (stats "uptime").
func (rc *Remote) Started() time.Time {
	w := rc.w
	w.runMu.Lock()
	defer w.runMu.Unlock()
	return w.started
}
