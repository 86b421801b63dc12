package amqp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocelery/gocelery/broker"
)

// ErrNacked is returned by Publish when the broker refused to take
// responsibility for a message (basic.nack), e.g. a full queue with
// x-overflow reject-publish.
var ErrNacked = errors.New("amqp: message nacked by the broker")

// ErrUnconfirmed is returned by Publish, wrapping the context's error,
// when the context ended after the message was written and before the
// broker confirmed it (a broker blocking publishers on a memory or disk
// alarm, a slow disk): the message may still be delivered. Publishing the
// same message again (same exchange, routing key and correlation id, that
// is Celery's task id) while its channel lives waits for that confirm
// instead of sending a second copy, and one that comes after the confirm
// (for up to confirmedMemory) succeeds without writing it again; a retry is
// sent anew only once the first was refused or its channel lost.
var ErrUnconfirmed = errors.New("amqp: publish not confirmed: the message may still be delivered")

// publisher is the background component behind Publish: one channel in
// confirm mode, opened on first use and again after a loss, plus the
// goroutine that collects basic.return frames for it.
type publisher struct {
	logger *slog.Logger
	conn   *connector
	retry  func(attempt int) time.Duration
	wg     sync.WaitGroup // the return collectors

	mu     sync.Mutex
	pc     *pubChannel // nil until needed or after a loss
	closed bool        // no channel is opened after shutdown
}

type publisherParams struct {
	logger *slog.Logger
	conn   *connector
	retry  func(attempt int) time.Duration
}

func newPublisher(p publisherParams) *publisher {
	return &publisher{
		logger: p.logger,
		conn:   p.conn,
		retry:  p.retry,
	}
}

// shutdown waits for the return collectors, which end with their channels
// (closed with the connection), and lets no new channel open.
func (p *publisher) shutdown() {
	p.mu.Lock()
	p.closed = true
	pc := p.pc
	p.mu.Unlock()
	if pc != nil && !pc.ch.IsClosed() {
		_ = pc.ch.Close()
	}
	p.wg.Wait()
}

// pubChannel is one publishing channel and its basic.return collector.
type pubChannel struct {
	ch     *amqp.Channel
	conn   *amqp.Connection
	closed chan *amqp.Error // buffered: amqp091 sends the reason before it resolves pending confirms

	exchanges sync.Map // exchange names seen to exist on conn

	returns chan amqp.Return
	sync    chan chan struct{}
	stopped chan struct{} // closed when the collector has ended

	mu       sync.Mutex
	returned []amqp.Return
	closeErr *amqp.Error
	errRead  bool
	// unconfirmed holds the publishes written on this channel whose caller
	// stopped waiting before the confirm, by pendingKey: until the confirm
	// comes, and when it is an ack for confirmedMemory after, so a retry
	// that starts after the confirm (beat retries every second) does not
	// write a second copy.
	unconfirmed map[string]*doubt
}

// doubt is a publish whose caller gave up on its confirm.
type doubt struct {
	dc    *amqp.DeferredConfirmation
	acked time.Time // when the confirm came as an ack; zero while due
}

// confirmedMemory is how long an in-doubt publish is remembered after
// its ack, and maxDoubts bounds how many are remembered per channel.
const (
	confirmedMemory = 5 * time.Minute
	maxDoubts       = 4096
)

// pendingKey names a message for matching a retry with a publish still
// in doubt: where it goes and its correlation id (the task id of a Celery
// message). A message without one is never matched.
func pendingKey(exchange, key string, m *amqp.Publishing) string {
	if m.CorrelationId == "" {
		return ""
	}
	return exchange + "\x00" + key + "\x00" + m.CorrelationId
}

// inDoubt returns the earlier publish of k whose caller gave up on its
// confirm: still due, or acked less than confirmedMemory ago.
func (pc *pubChannel) inDoubt(k string) *amqp.DeferredConfirmation {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	d := pc.unconfirmed[k]
	if d == nil {
		return nil
	}
	if !d.acked.IsZero() && time.Since(d.acked) > confirmedMemory {
		delete(pc.unconfirmed, k)
		return nil
	}
	return d.dc
}

// keepInDoubt remembers a publish whose caller gave up on the confirm,
// until the confirm (or the channel's close) resolves it, and an ack for
// confirmedMemory more.
func (pc *pubChannel) keepInDoubt(k string, dc *amqp.DeferredConfirmation) {
	pc.mu.Lock()
	if pc.unconfirmed == nil {
		pc.unconfirmed = map[string]*doubt{}
	}
	if len(pc.unconfirmed) >= maxDoubts {
		pc.pruneDoubts()
	}
	d := &doubt{dc: dc}
	pc.unconfirmed[k] = d
	pc.mu.Unlock()
	go func() {
		<-dc.Done() // amqp091 resolves every pending confirm when the channel closes
		pc.mu.Lock()
		defer pc.mu.Unlock()
		if pc.unconfirmed[k] != d {
			return
		}
		if dc.Acked() {
			d.acked = time.Now()
			return
		}
		delete(pc.unconfirmed, k)
	}()
}

// pruneDoubts makes room for one more entry: it drops the acks older than
// confirmedMemory and, if that frees nothing, the oldest ack. Entries still
// due stay (a retry must find them). Called with pc.mu held.
func (pc *pubChannel) pruneDoubts() {
	oldest, at := "", time.Time{}
	for k, d := range pc.unconfirmed {
		switch {
		case d.acked.IsZero():
		case time.Since(d.acked) > confirmedMemory:
			delete(pc.unconfirmed, k)
		case oldest == "" || d.acked.Before(at):
			oldest, at = k, d.acked
		}
	}
	if len(pc.unconfirmed) >= maxDoubts && oldest != "" {
		delete(pc.unconfirmed, oldest)
	}
}

// maxKeptReturns bounds the returns kept for matching. Each publisher
// takes its own return right after its confirm, so only returns of
// publishes that gave up waiting (context done) can pile up; the bound
// must still exceed the mandatory publishes in flight at once.
const maxKeptReturns = 4096

// collect takes basic.return frames as amqp091 reads them. The channel is
// unbuffered so amqp091's reader hands a return over before it goes on to
// the ack that follows it; a publisher that saw its ack then syncs with
// this goroutine (sync) and is sure to find its return recorded.
func (pc *pubChannel) collect(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(pc.stopped)
		for {
			select {
			case r, ok := <-pc.returns:
				if !ok {
					return
				}
				pc.mu.Lock()
				if len(pc.returned) == maxKeptReturns {
					pc.returned = pc.returned[1:]
				}
				pc.returned = append(pc.returned, r)
				pc.mu.Unlock()
			case done := <-pc.sync:
				close(done)
			}
		}
	}()
}

// takeReturn reports whether m came back unroutable. A basic.return names
// no delivery tag, but the broker sends it before the confirm of the same
// message, so once m is confirmed its return, if any, is recorded; it is
// told apart from the returns of other publishes in flight by exchange,
// routing key, correlation id (the task id) and body. Identical messages
// to the same place route alike, so taking either one's return is right.
func (pc *pubChannel) takeReturn(exchange, key string, m *amqp.Publishing) (amqp.Return, bool) {
	done := make(chan struct{})
	select {
	case pc.sync <- done:
		<-done
	case <-pc.stopped:
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for i, r := range pc.returned {
		if r.Exchange == exchange && r.RoutingKey == key && r.CorrelationId == m.CorrelationId &&
			bytes.Equal(r.Body, m.Body) {
			pc.returned = append(pc.returned[:i], pc.returned[i+1:]...)
			return r, true
		}
	}
	return amqp.Return{}, false
}

// closeError returns why the closed channel closed, nil for a normal close.
func (pc *pubChannel) closeError() *amqp.Error {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if !pc.errRead {
		select {
		case pc.closeErr = <-pc.closed:
			pc.errRead = true
		default:
		}
	}
	return pc.closeErr
}

// channel returns the publishing channel, opening one (and waiting for
// the connection) if needed.
func (p *publisher) channel(ctx context.Context) (*pubChannel, error) {
	for attempt := 0; ; attempt++ {
		p.mu.Lock()
		pc := p.pc
		p.mu.Unlock()
		if pc != nil && !pc.ch.IsClosed() {
			return pc, nil
		}
		s, err := p.conn.wait(ctx)
		if err != nil {
			return nil, err
		}
		p.mu.Lock()
		switch {
		case p.closed:
			err = broker.ErrClosed
		case p.pc == pc: // nobody replaced it meanwhile
			pc, err = p.open(s.conn)
			if err == nil {
				p.pc = pc
			}
		}
		p.mu.Unlock()
		if err == nil {
			continue
		}
		if errors.Is(err, broker.ErrClosed) {
			return nil, err
		}
		p.logger.Warn("amqp: opening the publishing channel", "error", err)
		select {
		case <-time.After(p.retry(attempt)):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (p *publisher) open(conn *amqp.Connection) (*pubChannel, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, err
	}
	pc := &pubChannel{
		ch:      ch,
		conn:    conn,
		closed:  ch.NotifyClose(make(chan *amqp.Error, 1)),
		returns: ch.NotifyReturn(make(chan amqp.Return)),
		sync:    make(chan chan struct{}),
		stopped: make(chan struct{}),
	}
	pc.collect(&p.wg)
	return pc, nil
}

// publish sends m and waits for the broker's confirm. A message in flight
// when the connection drops is sent again on the next connection: delivery
// is at least once, as with kombu's publish retry.
func (p *publisher) publish(ctx context.Context, exchange, key string, mandatory bool, m *amqp.Publishing) error {
	var lastReason string
	repeats := 0
	for attempt := 0; ; attempt++ {
		pc, err := p.channel(ctx)
		if err != nil {
			return err
		}
		retry, err := p.publishOn(ctx, pc, exchange, key, mandatory, m)
		if !retry {
			return err
		}
		if e := (*amqp.Error)(nil); errors.As(err, &e) && isChannelError(e.Code) {
			// The same channel error again and again is most likely this
			// message's own (too large, say), not a neighbour's.
			if e.Reason == lastReason {
				repeats++
			} else {
				lastReason, repeats = e.Reason, 1
			}
			if repeats == maxSameChannelError {
				return fmt.Errorf("amqp: publish: %w", err)
			}
		}
		p.logger.Debug("amqp: publish interrupted, retrying", "error", err, "attempt", attempt+1)
		select {
		case <-time.After(p.retry(attempt)):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// maxSameChannelError bounds the retries of a publish whose channel
// closes with the same channel error each time.
const maxSameChannelError = 3

// publishOn sends once; retry reports that the channel closed before the
// confirm came, for a reason that may not be this message's.
func (p *publisher) publishOn(ctx context.Context, pc *pubChannel, exchange, key string, mandatory bool, m *amqp.Publishing) (retry bool, err error) {
	if retry, err := pc.checkExchange(exchange); err != nil {
		return retry, err
	}
	k := pendingKey(exchange, key, m)
	if k != "" {
		if dc := pc.inDoubt(k); dc != nil {
			// This message was written before and its confirm is still
			// due: wait for it rather than send a second copy.
			select {
			case <-dc.Done():
			case <-ctx.Done():
				return false, fmt.Errorf("%w: %w", ErrUnconfirmed, ctx.Err())
			}
			if dc.Acked() {
				return false, p.returned(pc, exchange, key, mandatory, m)
			}
			// Refused, or its channel closed: send it (again) below.
		}
	}
	dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, mandatory, false, *m)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if pc.ch.IsClosed() {
			return p.closedErr(pc, exchange)
		}
		return false, fmt.Errorf("amqp: publish: %w", err)
	}
	closed, err := p.confirmOf(ctx, pc, k, dc, exchange, key, mandatory, m)
	if closed {
		return p.closedErr(pc, exchange)
	}
	return false, err
}

// confirmOf waits for the confirm of m, written on pc, and returns what the
// publish comes to; closed reports that pc closed before the confirm came
// (amqp091 nacks what was pending then), so m must be sent again.
func (p *publisher) confirmOf(ctx context.Context, pc *pubChannel, k string, dc *amqp.DeferredConfirmation,
	exchange, key string, mandatory bool, m *amqp.Publishing) (closed bool, err error) {
	select {
	case <-dc.Done():
	case <-ctx.Done():
		// Written, not confirmed: the message may still reach the queue.
		// A retry of it waits for this confirm (see ErrUnconfirmed).
		if k != "" {
			pc.keepInDoubt(k, dc)
		}
		return false, fmt.Errorf("%w: %w", ErrUnconfirmed, ctx.Err())
	}
	if dc.Acked() {
		return false, p.returned(pc, exchange, key, mandatory, m)
	}
	if pc.ch.IsClosed() {
		return true, nil
	}
	p.recycle(pc)
	return false, ErrNacked
}

// returned is the error for a confirmed mandatory message that the broker
// returned as unroutable, nil otherwise.
func (p *publisher) returned(pc *pubChannel, exchange, key string, mandatory bool, m *amqp.Publishing) error {
	if mandatory {
		if r, ok := pc.takeReturn(exchange, key, m); ok {
			return fmt.Errorf("%w: %s (exchange %q, routing key %q)", broker.ErrUnroutable, r.ReplyText, exchange, key)
		}
	}
	return nil
}

// checkExchange makes sure a named exchange exists before the first
// publish to it. Publishing to a missing exchange is a channel error: the
// broker would close the publishing channel under every publish in flight
// and they would all have to be sent again (some twice). The passive
// declaration runs on a throwaway channel instead, once per exchange and
// connection. The default exchange and amq.* always exist.
func (pc *pubChannel) checkExchange(exchange string) (retry bool, err error) {
	if exchange == "" || strings.HasPrefix(exchange, "amq.") {
		return false, nil
	}
	if _, ok := pc.exchanges.Load(exchange); ok {
		return false, nil
	}
	ch, err := pc.conn.Channel()
	if err != nil {
		return true, err // connection lost
	}
	defer ch.Close()
	if err := ch.ExchangeDeclarePassive(exchange, "direct", false, false, false, false, nil); err != nil {
		if e := (*amqp.Error)(nil); errors.As(err, &e) && isChannelError(e.Code) {
			return false, fmt.Errorf("amqp: publish to exchange %q: %w", exchange, err)
		}
		return true, err
	}
	pc.exchanges.Store(exchange, struct{}{})
	return false, nil
}

// closedErr decides what a closed publishing channel means. A channel
// error (404, 403, 406: the connection lives) closes the channel under
// every publish in flight, so only the one it names, a missing or
// forbidden exchange, fails at once; the others are sent again, a few
// times at most. Anything else is a lost connection, retried until the
// context ends.
func (p *publisher) closedErr(pc *pubChannel, exchange string) (retry bool, err error) {
	e := pc.closeError()
	if e == nil {
		return true, amqp.ErrClosed
	}
	if isChannelError(e.Code) && strings.Contains(e.Reason, "exchange '"+exchange+"'") {
		return false, fmt.Errorf("amqp: publish: %w", e)
	}
	return true, e
}

// isChannelError reports the AMQP soft errors, which close a channel but
// not its connection.
func isChannelError(code int) bool {
	switch code {
	case amqp.ContentTooLarge, amqp.NoRoute, amqp.NoConsumers, amqp.AccessRefused,
		amqp.NotFound, amqp.ResourceLocked, amqp.PreconditionFailed:
		return true
	}
	return false
}

// publishAsync writes m and returns without waiting for the confirm; wait
// waits for it and returns what publish would have. A message whose
// channel closes before its confirm is sent again by wait (at least once,
// as publish); one refused with a channel error is sent by publish's retry
// loop. When the write itself fails, publishAsync falls back to publish.
func (p *publisher) publishAsync(ctx context.Context, exchange, key string, mandatory bool, m *amqp.Publishing) (wait func(context.Context) error, err error) {
	pc, err := p.channel(ctx)
	if err != nil {
		return nil, err
	}
	blocking := func() (func(context.Context) error, error) {
		if err := p.publish(ctx, exchange, key, mandatory, m); err != nil {
			return nil, err
		}
		return confirmed, nil
	}
	if retry, err := pc.checkExchange(exchange); err != nil || retry {
		return blocking()
	}
	k := pendingKey(exchange, key, m)
	if k != "" && pc.inDoubt(k) != nil {
		return blocking() // the retry of an in-doubt publish: publishOn resolves it
	}
	dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, mandatory, false, *m)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return blocking()
	}
	return func(wctx context.Context) error {
		closed, err := p.confirmOf(wctx, pc, k, dc, exchange, key, mandatory, m)
		if closed {
			// The message may or may not have reached the queue: send it
			// again, with publish's retries.
			return p.publish(wctx, exchange, key, mandatory, m)
		}
		return err
	}, nil
}

// recycleDelay is how long a recycled channel stays open for the confirms
// of the publishes already written on it.
const recycleDelay = 5 * time.Second

// recycle moves later publishes to a new channel after a nack, and closes
// pc once the confirms in flight on it had time to come. RabbitMQ 3.10.8
// keeps nacking every publish to a quorum queue on a channel that first
// published to it while the queue's leader was down (make ha,
// TestClusterKillNode: nacked for 10 minutes, while a new channel on the
// same node was confirmed at once); a queue that is full (x-overflow
// reject-publish) costs one channel per nack.
func (p *publisher) recycle(pc *pubChannel) {
	p.mu.Lock()
	if p.pc != pc {
		p.mu.Unlock()
		return
	}
	p.pc = nil
	p.mu.Unlock()
	p.logger.Debug("amqp: publish nacked, later publishes use a new channel")
	time.AfterFunc(recycleDelay, func() { _ = pc.ch.Close() })
}

// confirmed is the wait of a publish already confirmed.
func confirmed(context.Context) error { return nil }
