-- A worker's heartbeat, its announcements between beats and its clean exit, each with
-- the pool's capacity counters moved in the same step (see lib/pools.lua), so that no
-- reader ever has to look at every worker.
-- KEYS[1] the worker's heartbeat hash
-- ARGV[1] key root, ARGV[2] pool, ARGV[3] worker id, ARGV[4] what:
--   'beat'     ARGV[5] TTL (ms), ARGV[6] prefetch (ms) the worker asks for, then the
--              heartbeat's fields and values: written, the worker (re)joins its pool's
--              set and the holders hash; returns 1 when the scaler released it, else 0
--   'announce' ARGV[5] TTL (ms), then fields and values (slots, running, draining):
--              written only while the heartbeat lives (a lapsed worker comes back with
--              its next full beat, not as a stub without its tasks); returns 0
--   'leave'    the heartbeat deleted, the worker out of its pool's set and release
--              set, and the conductors told; returns 0
--#include pools
local root, pool, worker, what = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = KEYS[1]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function write(from)
  local fields = {}
  for i = from, #ARGV do fields[#fields + 1] = ARGV[i] end
  if #fields > 0 then redis.call('HSET', key, unpack(fields)) end
  redis.call('PEXPIRE', key, tonumber(ARGV[5]))  -- never a heartbeat without its TTL
end

local released = 0
if what == 'beat' then
  write(7)
  redis.call('SADD', root .. ':workers:' .. pool, worker)
  redis.call('HSET', root .. ':holders', worker, pool)
  redis.call('HSET', root .. ':capacity:' .. pool, 'prefetch_ms', ARGV[6])
  released = redis.call('SISMEMBER', root .. ':release:' .. pool, worker)
elseif what == 'announce' then
  if redis.call('EXISTS', key) == 0 then return 0 end
  write(6)
elseif what == 'leave' then
  redis.call('DEL', key)
  redis.call('SREM', root .. ':workers:' .. pool, worker)
  redis.call('SREM', root .. ':release:' .. pool, worker)
  redis.call('PUBLISH', root .. ':events', pool)
else
  return redis.error_reply('heartbeat.lua: unknown step ' .. tostring(what))
end
count_worker(root, pool, worker, now_ms)
return released
