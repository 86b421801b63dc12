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
// Returns 1 if settled, 0 if the tag has another score (restored, and
// received again by someone), 2 if it is gone: settled by an earlier
// attempt whose reply was lost (go-redis retries), or restored and not
// received again yet. Only 0 proves the delivery someone else's.
var settleScript = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not s then return 2 end
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
// "RPUSH", candidate scores... Returns 1, 0 or 2 as settleScript.
var requeueScript = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not s then return 2 end
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

// popRecordScript takes up to count messages, from the first non-empty
// lists (KEYS[4..3+n], in kombu's BRPOP order: by priority step, and
// within a step the queues taken from in turn, as kombu's round robin
// would over that many BRPOPs), and records each in
// unacked and unacked_index in the same atomic step, with kombu's entry
// format: nothing it pops is ever unrecorded, whenever the process dies.
// (kombu pops with BRPOP and records afterwards: a worker killed in
// between loses the message.) A message without a delivery tag is recorded
// under one made from the request id. One that is not a kombu envelope (not
// a JSON object with a properties object), which kombu's restore could not
// read back, is moved instead to its queue's "<queue>.malformed" list
// (KEYS[4+n..]), wrapped in an envelope of its own: the original bytes as a
// base64 body, the reason in headers["x-gocelery-reason"], as the worker
// dead-letters.
//
// A call is idempotent: what it took is kept in the consumer's record
// (KEYS[3], one string: the request id, then a JSON list of the score and
// list, tag, kind per message, for the TTL; the next call that takes
// something replaces it), and the same call made again (go-redis retries a
// command whose reply was lost; so does the consumer) returns those same
// messages, still recorded with that score, instead of taking more.
//
// KEYS: unacked, unacked_index, record, n lists, n malformed lists. ARGV:
// score, request id, TTL in ms, count, then the queue name of each list
// (the routing key to record when the envelope has none), then how many
// queues each priority step holds. Returns per
// message: list, payload, tag, kind, score. Kind "r": payload is the
// message, recorded under tag; "e" (a repeated call): payload is its
// unacked entry; "m": moved to the malformed list.
var popRecordScript = redis.NewScript(`
local n = (#KEYS - 3) / 2
local rid = ARGV[2]
local last = redis.call('GET', KEYS[3])
if last and string.sub(last, 1, #rid + 1) == rid .. ' ' then
  local done = cjson.decode(string.sub(last, #rid + 2))
  local s, out = done[1], {}
  for i = 2, #done, 3 do
    local list, tag, kind = done[i], done[i + 1], done[i + 2]
    if kind == 'm' then
      out[#out + 1] = list; out[#out + 1] = ''; out[#out + 1] = ''; out[#out + 1] = 'm'; out[#out + 1] = s
    else
      local sc = redis.call('ZSCORE', KEYS[2], tag)
      local e = redis.call('HGET', KEYS[1], tag)
      if sc and e and tonumber(sc) == tonumber(s) then
        out[#out + 1] = list; out[#out + 1] = e; out[#out + 1] = tag; out[#out + 1] = 'e'; out[#out + 1] = s
      end
    end
  end
  return out
end
local function pystr(s)
  if string.match(s, '^[%w%.%-_:@]*$') then
    return '"' .. s .. '"'
  end
  return cjson.encode(s)
end
local s, rid, count = ARGV[1], ARGV[2], tonumber(ARGV[4])
local out, rec = {}, {s}
local function take(i, list, msg)
  local q = ARGV[4 + i]
  local ok, env = pcall(cjson.decode, msg)
  if ok and type(env) == 'table' and type(env.properties) == 'table' then
    local p = env.properties
    local tag = p.delivery_tag
    if type(tag) ~= 'string' or tag == '' then tag = rid .. '.' .. #rec end
    local ex, rk = '', ''
    local di = p.delivery_info
    if type(di) == 'table' then
      if type(di.exchange) == 'string' then ex = di.exchange end
      if type(di.routing_key) == 'string' then rk = di.routing_key end
    end
    if ex == '' and rk == '' then rk = q end
    redis.call('ZADD', KEYS[2], s, tag)
    redis.call('HSET', KEYS[1], tag, '[' .. msg .. ', ' .. pystr(ex) .. ', ' .. pystr(rk) .. ']')
    out[#out + 1] = list; out[#out + 1] = msg; out[#out + 1] = tag; out[#out + 1] = 'r'; out[#out + 1] = s
    rec[#rec + 1] = list; rec[#rec + 1] = tag; rec[#rec + 1] = 'r'
  else
    local abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
    local function b64(s)
      local t = {}
      for i = 1, #s, 3 do
        local a, b, c = string.byte(s, i, i + 2)
        local v = a * 65536 + (b or 0) * 256 + (c or 0)
        local d = {math.floor(v / 262144) % 64, math.floor(v / 4096) % 64, math.floor(v / 64) % 64, v % 64}
        t[#t + 1] = string.sub(abc, d[1] + 1, d[1] + 1) .. string.sub(abc, d[2] + 1, d[2] + 1) ..
          (b and string.sub(abc, d[3] + 1, d[3] + 1) or '=') .. (c and string.sub(abc, d[4] + 1, d[4] + 1) or '=')
      end
      return table.concat(t)
    end
    local why = 'not a kombu envelope: not a JSON object with a properties object'
    if not ok then why = 'not a kombu envelope: not JSON' end
    redis.call('LPUSH', KEYS[3 + n + i], cjson.encode({
      body = b64(msg), ['content-encoding'] = 'binary', ['content-type'] = 'application/octet-stream',
      headers = {['x-gocelery-reason'] = why, ['x-gocelery-queue'] = q},
      properties = {body_encoding = 'base64', delivery_tag = rid .. '.' .. #rec, delivery_mode = 2,
        priority = 0, correlation_id = '', reply_to = '',
        delivery_info = {exchange = '', routing_key = q .. '.malformed'}}}))
    out[#out + 1] = list; out[#out + 1] = msg; out[#out + 1] = ''; out[#out + 1] = 'm'; out[#out + 1] = s
    rec[#rec + 1] = list; rec[#rec + 1] = ''; rec[#rec + 1] = 'm'
  end
end
-- Lists come by priority step, each step holding the consumer's queues in
-- its round-robin order: a batch drains the first step that has messages
-- one queue at a time in turn (kombu's round-robin within one BRPOP order),
-- then the next step.
local qn = tonumber(ARGV[5 + n]) or n
for st = 0, n / qn - 1 do
  local live, empty, j = qn, {}, 0
  while count > 0 and live > 0 do
    local i = st * qn + (j % qn) + 1
    if not empty[i] then
      local msg = redis.call('RPOP', KEYS[3 + i])
      if msg then
        count = count - 1
        take(i, KEYS[3 + i], msg)
      else
        empty[i], live = true, live - 1
      end
    end
    j = j + 1
  end
  if count == 0 then break end
end
if #rec > 1 then
  redis.call('SET', KEYS[3], rid .. ' ' .. cjson.encode(rec), 'PX', ARGV[3])
end
return out
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
