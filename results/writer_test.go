package results_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/gocelery/gocelery/results"
)

// Concurrent Store calls share round trips, and each state is still
// written as one atomic step: every task ends with its last state, a
// stored SUCCESS is never overwritten (Celery's rule), and nothing is
// lost across batches. The second case has Redis drop its scripts first
// (a restart or a failover loses them): the batch reloads and resends.
func TestStoreConcurrentlyInBatches(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flush bool
	}{
		{"scripts loaded", false},
		{"after SCRIPT FLUSH", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be, c := newBackend(t, results.Config{})
			ctx := ctxTimeout(t, 30*1e9)
			if tc.flush {
				if err := c.ScriptFlush(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			}
			const n = 300
			var wg sync.WaitGroup
			errs := make(chan error, 4*n)
			for i := range n {
				wg.Go(func() {
					id := fmt.Sprintf("w-%d", i)
					for _, st := range []string{results.Started, "PROGRESS", results.Success, results.Failure} {
						if err := be.Store(ctx, &results.Meta{TaskID: id, Status: st, Result: i}); err != nil {
							errs <- fmt.Errorf("%s %s: %w", id, st, err)
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for i := range n {
				m, err := be.Get(ctx, fmt.Sprintf("w-%d", i))
				if err != nil {
					t.Fatal(err)
				}
				if m.Status != results.Success || m.Result != int64(i) {
					t.Fatalf("w-%d: %s %v, want SUCCESS %d (a later FAILURE must not replace it)", i, m.Status, m.Result, i)
				}
			}
		})
	}
}

// BenchmarkStoreParallel stores SUCCESS states from 16 goroutines per
// CPU, as a worker of that concurrency does; compare with -cpu or with a
// build where stateWriter sends one call per round trip.
func BenchmarkStoreParallel(b *testing.B) {
	be, _ := newBackend(b, results.Config{})
	ctx := context.Background()
	var seq sync.Mutex
	next := 0
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			seq.Lock()
			next++
			id := fmt.Sprintf("b-%d", next)
			seq.Unlock()
			if err := be.Store(ctx, &results.Meta{TaskID: id, Status: results.Success, Result: 5}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// A Store on a context that has ended fails, batched or not, as a plain
// call does: a task past its soft time limit learns it from UpdateState.
func TestStoreOnEndedContextFails(t *testing.T) {
	be, _ := newBackend(t, results.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := be.Store(ctx, &results.Meta{TaskID: "ended", Status: "PROGRESS"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Store on a cancelled context = %v, want context.Canceled", err)
	}
}
