package amqp

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/internal/backoff"
)

// closeTimeout bounds the connection.close handshake on Close, so a broker
// that stopped answering cannot hold Close until the heartbeat gives up.
const closeTimeout = 5 * time.Second

// session is one AMQP connection. A lost session is replaced, never
// repaired: channels and delivery tags belong to it.
type session struct {
	conn    *amqp.Connection
	closed  chan *amqp.Error
	blocked chan amqp.Blocking
}

// connector is the background component that keeps a connection up: when
// the connection is lost it reconnects with backoff, restores the
// topology, and only then hands the new session to the consumers and
// publishers waiting for one.
type connector struct {
	logger     *slog.Logger
	dial       func(context.Context) (*amqp.Connection, error)
	redeclare  func(*amqp.Connection) error
	minBackoff time.Duration
	maxBackoff time.Duration

	mu      sync.Mutex
	sess    *session      // nil while disconnected
	changed chan struct{} // closed and replaced whenever sess changes

	reconnects atomic.Int64

	// ctx aborts a dial in progress on shutdown; done ends the loop.
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	once     sync.Once
	finished chan struct{} // closed when the loop has ended
}

type connectorParams struct {
	logger                 *slog.Logger
	dial                   func(context.Context) (*amqp.Connection, error)
	redeclare              func(*amqp.Connection) error
	minBackoff, maxBackoff time.Duration
}

func newConnector(p connectorParams) *connector {
	ctx, cancel := context.WithCancel(context.Background())
	return &connector{
		logger:     p.logger,
		dial:       p.dial,
		redeclare:  p.redeclare,
		minBackoff: p.minBackoff,
		maxBackoff: p.maxBackoff,
		changed:    make(chan struct{}),
		ctx:        ctx,
		cancel:     cancel,
		done:       make(chan struct{}),
		finished:   make(chan struct{}),
	}
}

// connect opens the first connection, synchronously, so Dial can report
// a wrong URL or password instead of retrying it forever.
func (c *connector) connect(ctx context.Context) error {
	s, err := c.open(ctx, false)
	if err != nil {
		return err
	}
	c.set(s)
	return nil
}

func (c *connector) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(c.finished)
		c.mu.Lock()
		s := c.sess
		c.mu.Unlock()
		for c.watch(s) {
			c.set(nil)
			if s = c.reconnect(); s == nil {
				return
			}
			c.reconnects.Add(1)
			c.set(s)
			c.logger.Info("amqp: reconnected", "reconnects", c.reconnects.Load())
		}
		// Shut down: closing the connection closes every channel on it,
		// and the broker requeues what was not acknowledged.
		if err := s.conn.CloseDeadline(time.Now().Add(closeTimeout)); err != nil && !s.conn.IsClosed() {
			c.logger.Warn("amqp: closing the connection", "error", err)
		}
	}()
}

// watch waits until s is lost (true) or the connector shuts down (false).
func (c *connector) watch(s *session) bool {
	for {
		select {
		case <-c.done:
			return false
		case err := <-s.closed:
			c.logger.Warn("amqp: connection lost", "error", err)
			return true
		case b, ok := <-s.blocked:
			if !ok {
				s.blocked = nil
				continue
			}
			// RabbitMQ blocks publishers during a memory or disk alarm;
			// publishes then wait, so say why.
			if b.Active {
				c.logger.Warn("amqp: connection blocked by the broker", "reason", b.Reason)
			} else {
				c.logger.Info("amqp: connection unblocked")
			}
		}
	}
}

// reconnect dials until it succeeds; nil means shutdown.
func (c *connector) reconnect() *session {
	for attempt := 0; ; attempt++ {
		if !backoff.Sleep(backoff.Delay(attempt, c.minBackoff, c.maxBackoff), c.done) {
			return nil
		}
		s, err := c.open(c.ctx, true)
		select {
		case <-c.done:
			if err == nil {
				_ = s.conn.CloseDeadline(time.Now().Add(closeTimeout))
			}
			return nil
		default:
		}
		if err == nil {
			return s
		}
		c.logger.Warn("amqp: reconnect failed", "attempt", attempt+1, "error", err)
	}
}

// open dials and, after a reconnect, restores the declared topology before
// anyone can use the connection.
func (c *connector) open(ctx context.Context, redeclare bool) (*session, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	s := &session{
		conn:    conn,
		closed:  conn.NotifyClose(make(chan *amqp.Error, 1)),
		blocked: conn.NotifyBlocked(make(chan amqp.Blocking, 1)),
	}
	if redeclare {
		if err := c.redeclare(conn); err != nil {
			_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
			return nil, err
		}
	}
	return s, nil
}

func (c *connector) set(s *session) {
	c.mu.Lock()
	c.sess = s
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// current returns the live session, or nil.
func (c *connector) current() *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil || c.sess.conn.IsClosed() {
		return nil
	}
	return c.sess
}

// wait returns the live session, waiting for a reconnect if there is
// none; it fails with broker.ErrClosed after shutdown.
func (c *connector) wait(ctx context.Context) (*session, error) {
	for {
		c.mu.Lock()
		s, changed := c.sess, c.changed
		c.mu.Unlock()
		select {
		case <-c.done:
			return nil, broker.ErrClosed
		default:
		}
		if s != nil && !s.conn.IsClosed() {
			return s, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.done:
			return nil, broker.ErrClosed
		}
	}
}

// shutdown stops the loop and waits until it has closed the connection,
// which unblocks everything waiting on it.
func (c *connector) shutdown() {
	c.once.Do(func() {
		close(c.done)
		c.cancel()
	})
	<-c.finished
}
