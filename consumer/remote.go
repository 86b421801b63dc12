package consumer

import "context"

// Remote is the part of a running worker that remote control reads and
// changes (celery inspect, celery control): requests in flight, revokes,
// rate and time limits, queues, totals. The pidbox node in package control
// serves it; get it with Worker.Remote. Keeping it apart leaves Worker
// itself to its lifecycle (Run, Shutdown, Kill) and its counters.
type Remote struct{ w *Worker }

// Remote returns the worker's remote-control view.
func (w *Worker) Remote() *Remote { return &Remote{w: w} }

// Hostname returns the worker's node name.
func (rc *Remote) Hostname() string { return rc.w.Hostname() }

// Concurrency returns the number of tasks run at once.
func (rc *Remote) Concurrency() int { return rc.w.Concurrency() }

// Stats returns the worker's counters.
func (rc *Remote) Stats() Stats { return rc.w.Stats() }

// Shutdown stops the worker warmly, as Worker.Shutdown does.
func (rc *Remote) Shutdown(ctx context.Context) error { return rc.w.Shutdown(ctx) }
