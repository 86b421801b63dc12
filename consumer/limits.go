package consumer

import (
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// ParseRateLimit reads Celery's rate limit strings: "10/s", "100/m",
// "5/h", or a bare number per second; "" or "0" means no limit (0).
func ParseRateLimit(s string) (perSecond float64, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	num, unit, hasUnit := strings.Cut(s, "/")
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: %q", ErrBadRateLimit, s)
	}
	if !hasUnit {
		return n, nil
	}
	switch strings.TrimSpace(unit) {
	case "s":
		return n, nil
	case "m":
		return n / 60, nil
	case "h":
		return n / 3600, nil
	}
	return 0, fmt.Errorf("%w: %q", ErrBadRateLimit, s)
}

// taskLimits are the limits per task name that rate_limit and time_limit
// change at run time. Every task reads them and they almost never change,
// so readers load a snapshot and writers replace it.
type taskLimits struct {
	mu  sync.Mutex // serializes writers
	cur atomic.Pointer[limitSet]
}

type limitSet struct {
	rates    map[string]*rate.Limiter
	rateStr  map[string]string
	timeouts map[string][2]time.Duration // soft, hard
}

// update applies f to a copy of the current limits and publishes it.
func (l *taskLimits) update(f func(ls *limitSet)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := &limitSet{rates: map[string]*rate.Limiter{}, rateStr: map[string]string{}, timeouts: map[string][2]time.Duration{}}
	if cur := l.cur.Load(); cur != nil {
		maps.Copy(next.rates, cur.rates)
		maps.Copy(next.rateStr, cur.rateStr)
		maps.Copy(next.timeouts, cur.timeouts)
	}
	f(next)
	l.cur.Store(next)
}

// SetRateLimit sets a task's rate limit ("10/s", "100/m"; "" removes
// it), as Celery's rate_limit command: the worker delays the task's runs
// so they start no faster.
func (rc *Remote) SetRateLimit(task, limit string) error {
	w := rc.w
	if _, _, ok := w.mux.Lookup(task); !ok {
		return ErrUnknownTask
	}
	perSec, err := ParseRateLimit(limit)
	if err != nil {
		return err
	}
	w.limits.update(func(ls *limitSet) {
		if perSec == 0 {
			delete(ls.rates, task)
			delete(ls.rateStr, task)
			return
		}
		ls.rates[task] = rate.NewLimiter(rate.Limit(perSec), 1)
		ls.rateStr[task] = limit
	})
	return nil
}

// RateLimit returns a task's rate limit string, "" for none.
func (rc *Remote) RateLimit(task string) string {
	w := rc.w
	if ls := w.limits.cur.Load(); ls != nil {
		return ls.rateStr[task]
	}
	return ""
}

func (w *Worker) limiter(task string) *rate.Limiter {
	if ls := w.limits.cur.Load(); ls != nil {
		return ls.rates[task]
	}
	return nil
}

// SetTimeLimit sets a task's soft and hard time limits (0: none), as
// Celery's time_limit command; they apply to runs that start afterwards
// and to messages without limits of their own.
func (rc *Remote) SetTimeLimit(task string, soft, hard time.Duration) error {
	w := rc.w
	if _, _, ok := w.mux.Lookup(task); !ok {
		return ErrUnknownTask
	}
	w.limits.update(func(ls *limitSet) { ls.timeouts[task] = [2]time.Duration{soft, hard} })
	return nil
}

func (w *Worker) timeLimitOverride(task string) (soft, hard time.Duration, ok bool) {
	ls := w.limits.cur.Load()
	if ls == nil {
		return 0, 0, false
	}
	t, ok := ls.timeouts[task]
	return t[0], t[1], ok
}
