package amqp

import (
	"math/rand/v2"
	"time"
)

// backoff returns the delay before reconnection attempt n (0-based):
// min doubled n times, capped at max, with "equal jitter" (a uniformly
// random half added to the other half), so a fleet of workers that lost
// the broker together does not come back in lockstep.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 0; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	half := d / 2
	return half + rand.N(d-half+1)
}

// sleep waits for d or until done is closed; it reports whether d passed.
func sleep(d time.Duration, done <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
