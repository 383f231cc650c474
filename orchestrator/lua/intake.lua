-- One intake step of a conductor, in one round trip:
--   1. move deferred jobs that are due (on Redis's clock) onto the ready list;
--   2. count each pool's free slots: live heartbeat slots minus jobs forwarded and not
--      finished, within max_in_flight (workers whose heartbeat lapsed are forgotten);
--   3. take at most that many jobs (and at most ARGV[2]) into the processing list:
--      ready jobs first, then from the waiting list of each pool with room (no more
--      than its room), then the backlogs in priority order.
-- KEYS[1] processing list, KEYS[2] ready list, KEYS[3] deferred zset
-- ARGV: key root, most jobs to take, most deferred jobs to release, pool count, then
--   per pool: name, max_in_flight (0: none); then the backlog lists in priority order
-- Returns: {taken jobs, ms until the next deferred job is due (-1: none), free slots
--   per pool in the order given, jobs waiting for pools that are full, Redis time (ms)}
local root = ARGV[1]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[3]))
for _, job in ipairs(due) do
  redis.call('RPUSH', KEYS[2], job)
  redis.call('ZREM', KEYS[3], job)
end
local next_due = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local wait = -1
if next_due[2] then
  wait = math.max(0, tonumber(next_due[2]) - now_ms)
end

local free, room, stalled = {}, 0, 0
local sources = {{KEYS[2], -1}}
local npools = tonumber(ARGV[4])
for p = 0, npools - 1 do
  local name, cap = ARGV[5 + 2 * p], tonumber(ARGV[6 + 2 * p])
  local set = root .. ':workers:' .. name
  local slots = 0
  for _, worker in ipairs(redis.call('SMEMBERS', set)) do
    local s = redis.call('HGET', root .. ':worker:' .. name .. ':' .. worker, 'slots')
    if s then
      slots = slots + tonumber(s)
    else
      redis.call('SREM', set, worker)
    end
  end
  local inflight = redis.call('ZCARD', root .. ':inflight:' .. name)
  local n = slots - inflight
  if cap > 0 and cap - inflight < n then
    n = cap - inflight
  end
  free[#free + 1] = n
  local waiting = root .. ':waiting:' .. name
  if n > 0 then
    room = room + n
    sources[#sources + 1] = {waiting, n}
  else
    stalled = stalled + redis.call('LLEN', waiting)
  end
end
for i = 5 + 2 * npools, #ARGV do
  sources[#sources + 1] = {ARGV[i], -1}
end

local want = math.min(room, tonumber(ARGV[2]))
local taken = {}
for _, source in ipairs(sources) do
  local list, limit = source[1], source[2]
  local from_here = 0
  while #taken < want and from_here ~= limit do
    local job = redis.call('LMOVE', list, KEYS[1], 'LEFT', 'RIGHT')
    if not job then
      break
    end
    taken[#taken + 1] = job
    from_here = from_here + 1
  end
  if #taken >= want then
    break
  end
end
return {taken, wait, free, stalled, now_ms}
