package redis

import "github.com/redis/go-redis/v9"

// Settling and restoring run as Lua scripts so that each is one atomic
// step on the server, where kombu uses WATCH/MULTI transactions that a
// concurrent change makes fail and retry. A script also lets the check and
// the change be one step: the check that matters here is the score.
//
// A delivery tag does not identify one delivery: a restored message keeps
// its delivery_tag, so after a restore the same tag can be in the unacked
// hash again for another consumer. What identifies this process's delivery
// is the unacked_index score it wrote (the time of its ZADD, or of its last
// keep-alive refresh), so settling checks it: a delivery whose score is no
// longer one this process wrote was restored by someone else, and acking
// it would settle the other consumer's copy.
//
// Scores cross as decimal strings; Redis keeps doubles and Lua numbers are
// doubles, and the shortest representation Go writes parses back to the
// same double on both sides, so equality is exact.

// settleScript acks (or drops) a delivery: ZREM + HDEL, as kombu's ack,
// only if the tag's score is one of the candidates.
//
// KEYS: unacked, unacked_index. ARGV: tag, candidate scores...
// Returns 1 if settled, 0 if the delivery is no longer this process's.
var settleScript = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not s then return 0 end
s = tonumber(s)
for i = 2, #ARGV do
  if s == tonumber(ARGV[i]) then
    redis.call('ZREM', KEYS[2], ARGV[1])
    redis.call('HDEL', KEYS[1], ARGV[1])
    return 1
  end
end
return 0
`)

// requeueScript settles a delivery and pushes the given envelope back on
// its list: LPUSH (the back, next to be consumed last) for a reject with
// requeue, RPUSH (the front) when restoring at shutdown, as kombu's
// restore_by_tag with leftmost true and false.
//
// KEYS: unacked, unacked_index, list. ARGV: tag, envelope, "LPUSH" or
// "RPUSH", candidate scores... Returns 1 or 0 as settleScript.
var requeueScript = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not s then return 0 end
s = tonumber(s)
for i = 4, #ARGV do
  if s == tonumber(ARGV[i]) then
    redis.call('ZREM', KEYS[2], ARGV[1])
    redis.call('HDEL', KEYS[1], ARGV[1])
    redis.call(ARGV[3], KEYS[3], ARGV[2])
    return 1
  end
end
return 0
`)

// refreshScript is the keep-alive: for each delivery still this process's
// (its score one of the candidates) it moves the score to now. Deliveries
// restored by someone else are left alone, whatever consumes them now.
//
// KEYS: unacked_index. ARGV: now, then per delivery: tag, n, n candidate
// scores. Returns per delivery 1 (refreshed) or 0 (no longer ours).
var refreshScript = redis.NewScript(`
local now = ARGV[1]
local out = {}
local i = 2
while i <= #ARGV do
  local tag = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  local ok = 0
  local s = redis.call('ZSCORE', KEYS[1], tag)
  if s then
    s = tonumber(s)
    for j = i + 2, i + 1 + n do
      if s == tonumber(ARGV[j]) then
        ok = 1
        break
      end
    end
  end
  if ok == 1 then
    redis.call('ZADD', KEYS[1], 'XX', now, tag)
  end
  out[#out + 1] = ok
  i = i + 2 + n
end
return out
`)

// restoreScript is one step of the visibility-timeout restore (kombu's
// restore_by_tag from restore_visible): if the tag's score is still at or
// below the ceiling (nobody acked, restored or refreshed it since the
// scan), remove it from unacked and RPUSH the envelope to the front of
// each list. With no lists (the entry was already gone) it only cleans the
// index, as kombu does.
//
// KEYS: unacked, unacked_index, lists... ARGV: tag, ceiling, envelope.
// Returns 1 if restored, 0 if skipped.
var restoreScript = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not s then return 0 end
if tonumber(s) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  for i = 3, #KEYS do
    redis.call('RPUSH', KEYS[i], ARGV[3])
  end
end
return 1
`)

// releaseScript releases unacked_mutex if it still holds our token. It is
// redis-py's Lock release script, byte for byte, so Python and Go share
// one cached script.
var releaseScript = redis.NewScript(`
        local token = redis.call('get', KEYS[1])
        if not token or token ~= ARGV[1] then
            return 0
        end
        redis.call('del', KEYS[1])
        return 1
    `)

// popRecordScript pops the next message from the first non-empty list
// (KEYS[3..], in BRPOP's order) and records it in unacked and
// unacked_index in the same step, with kombu's entry format. kombu pops
// with BRPOP and records afterwards: a worker killed in between loses the
// message. Here the pop and the record are one atomic script; BRPOP is
// only used to wait while every list is empty. A message without a
// delivery tag (not from kombu) is returned unrecorded (third value 0) for
// Go to record.
//
// KEYS: unacked, unacked_index, lists...; ARGV: score, then the queue name
// of each list (the routing key to record when the envelope has none).
var popRecordScript = redis.NewScript(`
local function pystr(s)
  if string.match(s, '^[%w%.%-_:@]*$') then
    return '"' .. s .. '"'
  end
  return cjson.encode(s)
end
for i = 3, #KEYS do
  local msg = redis.call('RPOP', KEYS[i])
  if msg then
    local ok, env = pcall(cjson.decode, msg)
    if ok and type(env) == 'table' and type(env.properties) == 'table'
        and type(env.properties.delivery_tag) == 'string' and env.properties.delivery_tag ~= '' then
      local ex, rk = '', ''
      local di = env.properties.delivery_info
      if type(di) == 'table' then
        if type(di.exchange) == 'string' then ex = di.exchange end
        if type(di.routing_key) == 'string' then rk = di.routing_key end
      end
      if ex == '' and rk == '' then rk = ARGV[i - 1] end
      local tag = env.properties.delivery_tag
      redis.call('ZADD', KEYS[2], ARGV[1], tag)
      redis.call('HSET', KEYS[1], tag, '[' .. msg .. ', ' .. pystr(ex) .. ', ' .. pystr(rk) .. ']')
      return {KEYS[i], msg, 1}
    end
    return {KEYS[i], msg, 0}
  end
end
return false
`)

// refreshBindingScript is kombu 5.7's REFRESH_BINDING, which its
// queue_bind runs instead of the permanent-set SADD for a queue with
// x-expires: add the member, and raise the exchange's deadline (server
// clock, ms) so that kombu's sweep drops a table nobody refreshed. ZADD GT
// needs Redis 6.2, as kombu's does.
//
// KEYS: _kombu.binding.<exchange>, _kombu.binding_deadlines. ARGV: member,
// exchange, lifetime in ms. Returns 1 (kombu's returns nothing, which
// go-redis would take for redis.Nil, an error in a transaction).
var refreshBindingScript = redis.NewScript(`
redis.call('SADD', KEYS[1], ARGV[1])
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[2], 'GT', ms + tonumber(ARGV[3]), ARGV[2])
return 1
`)
