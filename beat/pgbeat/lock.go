package pgbeat

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gocelery/gocelery/beat"
)

// lockKey is the advisory lock of a schema's leader (advisory locks are
// per database, so stores in other databases do not share it).
func lockKey(schema Schema) int64 {
	h := fnv.New64a()
	h.Write([]byte("gocelery beat leader " + string(schema)))
	return int64(h.Sum64())
}

// lease is one holding of the leader lock: a session-level advisory lock on
// a connection of its own, and the fencing token taken with it. The claims
// run on that connection, so a leader whose session ended (and with it the
// lock) cannot claim: its transaction has no connection to commit on.
type lease struct {
	fence  int64
	schema Schema
	ttl    time.Duration
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}

	connMu sync.Mutex // the connection serves one statement at a time
	conn   *pgx.Conn

	mu    sync.Mutex
	until time.Time // the lock was certainly ours until then
}

// acquire blocks until this process holds the leader lock or ctx ends. A
// standby tries again every ttl/10 (at most 250 ms): the server frees the
// lock as soon as the leader's session ends (its process died), so a dead
// leader is replaced within that.
func (s *Scheduler) acquire(ctx context.Context) (*lease, error) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	wait := min(s.ttl/10, 250*time.Millisecond)
	holder := fmt.Sprintf("%s:%d", hostname(), os.Getpid())
	for {
		var err error
		if conn == nil {
			conn, err = pgx.ConnectConfig(ctx, s.lockConnConfig())
		}
		if err == nil {
			start := time.Now()
			var ok bool
			if err = conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", lockKey(s.store.schema)).Scan(&ok); err == nil && ok {
				var fence int64
				err = conn.QueryRow(ctx, `UPDATE gocelery_beat_leader SET fence = fence + 1, holder = $2, acquired_at = now()
WHERE name = $1 RETURNING fence`, string(s.store.schema), holder).Scan(&fence)
				if err == nil {
					ls := s.newLease(ctx, conn, fence, start)
					conn = nil
					return ls, nil
				}
				_, _ = conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", lockKey(s.store.schema))
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			s.log.Warn("beat: lock: cannot reach PostgreSQL", "err", err)
			if conn != nil {
				conn.Close(context.Background())
				conn = nil
			}
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

// lockConnConfig is the pool's connection config with server-side TCP
// keepalives of about the lock TTL: the server ends the session of a leader
// it cannot reach (a partition, a frozen host) within a few TTLs, freeing
// the lock, instead of after the kernel's two hours.
func (s *Scheduler) lockConnConfig() *pgx.ConnConfig {
	cc := s.store.pool.Config().ConnConfig.Copy()
	secs := strconv.Itoa(max(1, int(s.ttl.Seconds())))
	for k, v := range map[string]string{"tcp_keepalives_idle": secs, "tcp_keepalives_interval": "1",
		"tcp_keepalives_count": "3", "tcp_user_timeout": strconv.FormatInt(max(1000, s.ttl.Milliseconds()), 10),
		"application_name": "gocelery beat leader lock"} {
		if _, ok := cc.RuntimeParams[k]; !ok {
			cc.RuntimeParams[k] = v
		}
	}
	return cc
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

func (s *Scheduler) newLease(parent context.Context, conn *pgx.Conn, fence int64, start time.Time) *lease {
	ctx, cancel := context.WithCancelCause(parent)
	ls := &lease{fence: fence, schema: s.store.schema, ttl: s.ttl, ctx: ctx, cancel: cancel, conn: conn,
		until: start.Add(s.ttl - s.ttl/20), done: make(chan struct{})}
	go ls.watch(s)
	return ls
}

// held reports whether the lock is still ours: not lost, and the last
// check of the session is less than a TTL old.
func (ls *lease) held() bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return !errors.Is(context.Cause(ls.ctx), beat.ErrLockLost) && time.Now().Before(ls.until)
}

func (ls *lease) Until() time.Time {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.until
}

// watch checks the session every TTL/3 (the fencing token is still ours)
// and ends the lease when a check fails for a whole TTL or finds another
// token.
func (ls *lease) watch(s *Scheduler) {
	defer close(ls.done)
	every := ls.ttl / 3
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ls.ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		var fence int64
		err := ls.withConn(func(c *pgx.Conn) error {
			qctx, cancel := context.WithDeadline(ls.ctx, ls.Until())
			defer cancel()
			return c.QueryRow(qctx, "SELECT fence FROM gocelery_beat_leader WHERE name = $1", string(ls.schema)).Scan(&fence)
		})
		switch {
		case err == nil && fence == ls.fence:
			ls.mu.Lock()
			ls.until = start.Add(ls.ttl - ls.ttl/20)
			ls.mu.Unlock()
			t.Reset(every)
		case err == nil:
			ls.cancel(fmt.Errorf("%w: fencing token %d is now %d", beat.ErrLockLost, ls.fence, fence))
			return
		default:
			if ls.conn.IsClosed() || !time.Now().Before(ls.Until()) {
				ls.cancel(fmt.Errorf("%w: session check failed: %w", beat.ErrLockLost, err))
				return
			}
			s.log.Warn("beat: lock: session check failed, retrying", "err", err)
			t.Reset(min(ls.ttl/10, time.Until(ls.Until())))
		}
	}
}

func (ls *lease) withConn(f func(*pgx.Conn) error) error {
	ls.connMu.Lock()
	defer ls.connMu.Unlock()
	return f(ls.conn)
}

// release ends the lease, unlocks and closes the session.
func (ls *lease) release() {
	ls.cancel(fmt.Errorf("%w: released", beat.ErrLockLost))
	<-ls.done
	ls.connMu.Lock()
	defer ls.connMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = ls.conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", lockKey(ls.schema))
	ls.conn.Close(ctx)
}
