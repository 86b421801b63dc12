package results

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gocelery/gocelery/protocol"
	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/internal/redisurl"
)

// Sentinel errors callers branch on; returned errors wrap them.
var (
	// ErrInvalidMeta reports a Meta that cannot be stored: nil, or with an
	// empty task id or status.
	ErrInvalidMeta = errors.New("results: invalid task meta")
	// ErrEmptyID reports an empty task or group id, which Celery refuses
	// too (it would address the bare key prefix).
	ErrEmptyID = errors.New("results: empty id")
	// ErrTooLarge reports a value over Redis's 512 MiB string limit
	// (Celery's BackendStoreError).
	ErrTooLarge = errors.New("results: value too large for Redis")
	// ErrMalformed reports a stored or published value that is not a task
	// state Celery could have written.
	ErrMalformed = errors.New("results: malformed task meta")
)

// Key prefixes, as in Celery's BaseKeyValueStoreBackend.
const (
	taskKeyPrefix  = "celery-task-meta-"
	groupKeyPrefix = "celery-taskset-meta-"
)

// maxValueSize is Redis's string limit, checked by Celery before writing.
const maxValueSize = 512 << 20

// Defaults for zero Config fields.
const (
	defaultExpires = 24 * time.Hour
	defaultRecheck = 5 * time.Second
)

// Config mirror the Celery settings that change what the backend writes.
// Both sides must agree on KeyPrefix; the others only affect the writer.
type Config struct {
	// KeyPrefix is result_backend_transport_options["global_keyprefix"].
	// Like Celery, "_" is appended unless it already ends in one of
	// ":", "_", "-" or ".".
	KeyPrefix string
	// Expires is result_expires: the TTL of stored states and saved
	// groups. Zero means Celery's default of one day; negative means keys
	// never expire (plain SET). Whole seconds are used, as Celery does;
	// anything shorter than a second is one second.
	Expires time.Duration
	// FailureExpires is Celery 5.7's result_failure_expires: the TTL of
	// FAILURE states. Zero means Expires; negative means never.
	FailureExpires time.Duration
	// Compression is result_compression ("gzip", "bzip2", "lzma",
	// "brotli", "zstd"; "" for none). Only Celery 5.7 and newer read
	// compressed results; Get and Wait read them whatever this says.
	Compression string
	// RecheckInterval is how often Wait re-reads the key in case a PUBLISH
	// was missed (while the subscription was reconnecting, for example).
	// Zero means 5 seconds.
	RecheckInterval time.Duration
	// TransportOptions are result_backend_transport_options for the
	// connection OpenRedis makes: master_name and sentinel_kwargs for a
	// sentinel:// URL, socket_timeout and the like for any.
	TransportOptions map[string]any
}

// Redis is a Celery-compatible Redis result backend. It is safe for
// concurrent use.
type Redis struct {
	client      redis.UniversalClient
	ownsClient  bool
	taskPrefix  string
	groupPrefix string
	expires     time.Duration // 0: no expiry
	failExpires time.Duration // 0: no expiry
	compression string        // kombu MIME type, "" for none
	recheck     time.Duration
	writer      *stateWriter // batches concurrent Store calls
}

// NewRedis returns a backend using client. The caller keeps ownership of
// client: Close does not close it, so it can be shared with a broker.
// An unknown Config.Compression is ignored with no compression, as Celery
// only warns for backends that cannot compress; use OpenRedis or
// protocol.CompressionType to validate it first.
func NewRedis(client redis.UniversalClient, opts Config) *Redis {
	r := &Redis{
		client:  client,
		expires: ttl(opts.Expires, defaultExpires),
		recheck: opts.RecheckInterval,
		writer:  newStateWriter(client),
	}
	r.failExpires = r.expires
	if opts.FailureExpires != 0 {
		r.failExpires = ttl(opts.FailureExpires, 0)
	}
	if r.recheck <= 0 {
		r.recheck = defaultRecheck
	}
	if opts.Compression != "" {
		r.compression, _ = protocol.CompressionType(opts.Compression)
	}
	prefix := opts.KeyPrefix
	if prefix != "" && !strings.ContainsAny(prefix[len(prefix)-1:], ":_-.") {
		prefix += "_"
	}
	r.taskPrefix = prefix + taskKeyPrefix
	r.groupPrefix = prefix + groupKeyPrefix
	return r
}

// ttl resolves a Config duration: 0 is def, negative is no expiry (0),
// others are whole seconds, at least one.
func ttl(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	case d < time.Second:
		return time.Second
	}
	return d.Truncate(time.Second)
}

// OpenRedis connects to the Redis server named by a Celery result_backend
// URL: redis://[[user]:password@]host[:port][/db], rediss://... or
// unix://path. For rediss, Celery's ssl_cert_reqs (required, optional,
// none, or the CERT_* names), ssl_ca_certs, ssl_certfile and ssl_keyfile
// query parameters are understood; other parameters are go-redis's.
// Celery's SentinelBackend form,
// sentinel://[:password@]host:26379[/db];sentinel://host2:26379;..., opens
// go-redis's failover client, with opts.TransportOptions["master_name"]
// (required) and the other options redisurl.ParseSentinel reads. The
// returned backend owns the connection: Close closes it.
func OpenRedis(rawURL string, opts Config) (*Redis, error) {
	if opts.Compression != "" {
		if _, ok := protocol.CompressionType(opts.Compression); !ok {
			return nil, fmt.Errorf("results: unknown result compression %q: %w", opts.Compression, protocol.ErrUnsupportedCompression)
		}
	}
	c, err := redisurl.NewClient(rawURL, opts.TransportOptions, nil)
	if err != nil {
		return nil, fmt.Errorf("results: backend URL: %w", err)
	}
	r := NewRedis(c.Client, opts)
	r.ownsClient = true
	return r, nil
}

// Client returns the Redis client, for operations this package does not
// wrap (chord joins, for example).
func (r *Redis) Client() redis.UniversalClient { return r.client }

// Close closes the client if OpenRedis created it; a client passed to
// NewRedis is left to its owner.
func (r *Redis) Close() error {
	if !r.ownsClient {
		return nil
	}
	return r.client.Close()
}

// TaskKey returns the key (and PUBLISH channel) of a task's state:
// [prefix]celery-task-meta-<id>.
func (r *Redis) TaskKey(taskID string) string { return r.taskPrefix + taskID }

// GroupKey returns the key of a saved group: [prefix]celery-taskset-meta-<id>.
// Chord keys add a suffix to it (".j", ".s", ".t").
func (r *Redis) GroupKey(groupID string) string { return r.groupPrefix + groupID }

// Store writes a task state as Celery's worker does: unless the stored
// state is already SUCCESS (then Store does nothing and returns nil), one
// MULTI/EXEC with SETEX of the encoded meta and PUBLISH of the same bytes
// on the key's channel. For ready states a zero m.DateDone is set to now,
// in UTC, on m itself.
func (r *Redis) Store(ctx context.Context, m *Meta) error {
	if m == nil || m.TaskID == "" || m.Status == "" {
		return fmt.Errorf("%w: task id and status are required", ErrInvalidMeta)
	}
	if m.DateDone.IsZero() && IsReady(m.Status) {
		m.DateDone = time.Now().UTC()
	}
	data, err := m.Encode()
	if err != nil {
		return err
	}
	if data, err = r.compress(data); err != nil {
		return fmt.Errorf("results: storing task %q: %w", m.TaskID, err)
	}
	if len(data) > maxValueSize {
		return fmt.Errorf("%w: task %q state is %d bytes", ErrTooLarge, m.TaskID, len(data))
	}
	key := r.TaskKey(m.TaskID)
	expires := r.expires
	if m.Status == Failure {
		expires = r.failExpires
	}
	// One round trip in the common case; the script says when the stored
	// value needs Go to read its status.
	done, err := r.storeScripted(ctx, key, data, expires)
	if err != nil {
		return fmt.Errorf("results: storing state of task %q: %w", m.TaskID, err)
	}
	if done {
		return nil
	}
	cur, err := r.client.Get(ctx, key).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
	case err != nil:
		return fmt.Errorf("results: reading state of task %q: %w", m.TaskID, err)
	default:
		old, err := DecodeMeta(cur)
		if err != nil {
			return fmt.Errorf("results: reading state of task %q: %w", m.TaskID, err)
		}
		if old.Status == Success {
			return nil
		}
	}
	if err := r.set(ctx, key, data, expires); err != nil {
		return fmt.Errorf("results: storing state of task %q: %w", m.TaskID, err)
	}
	return nil
}

// storeScript is Store's common case in one round trip, and atomic where
// Celery's GET-then-MULTI is not: it writes (SETEX or SET, then PUBLISH)
// unless the stored state is SUCCESS. Celery and this package write
// "status" first, so the state is read from the prefix; any other stored
// form (compressed, msgpack) returns -1 and Go decides.
var storeScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local status = string.match(cur, '^{"status": "([^"]*)"')
  if not status then
    return -1
  end
  if status == 'SUCCESS' then
    return 0
  end
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
`)

// storeScripted runs storeScript; done is false when Go must read the
// stored state itself.
func (r *Redis) storeScripted(ctx context.Context, key string, data []byte, expires time.Duration) (done bool, err error) {
	return r.writer.store(ctx, key, data, expires)
}

// set is Celery's RedisBackend._set: SETEX (or SET) and PUBLISH in one
// transaction.
func (r *Redis) set(ctx context.Context, key string, data []byte, expires time.Duration) error {
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if expires > 0 {
			p.SetEx(ctx, key, data, expires)
		} else {
			p.Set(ctx, key, data, 0)
		}
		p.Publish(ctx, key, data)
		return nil
	})
	return err
}

func (r *Redis) compress(data []byte) ([]byte, error) {
	if r.compression == "" {
		return data, nil
	}
	mime, body, err := protocol.Compress(r.compression, data)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(compressedMagic)+len(mime)+1+len(body))
	out = append(out, compressedMagic...)
	out = append(out, mime...)
	out = append(out, 0)
	return append(out, body...), nil
}

// Get reads a task's state. A missing key is PENDING, as Celery reads it:
// &Meta{TaskID: taskID, Status: Pending}. Exception results are decoded
// into *Exception.
func (r *Redis) Get(ctx context.Context, taskID string) (*Meta, error) {
	if taskID == "" {
		return nil, fmt.Errorf("%w: task id", ErrEmptyID)
	}
	data, err := r.client.Get(ctx, r.TaskKey(taskID)).Bytes()
	if errors.Is(err, redis.Nil) {
		return &Meta{TaskID: taskID, Status: Pending}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("results: reading state of task %q: %w", taskID, err)
	}
	return decodeFor(taskID, data)
}

// decodeFor decodes a state read for taskID; values without a task_id
// (written by very old Celery versions) get it from the key.
func decodeFor(taskID string, data []byte) (*Meta, error) {
	m, err := DecodeMeta(data)
	if err != nil {
		return nil, fmt.Errorf("results: state of task %q: %w", taskID, err)
	}
	if m.TaskID == "" {
		m.TaskID = taskID
	}
	return m, nil
}

// Forget deletes a task's state, as AsyncResult.forget does.
func (r *Redis) Forget(ctx context.Context, taskID string) error {
	if taskID == "" {
		return fmt.Errorf("%w: task id", ErrEmptyID)
	}
	if err := r.client.Del(ctx, r.TaskKey(taskID)).Err(); err != nil {
		return fmt.Errorf("results: forgetting task %q: %w", taskID, err)
	}
	return nil
}

// Wait blocks until the task reaches a ready state (SUCCESS, FAILURE,
// REVOKED) and returns that state; it does not turn FAILURE into an error
// (see Meta.Err). Like Celery's client it subscribes to the key's channel
// first and then reads the key once, so a state stored in between is not
// missed; after that it waits for messages, re-reading the key every
// Config.RecheckInterval in case one was lost. It returns ctx.Err() when
// ctx ends first.
func (r *Redis) Wait(ctx context.Context, taskID string) (*Meta, error) {
	if taskID == "" {
		return nil, fmt.Errorf("%w: task id", ErrEmptyID)
	}
	key := r.TaskKey(taskID)
	sub := r.client.Subscribe(ctx, key)
	defer sub.Close()
	// Wait for the server's confirmation: only then is a PUBLISH after our
	// GET certain to reach us.
	if _, err := sub.Receive(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("results: subscribing to task %q: %w", taskID, err)
	}
	m, err := r.Get(ctx, taskID)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if m.Ready() {
		return m, nil
	}
	messages := sub.Channel()
	recheck := time.NewTicker(r.recheck)
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case msg, ok := <-messages:
			if !ok {
				return nil, fmt.Errorf("results: waiting for task %q: subscription closed", taskID)
			}
			m, err := decodeFor(taskID, []byte(msg.Payload))
			if err != nil {
				// Not a state we understand on this channel: trust the key.
				if m, err = r.Get(ctx, taskID); err != nil {
					return nil, waitErr(ctx, err)
				}
			}
			if m.Ready() {
				return m, nil
			}
		case <-recheck.C:
			m, err := r.Get(ctx, taskID)
			if err != nil {
				return nil, waitErr(ctx, err)
			}
			if m.Ready() {
				return m, nil
			}
		}
	}
}

func waitErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// SaveGroup stores a group's member ids as GroupResult.save() does:
// {"result": [[group_id, null], [[[id, null], null], ...]]} under
// celery-taskset-meta-<group id>, with SETEX and PUBLISH like a task state.
// Chords whose header holds nested groups need it.
func (r *Redis) SaveGroup(ctx context.Context, groupID string, childIDs []string) error {
	if groupID == "" {
		return fmt.Errorf("%w: group id", ErrEmptyID)
	}
	data, err := MarshalValue(Dict{{"result", GroupTuple(groupID, childIDs)}})
	if err != nil {
		return fmt.Errorf("results: encoding group %q: %w", groupID, err)
	}
	if data, err = r.compress(data); err != nil {
		return fmt.Errorf("results: saving group %q: %w", groupID, err)
	}
	if len(data) > maxValueSize {
		return fmt.Errorf("%w: group %q is %d bytes", ErrTooLarge, groupID, len(data))
	}
	if err := r.set(ctx, r.GroupKey(groupID), data, r.expires); err != nil {
		return fmt.Errorf("results: saving group %q: %w", groupID, err)
	}
	return nil
}

// SetChordSize records how many header results a chord waits for, as the
// producer does before sending the last header task: <group key>.s holds
// the decimal size with the result TTL. Like Celery 5.7 it first deletes
// <group key>.c, the join's dispatch claim, because re-applying a frozen
// chord reuses its group id for a new run; older Celery never writes that
// key.
func (r *Redis) SetChordSize(ctx context.Context, groupID string, size int) error {
	if groupID == "" {
		return fmt.Errorf("%w: group id", ErrEmptyID)
	}
	key := r.GroupKey(groupID)
	value := strconv.Itoa(size)
	// Not a transaction: the two keys may live in different cluster slots,
	// and Celery sends them as separate commands too.
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, key+".c")
		if r.expires > 0 {
			p.SetEx(ctx, key+".s", value, r.expires)
		} else {
			p.Set(ctx, key+".s", value, 0)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("results: setting size of chord %q: %w", groupID, err)
	}
	return nil
}
