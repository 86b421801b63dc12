package results

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/internal/scriptbatch"
)

// stateWriter sends concurrent Store calls' storeScript runs to Redis in
// shared round trips (see package scriptbatch): each state is still one
// atomic script, and Store returns only once its state is written (the
// worker acks a late-ack message after that).
type stateWriter struct{ batch *scriptbatch.Batcher }

func newStateWriter(client redis.UniversalClient) *stateWriter {
	return &stateWriter{batch: scriptbatch.New(client, storeScript, 256)}
}

// store runs storeScript for key; done is false when Go must read the
// stored state itself (see storeScript).
func (w *stateWriter) store(ctx context.Context, key string, data []byte, expires time.Duration) (done bool, err error) {
	ttl := int64(0)
	if expires > 0 {
		ttl = expires.Milliseconds()
	}
	n, err := w.batch.Run(ctx, []string{key}, data, ttl).Int()
	if err != nil {
		return false, err
	}
	return n >= 0, nil
}
