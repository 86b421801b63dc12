package beat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotFound reports an entry name that is not in the store.
var ErrNotFound = errors.New("beat: no such entry")

// DefaultKeyPrefix is redbeat's redbeat_key_prefix default.
const DefaultKeyPrefix = "redbeat:"

// Store keeps entries in Redis in celery-redbeat's layout. It is safe for
// concurrent use; every change is announced on the changes channel, so a
// running leader picks it up at once.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewStore returns a store on rdb under prefix (redbeat_key_prefix; ""
// means "redbeat:").
func NewStore(rdb redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	return &Store{rdb: rdb, prefix: prefix}
}

// Key is an entry's hash key, prefix + name, as redbeat's generate_key.
func (s *Store) Key(name string) string { return s.prefix + name }

// ScheduleKey is the sorted set of entry keys by next run time.
func (s *Store) ScheduleKey() string { return s.prefix + ":schedule" }

// LockKey is redbeat's lock key, shared with Python beats.
func (s *Store) LockKey() string { return s.prefix + ":lock" }

// staticsKey lists the entries synced from a schedule file. It is not
// redbeat's ":statics": a Python beat deletes the statics missing from its
// own beat_schedule at start, which would remove ours.
func (s *Store) staticsKey() string { return s.prefix + ":statics:gocelery" }
func (s *Store) fenceKey() string   { return s.prefix + ":fence" }
func (s *Store) changesKey() string { return s.prefix + ":changes" }

// score is the sorted-set score: the next run as UNIX seconds (with
// milliseconds; redbeat reads any number), -1 for never, as redbeat.
func score(next time.Time) float64 {
	if next.IsZero() {
		return -1
	}
	return float64(next.UnixMilli()) / 1000
}

// Put writes an entry's definition, keeping its run state when it exists
// already. A new entry's last_run_at is now, as Celery's: an interval
// entry first runs one interval from now, a crontab at its next match.
func (s *Store) Put(ctx context.Context, e *Entry) error {
	def, ext, err := e.encodeDefinition()
	if err != nil {
		return err
	}
	key := s.Key(e.Name)
	last := e.LastRunAt
	if last.IsZero() {
		last = time.Now()
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, "definition", def, "gocelery", ext)
		p.HSetNX(ctx, key, "meta", encodeMeta(last, e.TotalRunCount))
		return nil
	})
	if err != nil {
		return fmt.Errorf("beat: put %q: %w", e.Name, err)
	}
	stored, err := s.Get(ctx, e.Name)
	if err != nil {
		return err
	}
	return s.reschedule(ctx, stored)
}

// reschedule sets the entry's score from its state and announces it.
func (s *Store) reschedule(ctx context.Context, e *Entry) error {
	next := e.NextRun(e.LastRunAt)
	if !e.Enabled && !next.IsZero() {
		next = time.Now().Add(5 * time.Second) // redbeat re-checks disabled entries after 5 s
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, s.ScheduleKey(), redis.Z{Score: score(next), Member: s.Key(e.Name)})
		p.Publish(ctx, s.changesKey(), e.Name)
		return nil
	})
	if err != nil {
		return fmt.Errorf("beat: schedule %q: %w", e.Name, err)
	}
	return nil
}

// Get reads one entry. An entry whose schedule this package cannot run is
// returned with an error wrapping ErrUnsupportedSchedule.
func (s *Store) Get(ctx context.Context, name string) (*Entry, error) {
	fields, err := s.rdb.HGetAll(ctx, s.Key(name)).Result()
	if err != nil {
		return nil, fmt.Errorf("beat: get %q: %w", name, err)
	}
	if len(fields) == 0 || fields["definition"] == "" {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return decodeEntry(fields)
}

// List reads every entry of the schedule, in next-run order. Entries that
// cannot be decoded are left out and reported in the joined error.
func (s *Store) List(ctx context.Context) ([]*Entry, error) {
	keys, err := s.rdb.ZRange(ctx, s.ScheduleKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("beat: list: %w", err)
	}
	return s.load(ctx, keys)
}

func (s *Store) load(ctx context.Context, keys []string) ([]*Entry, error) {
	var out []*Entry
	var errs []error
	const batch = 500
	for i := 0; i < len(keys); i += batch {
		chunk := keys[i:min(i+batch, len(keys))]
		cmds := make([]*redis.MapStringStringCmd, len(chunk))
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j, k := range chunk {
				cmds[j] = p.HGetAll(ctx, k)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("beat: load entries: %w", err)
		}
		for j, c := range cmds {
			fields := c.Val()
			if fields["definition"] == "" {
				continue // removed since the ZRANGE (redbeat ZREMs these)
			}
			e, err := decodeEntry(fields)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", chunk[j], err))
				continue
			}
			out = append(out, e)
		}
	}
	return out, errors.Join(errs...)
}

// Remove deletes an entry.
func (s *Store) Remove(ctx context.Context, name string) error {
	n, err := s.rdb.Exists(ctx, s.Key(name)).Result()
	if err != nil {
		return fmt.Errorf("beat: remove %q: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, s.ScheduleKey(), s.Key(name))
		p.Del(ctx, s.Key(name))
		p.SRem(ctx, s.staticsKey(), name)
		p.Publish(ctx, s.changesKey(), name)
		return nil
	})
	if err != nil {
		return fmt.Errorf("beat: remove %q: %w", name, err)
	}
	return nil
}

// SetEnabled enables or disables an entry.
func (s *Store) SetEnabled(ctx context.Context, name string, enabled bool) error {
	e, err := s.Get(ctx, name)
	if err != nil {
		return err
	}
	e.Enabled = enabled
	def, _, err := e.encodeDefinition()
	if err != nil {
		return err
	}
	if err := s.rdb.HSet(ctx, s.Key(name), "definition", def).Err(); err != nil {
		return fmt.Errorf("beat: enable %q: %w", name, err)
	}
	return s.reschedule(ctx, e)
}

// RunNow asks the leader to run an entry at once (once), whatever its
// schedule; its schedule then goes on from this run.
func (s *Store) RunNow(ctx context.Context, name string) error {
	if _, err := s.Get(ctx, name); err != nil {
		return err
	}
	now := time.Now()
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.Key(name), "run_now", now.UnixMilli())
		p.ZAdd(ctx, s.ScheduleKey(), redis.Z{Score: score(now), Member: s.Key(name)})
		p.Publish(ctx, s.changesKey(), name)
		return nil
	})
	if err != nil {
		return fmt.Errorf("beat: run-now %q: %w", name, err)
	}
	return nil
}

// Sync makes the store's declared ("static") entries those given, as
// redbeat's setup_schedule does for beat_schedule: each is written
// (definitions updated, run state kept) and statics no longer declared are
// removed. Entries added at run time (not static) are left alone.
func (s *Store) Sync(ctx context.Context, entries []*Entry) error {
	prev, err := s.rdb.SMembers(ctx, s.staticsKey()).Result()
	if err != nil {
		return fmt.Errorf("beat: sync: %w", err)
	}
	keep := map[string]bool{}
	for _, e := range entries {
		keep[e.Name] = true
		if err := s.Put(ctx, e); err != nil {
			return err
		}
	}
	for _, name := range prev {
		if !keep[name] {
			if err := s.Remove(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
		}
	}
	if len(keep) > 0 {
		names := make([]any, 0, len(keep))
		for n := range keep {
			names = append(names, n)
		}
		if err := s.rdb.SAdd(ctx, s.staticsKey(), names...).Err(); err != nil {
			return fmt.Errorf("beat: sync: %w", err)
		}
	}
	return nil
}

// claimScript records a run before it is sent: only while the caller owns
// the lock (fencing), only if the entry's meta and run-now request are
// still the ones the run was computed from (so no two leaders, and no
// Python beat, reserve the same run), and never twice for one due time.
// It writes the new meta, the claim and the next score in one step.
//
// KEYS: lock, entry hash, schedule. ARGV: token, expected meta ("" none),
// new meta, claim JSON, score, member, due ms, expected run_now ("" none).
var claimScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[2], 'definition') == 0 then return -2 end
local meta = redis.call('HGET', KEYS[2], 'meta') or ''
if meta ~= ARGV[2] then return -1 end
local rn = redis.call('HGET', KEYS[2], 'run_now') or ''
if rn ~= ARGV[8] then return -1 end
local c = redis.call('HGET', KEYS[2], 'claim')
if c then
  local ok, o = pcall(cjson.decode, c)
  if ok and tonumber(o.due_ms) == tonumber(ARGV[7]) then return -3 end
end
redis.call('HSET', KEYS[2], 'meta', ARGV[3], 'claim', ARGV[4])
if rn ~= '' then redis.call('HDEL', KEYS[2], 'run_now') end
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
return 1
`)

// Claim results.
const (
	claimOK       = 1
	claimNotOwner = 0  // the lock is not ours: we are not the leader
	claimStale    = -1 // the entry changed since it was read
	claimGone     = -2 // the entry was removed
	claimDup      = -3 // this due time was claimed already
)

// markSentScript marks a claim sent and records the run as the entry's
// last, unless a newer claim replaced it. KEYS: entry. ARGV: task id,
// claim JSON, outcome JSON.
var markSentScript = redis.NewScript(`
local c = redis.call('HGET', KEYS[1], 'claim')
if not c then return 0 end
local ok, o = pcall(cjson.decode, c)
if not ok or o.task_id ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'claim', ARGV[2], 'outcome', ARGV[3])
return 1
`)

// outcomeScript records a run's result unless a newer run's final state
// is recorded already. A run that is only sent (or still running) gives
// way: with a schedule faster than its task the newest run is never done,
// and the entry would otherwise never show what a run did. KEYS: entry.
// ARGV: task id, outcome JSON, the run's due time in Unix ms.
var outcomeScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local c = redis.call('HGET', KEYS[1], 'outcome')
if c then
  local ok, o = pcall(cjson.decode, c)
  if ok and o.task_id ~= ARGV[1] then
    local s = o.status
    local unfinished = s == 'SENT' or s == 'PENDING' or s == 'RECEIVED' or s == 'STARTED' or s == 'RETRY'
    if not unfinished and tonumber(o.due_ms or 0) >= tonumber(ARGV[3]) then return 0 end
  end
end
redis.call('HSET', KEYS[1], 'outcome', ARGV[2])
return 1
`)

// RecordOutcome stores what run taskID of entry name did, unless the final
// state of a run due later is recorded already.
func (s *Store) RecordOutcome(ctx context.Context, name string, o Outcome) error {
	if !o.Due.IsZero() {
		o.DueMS = o.Due.UnixMilli()
	}
	b, err := json.Marshal(o)
	if err != nil {
		b, _ = json.Marshal(Outcome{TaskID: o.TaskID, Due: o.Due, SentAt: o.SentAt, Status: o.Status,
			Error: o.Error, DateDone: o.DateDone, Result: fmt.Sprint(o.Result)})
	}
	if err := outcomeScript.Run(ctx, s.rdb, []string{s.Key(name)}, o.TaskID, b, o.DueMS).Err(); err != nil {
		return fmt.Errorf("beat: record outcome of %q: %w", name, err)
	}
	return nil
}
