package redis

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// outageGrace is how long commands must fail, with no reply in between,
// before Redis counts as unreachable. Right after a restart or a network
// cut the connection pool still holds connections the server closed; the
// first commands on them fail although Redis is back, and that is not an
// outage worth logging or reporting.
const outageGrace = time.Second

// health follows whether Redis answers, from the outcome of the commands
// every component sends anyway: go-redis redials by itself, so there is no
// connection to watch, only replies. An outage starts when commands have
// failed to reach Redis for outageGrace, is logged once, and counts as a
// reconnect when a reply comes again.
type health struct {
	logger *slog.Logger

	mu         sync.Mutex
	down       bool
	lastOK     time.Time // last reply, or the start of a failure streak
	failing    bool      // the last outcome was a connection error
	reconnects atomic.Int64
}

// observe records the outcome of a command and returns err. A command cut
// short by its context or by Close says nothing about Redis.
func (h *health) observe(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redis.ErrClosed) {
		return err
	}
	now := time.Now()
	h.mu.Lock()
	if !isConnError(err) {
		h.lastOK, h.failing = now, false
		if !h.down {
			h.mu.Unlock()
			return err
		}
		h.down = false
		h.mu.Unlock()
		h.logger.Info("redis: connection restored", "reconnects", h.reconnects.Add(1))
		return err
	}
	if !h.failing {
		// A streak starts: measure the grace from here, not from a reply
		// long ago on an idle broker.
		h.failing, h.lastOK = true, now
	}
	lost := !h.down && now.Sub(h.lastOK) >= outageGrace
	h.down = h.down || lost
	h.mu.Unlock()
	if lost {
		h.logger.Warn("redis: connection lost, retrying", "error", err)
	}
	return err
}

func (h *health) up() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.down
}

// isConnError reports whether err means Redis could not be reached or the
// connection broke, as opposed to an answer: redis.Nil, an error reply, or
// the caller's context.
func isConnError(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redis.ErrClosed) {
		return false
	}
	var re redis.Error
	if errors.As(err, &re) {
		// Error replies, except those saying the server is not ready
		// for us yet, as during a restart or failover.
		return isTransientReply(err)
	}
	return true
}

// isTransientReply reports an error reply that means "not now" rather
// than "wrong": the server is loading its data set, is a replica after a
// failover (or a master without the replicas min-replicas-to-write asks
// for, or whose blocked client a demotion unblocked), or is busy with a
// script.
func isTransientReply(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	for _, p := range [...]string{"LOADING", "READONLY", "MASTERDOWN", "BUSY ", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS", "UNBLOCKED"} {
		if len(msg) >= len(p) && msg[:len(p)] == p {
			return true
		}
	}
	return false
}
