// Package backoff is the reconnect and retry delay the transports share.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Delay returns the wait before attempt n (0-based): lo doubled n times,
// capped at hi, with "equal jitter" (a uniformly random half added to the
// other half), so workers that lost the broker together do not come back
// in lockstep.
func Delay(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 0; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	half := d / 2
	return half + rand.N(d-half+1)
}

// Sleep waits for d or until done is closed; it reports whether d passed.
func Sleep(d time.Duration, done <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
