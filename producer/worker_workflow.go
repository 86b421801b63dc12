package producer

import (
	"log/slog"
	"reflect"
)

// NewWorkerWorkflow is the Workflow a Go worker continues canvases with:
// chain steps, callbacks, errbacks and chord bodies are published on b,
// from cfg.Origin, to cfg.DefaultQueue when they name no queue; results
// are read and chords joined in backend when it can (the Redis result
// backend: it is a Backend and a ChordBackend). A nil backend, or one
// that cannot join chords, leaves chords unjoined, as Celery's
// DisabledBackend does.
func NewWorkerWorkflow(b Broker, backend any, cfg Config, logger *slog.Logger) *Workflow {
	var pb Backend
	var cb ChordBackend
	if !isNil(backend) {
		pb, _ = backend.(Backend)
		cb, _ = backend.(ChordBackend)
	}
	return NewWorkflow(New(b, pb, cfg), cb, logger)
}

// isNil catches a typed nil pointer in an interface (a *results.Redis
// that was never set), which a type assertion would let through.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}
