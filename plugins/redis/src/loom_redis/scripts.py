"""The Lua scripts that make each queue transition atomic on the Redis server.

The lease is the stream's pending-entries list (PEL): a prompt being run is an entry
delivered to its worker's consumer and not yet acknowledged. Every script that ends or
extends a lease first checks, with ``XPENDING``, that the entry is still owned by the
calling consumer with the delivery count it was handed: a worker whose lease expired and
was taken over by another (``XAUTOCLAIM`` increments the count) is fenced off, so its late
result is dropped instead of being written twice.
"""

from __future__ import annotations

#: Fence shared by the scripts: the entry ARGV[3] must be pending for consumer ARGV[2] with
#: exactly ARGV[4] deliveries (stream KEYS[1], group ARGV[1]).
_FENCE = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] or tonumber(pending[1][4]) ~= tonumber(ARGV[4]) then
  return 0
end
"""

#: Move one chosen pending prompt into the stream and deliver it to the caller.
#: KEYS: stream, pending zset, members hash, items hash. ARGV: group, consumer, member, prompt id.
#: Returns {entry id, item json} or false when another worker took that prompt first.
TAKE = """
if redis.call('ZREM', KEYS[2], ARGV[3]) == 0 then return false end
redis.call('HDEL', KEYS[3], ARGV[4])
local item = redis.call('HGET', KEYS[4], ARGV[4])
if not item then return false end
-- Only this script adds entries and it reads each at once, so the read delivers this one.
local id = redis.call('XADD', KEYS[1], '*', 'pid', ARGV[4])
redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
return {id, item}
"""

#: Queue a prompt once per prompt id (a client retrying a submission adds nothing).
#: KEYS: items hash, members hash, pending zset, wake list.
#: ARGV: prompt id, item json, member, number. Returns 1, or 0 if that id is already queued.
PUT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('RPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], -1000, -1)
return 1
"""

#: Extend a lease: reset the entry's idle time without counting a delivery.
#: KEYS: stream. ARGV: group, consumer, entry id, deliveries. Returns 1, or 0 if fenced.
HEARTBEAT = (
    _FENCE
    + """
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""
)

#: End a lease with a result: write the history entry (once per prompt id), optionally a
#: dead letter, then acknowledge and delete the entry and the item.
#: KEYS: stream, history zset, entries hash, items hash, dead stream, history counter.
#: ARGV: group, consumer, entry id, deliveries, prompt id, entry json, max history,
#: dead-letter reason ('' for none), dead-letter stream max length.
#: Returns 1, or 0 if fenced (nothing written).
FINISH = (
    _FENCE
    + """
if redis.call('HEXISTS', KEYS[3], ARGV[5]) == 0 then
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[6])
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[6]), ARGV[5])
  local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[7])
  if excess > 0 then
    local old = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
    redis.call('HDEL', KEYS[3], unpack(old))
  end
end
if ARGV[8] ~= '' then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[9], '*', 'prompt_id', ARGV[5],
    'deliveries', ARGV[4], 'reason', ARGV[8], 'item', redis.call('HGET', KEYS[4], ARGV[5]) or '')
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('HDEL', KEYS[4], ARGV[5])
return 1
"""
)

#: Hand a lease back unfinished (graceful shutdown): the entry moves to a parking consumer
#: with a huge idle time, so the next worker's XAUTOCLAIM takes it at once; the delivery
#: is not counted against the prompt. KEYS: stream. ARGV: group, consumer, entry id,
#: deliveries, parking consumer. Returns 1, or 0 if fenced.
RELEASE = (
    _FENCE
    + """
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[5], 0, ARGV[3], 'IDLE', 1000000000000,
  'RETRYCOUNT', math.max(tonumber(ARGV[4]) - 1, 0), 'JUSTID')
return 1
"""
)

#: Drop pending prompts by id (``/queue`` delete); running ones are left alone.
#: KEYS: pending zset, members hash, items hash. ARGV: prompt ids. Returns how many went.
DELETE = """
local gone = 0
for _, pid in ipairs(ARGV) do
  local member = redis.call('HGET', KEYS[2], pid)
  if member and redis.call('ZREM', KEYS[1], member) == 1 then
    redis.call('HDEL', KEYS[2], pid)
    redis.call('HDEL', KEYS[3], pid)
    gone = gone + 1
  end
end
return gone
"""

#: Drop every pending prompt (``/queue`` clear). KEYS: pending zset, members hash, items hash.
CLEAR = """
local pids = redis.call('HKEYS', KEYS[2])
for _, pid in ipairs(pids) do redis.call('HDEL', KEYS[3], pid) end
redis.call('DEL', KEYS[1], KEYS[2])
return #pids
"""
