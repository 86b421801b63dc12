package beat

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A Scheduler runs once: a second Run returns ErrSchedulerClosed.
func TestSchedulerRunsOnce(t *testing.T) {
	rdb, prefix := testRedis(t)
	s := New(rdb, &recordingSender{}, Config{KeyPrefix: prefix, LockTTL: 600 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	if err := s.Run(context.Background()); !errors.Is(err, ErrSchedulerClosed) {
		t.Fatalf("Run while running = %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); !errors.Is(err, ErrSchedulerClosed) {
		t.Fatalf("Run after Run = %v", err)
	}
}
