package beat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// ErrLockLost reports that the lease ended: the lock expired or another
// owner holds it. A leader stops sending at once.
var ErrLockLost = errors.New("beat: leader lock lost")

// DefaultLockTTL is the lock's time to live. redbeat's default (25 min)
// keeps a restarted beat out for that long; a few seconds is enough when
// the holder renews it every TTL/3.
const DefaultLockTTL = 5 * time.Second

// Lock elects one leader among the replicas that share a store: a Redis
// key set with NX and a short TTL, holding the owner's token, renewed by
// the owner. It is redbeat's lock key and protocol (SET NX PX,
// compare-then-PEXPIRE, compare-then-DEL), so a Python redbeat beat and
// Go beats exclude each other. Each acquisition takes a fencing token, a
// counter incremented in the same script.
type Lock struct {
	rdb           redis.UniversalClient
	key, fenceKey string
	ttl           time.Duration
	log           *slog.Logger
}

// NewLock returns the lock at key (fencing counter at fenceKey).
func NewLock(rdb redis.UniversalClient, key, fenceKey string, ttl time.Duration, log *slog.Logger) *Lock {
	if ttl <= 0 {
		ttl = DefaultLockTTL
	}
	if log == nil {
		log = slog.Default()
	}
	return &Lock{rdb: rdb, key: key, fenceKey: fenceKey, ttl: ttl, log: log}
}

// TTL is the lock's time to live.
func (l *Lock) TTL() time.Duration { return l.ttl }

var acquireScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
`)

// extendScript is redbeat's LUA_EXTEND_TO_SCRIPT: extend to (not by) the
// TTL, only while the token is ours and the key has a TTL.
var extendScript = redis.NewScript(`
local token = redis.call('get', KEYS[1])
if not token or token ~= ARGV[1] then
  return 0
end
local expiration = redis.call('pttl', KEYS[1])
if not expiration then
  expiration = 0
end
if expiration < 0 then
  return 0
end
redis.call('pexpire', KEYS[1], ARGV[2])
return 1
`)

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// Acquire blocks until this process holds the lock or ctx ends. A standby
// sleeps until the holder's TTL runs out (re-reading it), so a dead
// leader is replaced as soon as its lock expires.
func (l *Lock) Acquire(ctx context.Context) (*Lease, error) {
	token := uuid.NewString()
	ttlMS := l.ttl.Milliseconds()
	for {
		start := time.Now()
		fence, err := acquireScript.Run(ctx, l.rdb, []string{l.key, l.fenceKey}, token, ttlMS).Int64()
		if err == nil && fence > 0 {
			return l.newLease(ctx, token, fence, start), nil
		}
		wait := l.ttl / 10
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			l.log.Warn("beat: lock: cannot reach Redis", "err", err)
		} else if pttl, err := l.rdb.PTTL(ctx, l.key).Result(); err == nil && pttl > 0 {
			// The holder's lock ends in pttl unless renewed: look again then.
			wait = min(pttl+2*time.Millisecond, l.ttl)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// Lease is one holding of the lock. Its context ends when the lock is lost
// or released; Valid says whether it is still certainly held.
type Lease struct {
	// Token is the lock's value while this lease holds it.
	Token string
	// Fence is the fencing token: larger for every later acquisition.
	Fence int64

	lock   *Lock
	ctx    context.Context
	cancel context.CancelCauseFunc
	mu     sync.Mutex
	until  time.Time // monotonic: the lock is ours at least until then
	done   chan struct{}
}

func (l *Lock) newLease(parent context.Context, token string, fence int64, start time.Time) *Lease {
	ctx, cancel := context.WithCancelCause(parent)
	ls := &Lease{Token: token, Fence: fence, lock: l, ctx: ctx, cancel: cancel,
		until: start.Add(l.ttl - l.ttl/20), done: make(chan struct{})}
	go ls.renew()
	return ls
}

// Context is cancelled (cause ErrLockLost) when the lease ends.
func (ls *Lease) Context() context.Context { return ls.ctx }

// Valid reports whether the lock is still ours: the last renewal's TTL,
// counted from before it was sent, has not run out.
func (ls *Lease) Valid() bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.ctx.Err() == nil && time.Now().Before(ls.until)
}

// held reports whether the lock is still ours even though the lease's
// context may be done because its parent was (a shutdown): not lost, and
// within the last renewal's TTL. Runs already claimed are sent then.
func (ls *Lease) held() bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return !errors.Is(context.Cause(ls.ctx), ErrLockLost) && time.Now().Before(ls.until)
}

// Until is when the lease ends unless renewed.
func (ls *Lease) Until() time.Time {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.until
}

// renew extends the lock every TTL/3 and ends the lease when that fails
// or when the TTL runs out before a renewal got through.
func (ls *Lease) renew() {
	defer close(ls.done)
	l := ls.lock
	every := l.ttl / 3
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ls.ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		rctx, cancel := context.WithDeadline(ls.ctx, ls.Until())
		ok, err := extendScript.Run(rctx, l.rdb, []string{l.key}, ls.Token, l.ttl.Milliseconds()).Int64()
		cancel()
		switch {
		case err == nil && ok == 1:
			ls.mu.Lock()
			ls.until = start.Add(l.ttl - l.ttl/20)
			ls.mu.Unlock()
			t.Reset(every)
		case err == nil:
			ls.cancel(fmt.Errorf("%w: another owner holds it", ErrLockLost))
			return
		default:
			if !time.Now().Before(ls.Until()) {
				ls.cancel(fmt.Errorf("%w: not renewed in time: %w", ErrLockLost, err))
				return
			}
			l.log.Warn("beat: lock: renewal failed, retrying", "err", err)
			t.Reset(min(l.ttl/10, time.Until(ls.Until())))
		}
	}
}

// Release ends the lease and deletes the lock if it is still ours, so a
// standby takes over at once.
func (ls *Lease) Release(ctx context.Context) error {
	ls.cancel(fmt.Errorf("%w: released", ErrLockLost))
	<-ls.done
	return releaseScript.Run(ctx, ls.lock.rdb, []string{ls.lock.key}, ls.Token).Err()
}

// ErrSchedulerClosed is returned by Run on a Scheduler that has run
// already: each runs once.
var ErrSchedulerClosed = errors.New("beat: scheduler already ran")
