package backoff

import (
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	lo, hi := 100*time.Millisecond, 5*time.Second
	for _, tt := range []struct {
		n        int
		min, max time.Duration
	}{
		{0, 50 * time.Millisecond, 100 * time.Millisecond},
		{1, 100 * time.Millisecond, 200 * time.Millisecond},
		{3, 400 * time.Millisecond, 800 * time.Millisecond},
		{20, 2500 * time.Millisecond, 5 * time.Second},
	} {
		for range 100 {
			if d := Delay(tt.n, lo, hi); d < tt.min || d > tt.max {
				t.Fatalf("Delay(%d) = %v, want in [%v, %v]", tt.n, d, tt.min, tt.max)
			}
		}
	}
	done := make(chan struct{})
	close(done)
	if Sleep(time.Hour, done) {
		t.Error("Sleep ignored done")
	}
}
