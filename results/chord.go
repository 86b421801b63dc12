package results

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/protocol"
)

// Chord join timings, as Celery 5.7's Redis backend derives them from
// result_chord_join_timeout (3 s by default): the dispatch claim lives
// twice that, at least 5 s; the "done" marker that stops late duplicates
// lives at least 300 s.
const (
	chordClaimSeconds = 6
	chordDoneSeconds  = 300
)

// chordPartScript is Celery 5.7's CHORD_PART_RETURN_LUA, same keys and
// arguments, so Go and Python workers can take turns completing one chord:
// it records a header result once per task id and index, and the call
// that completes the chord takes the dispatch claim (<group key>.c) in the
// same step, so exactly one worker publishes the body. One addition: a
// call with the token that already holds the claim gets it again, so a
// retry after a lost reply is not locked out by its own first call.
var chordPartScript = redis.NewScript(`
local jkey, tkey, skey, dkey, gkey, ckey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local tid, value, ordered, score = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local expires, group_expires = tonumber(ARGV[5]), tonumber(ARGV[6])
local claim_expires = tonumber(ARGV[7])
local claim_token = ARGV[8]
if redis.call('GET', ckey) == 'done' then
    return {-1, 0, 0, 0}
end
local member = tid .. ':' .. score
if redis.call('SISMEMBER', dkey, member) == 0 then
    if ordered == '1' then
        redis.call('ZADD', jkey, score, value)
    else
        redis.call('RPUSH', jkey, value)
    end
    redis.call('SADD', dkey, member)
end
local readycount
if ordered == '1' then
    readycount = redis.call('ZCOUNT', jkey, '-inf', '+inf')
else
    readycount = redis.call('LLEN', jkey)
end
if expires > 0 then
    for _, key in ipairs({jkey, tkey, skey, dkey}) do
        redis.call('EXPIRE', key, expires)
    end
    if group_expires > 0 then
        redis.call('EXPIRE', gkey, group_expires)
    end
end
local totaldiff = redis.call('GET', tkey)
local size = redis.call('GET', skey)
local claimed = 0
if size and readycount == tonumber(size) + tonumber(totaldiff or 0) then
    if redis.call('SET', ckey, claim_token, 'NX', 'EX', claim_expires) then
        claimed = 1
    elseif redis.call('GET', ckey) == claim_token then
        -- A retry whose first call took the claim but lost the reply.
        redis.call('EXPIRE', ckey, claim_expires)
        claimed = 1
    end
end
return {readycount, totaldiff, size, claimed}
`)

// chordCleanupScript is CHORD_CLEANUP_LUA: drop the chord's keys and
// leave the "done" marker, if the claim is still ours.
var chordCleanupScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
    local done_expires = tonumber(ARGV[2])
    if done_expires and done_expires > 0 then
        redis.call('SET', KEYS[1], 'done', 'EX', done_expires)
    end
    return 1
end
return 0
`)

// chordExtendScript is CHORD_CLAIM_EXTEND_LUA: keep (or retake, while the
// chord's data remains) the dispatch claim for the body's publish.
var chordExtendScript = redis.NewScript(`
local ckey, skey = KEYS[1], KEYS[2]
local token = ARGV[1]
local expires = tonumber(ARGV[2])
if redis.call('GET', ckey) == token then
    return redis.call('EXPIRE', ckey, expires)
end
if not redis.call('GET', ckey) and redis.call('EXISTS', skey) == 1 then
    return redis.call('SET', ckey, token, 'EX', expires, 'NX') and 1 or 0
end
return 0
`)

// ChordPart is one chord header task's outcome.
type ChordPart struct {
	GroupID string
	TaskID  string
	// GroupIndex orders the results given to the body; nil sorts last.
	GroupIndex *int
	State      string
	// Result is the return value, or the exception for exception states.
	Result any
	// Token is the dispatch claim token ("" for a new one). A caller that
	// retries a part after an error passes the same token every time: the
	// claim a call took before its reply was lost is then still its own.
	Token string
}

// ErrUnavailable marks a chord operation that failed because Redis could
// not be reached or did not answer (a dropped connection, a timeout, a
// server loading or failing over): the same call may succeed if retried.
// Every chord operation is safe to retry with the same arguments.
var ErrUnavailable = errors.New("results: backend unavailable")

// unavailable wraps err with ErrUnavailable when it is a network or
// transient server error.
func unavailable(err error) error {
	if err == nil || errors.Is(err, redis.ErrClosed) || errors.Is(err, context.Canceled) {
		return err
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && !errors.Is(err, context.DeadlineExceeded) {
		msg := rerr.Error()
		for _, p := range []string{"LOADING ", "BUSY ", "TRYAGAIN ", "MASTERDOWN ", "READONLY ", "CLUSTERDOWN "} {
			if strings.HasPrefix(msg, p) {
				return fmt.Errorf("%w: %w", ErrUnavailable, err)
			}
		}
		return err // the server answered: retrying gets the same answer
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// ChordResult is one header result, as the join read it back.
type ChordResult struct {
	TaskID string
	State  string
	Result any // *Exception for exception states
}

// ChordJoin is the outcome of recording a part. Complete is true for
// exactly one part of a chord: that caller holds the dispatch claim, must
// publish the body (or fail it, see Err) and then call ChordDone.
type ChordJoin struct {
	GroupID  string
	Complete bool
	Results  []ChordResult // in group index order, when Complete
	token    string
}

// Values returns the results to pass to the chord body.
func (j *ChordJoin) Values() []any {
	out := make([]any, len(j.Results))
	for i, r := range j.Results {
		out[i] = r.Result
	}
	return out
}

// Err returns the ChordError Celery raises when a header task failed:
// "Dependency <id> raised <repr>", for the first failure in index order.
func (j *ChordJoin) Err() *Exception {
	for _, r := range j.Results {
		if !isPropagate(r.State) {
			continue
		}
		exc, _ := r.Result.(*Exception)
		if exc == nil {
			exc = &Exception{Type: "Exception", Module: "builtins", Message: []any{fmt.Sprint(r.Result)}}
		}
		return ChordError(fmt.Sprintf("Dependency %s raised %s", r.TaskID, exc.Repr()))
	}
	return nil
}

// ChordError is celery.exceptions.ChordError with msg.
func ChordError(msg string) *Exception {
	return &Exception{Type: "ChordError", Module: "celery.exceptions", Message: []any{msg}}
}

// Repr is Python's repr of the exception: ValueError('boom').
func (e *Exception) Repr() string {
	parts := make([]string, len(e.Message))
	for i, a := range e.Message {
		parts[i] = protocol.Repr(a)
	}
	return e.Type + "(" + strings.Join(parts, ", ") + ")"
}

// ChordPartReturn records a header task's outcome as Celery 5.7's Redis
// backend does (on_chord_part_return): the encoded [1, id, state, result]
// goes into the sorted set <group key>.j scored by group index, once per
// task id and index, and the part that completes the count in .s (plus
// .t) takes the dispatch claim and reads every result back.
func (r *Redis) ChordPartReturn(ctx context.Context, p ChordPart) (*ChordJoin, error) {
	if p.GroupID == "" || p.TaskID == "" {
		return nil, fmt.Errorf("%w: chord part needs a group and a task id", ErrEmptyID)
	}
	result := p.Result
	if IsException(p.State) {
		if err, ok := result.(error); ok {
			result = ExceptionFrom(err)
		}
	}
	encoded, err := MarshalValue([]any{1, p.TaskID, p.State, result})
	if err != nil {
		return nil, fmt.Errorf("results: encoding chord part %s: %w", p.TaskID, err)
	}
	score := "+inf"
	if p.GroupIndex != nil {
		score = strconv.Itoa(*p.GroupIndex)
	}
	gkey := r.GroupKey(p.GroupID)
	keys := []string{gkey + ".j", gkey + ".t", gkey + ".s", gkey + ".d", gkey, gkey + ".c"}
	expires := int64(r.expires.Seconds())
	token := p.Token
	if token == "" {
		token = NewChordToken()
	}
	res, err := chordPartScript.Run(ctx, r.client, keys,
		p.TaskID, encoded, "1", score, expires, expires, chordClaimSeconds, token).Slice()
	if err != nil {
		return nil, fmt.Errorf("results: chord part %s of %s: %w", p.TaskID, p.GroupID, unavailable(err))
	}
	j := &ChordJoin{GroupID: p.GroupID, token: token}
	if len(res) != 4 {
		return nil, fmt.Errorf("%w: chord script returned %d values", ErrMalformed, len(res))
	}
	if ready, _ := res[0].(int64); ready == -1 {
		return j, nil // the chord completed already: a late duplicate
	}
	if claimed, _ := res[3].(int64); claimed != 1 {
		return j, nil
	}
	members, err := r.client.ZRange(ctx, gkey+".j", 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("results: reading chord %s: %w", p.GroupID, unavailable(err))
	}
	j.Results = make([]ChordResult, 0, len(members))
	for _, m := range members {
		cr, err := decodeChordMember([]byte(m))
		if err != nil {
			return nil, fmt.Errorf("results: chord %s: %w", p.GroupID, err)
		}
		j.Results = append(j.Results, cr)
	}
	j.Complete = true
	return j, nil
}

// NewChordToken returns a new dispatch claim token for ChordPart.Token,
// in Celery's form (uuid4().hex).
func NewChordToken() string { return strings.ReplaceAll(uuid.NewString(), "-", "") }

func decodeChordMember(data []byte) (ChordResult, error) {
	v, err := decodePayload(data)
	if err != nil {
		return ChordResult{}, err
	}
	t, ok := v.([]any)
	if !ok || len(t) != 4 {
		return ChordResult{}, fmt.Errorf("%w: chord member is not [1, id, state, result]", ErrMalformed)
	}
	var cr ChordResult
	cr.TaskID, _ = t[1].(string)
	cr.State, _ = t[2].(string)
	cr.Result = t[3]
	if IsException(cr.State) {
		if e, ok := exceptionFromDict(cr.Result); ok {
			cr.Result = e
		}
	}
	return cr, nil
}

// ErrChordClaimLost is returned by ChordExtendClaim when another worker
// took the dispatch claim: this one must not publish the body.
var ErrChordClaimLost = errors.New("results: chord dispatch claim lost")

// ChordExtendClaim keeps the dispatch claim for the body's publish, as
// Celery does just before callback.delay().
func (r *Redis) ChordExtendClaim(ctx context.Context, j *ChordJoin, seconds int) error {
	gkey := r.GroupKey(j.GroupID)
	n, err := chordExtendScript.Run(ctx, r.client, []string{gkey + ".c", gkey + ".s"}, j.token, max(seconds, chordClaimSeconds)).Int()
	if err != nil {
		return fmt.Errorf("results: chord %s claim: %w", j.GroupID, unavailable(err))
	}
	if n != 1 {
		return ErrChordClaimLost
	}
	return nil
}

// ChordDone drops a completed chord's keys and leaves the marker that
// makes late duplicates of header tasks no-ops.
func (r *Redis) ChordDone(ctx context.Context, j *ChordJoin) error {
	gkey := r.GroupKey(j.GroupID)
	n, err := chordCleanupScript.Run(ctx, r.client,
		[]string{gkey + ".c", gkey + ".j", gkey + ".t", gkey + ".s", gkey + ".d"}, j.token, chordDoneSeconds).Int()
	if err != nil {
		return fmt.Errorf("results: chord %s cleanup: %w", j.GroupID, unavailable(err))
	}
	if n != 1 {
		return ErrChordClaimLost
	}
	return nil
}

// ChordFailed drops the chord size after the body was failed, as Celery
// does, so a late copy of a header task does not fail the chord again.
func (r *Redis) ChordFailed(ctx context.Context, groupID string) error {
	if err := r.client.Del(ctx, r.GroupKey(groupID)+".s").Err(); err != nil {
		return fmt.Errorf("results: chord %s: %w", groupID, unavailable(err))
	}
	return nil
}
