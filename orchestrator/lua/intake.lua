-- One intake step of a conductor, in one round trip:
--   1. move deferred jobs that are due (on Redis's clock) onto the ready list;
--   2. count each pool's free slots: live slots plus its prefetch, minus jobs forwarded
--      and not finished, within max_in_flight — from the pool's capacity counters, first
--      corrected for heartbeats that lapsed (lib/pools.lua: bounded work, whatever the
--      size of the fleet);
--   3. put back on the ready list the jobs that waited for a worker running their task
--      (`<root>:no_worker:<task>`, or `…:<task>@<pool>` when only that pool may run
--      them) once a pool they may use has live workers that all announce it;
--   4. take at most that many jobs (and at most ARGV[2]) into the processing list:
--      ready jobs first, then from the waiting list of each pool with room (no more
--      than its room), then the backlogs' priority levels, highest first, a level's
--      backlogs in the order given (a level list found empty leaves its levels set).
-- A paused pool has no free slot (its running jobs finish, it gets no new ones); a
-- paused backlog is not taken from (dispatch still queues onto it).
-- KEYS[1] processing list, KEYS[2] ready list, KEYS[3] deferred zset, KEYS[4] zset of the
--   tasks jobs wait for a worker of, KEYS[5] paused backlogs hash, KEYS[6] paused pools hash
-- ARGV: key root, most jobs to take, most deferred jobs to release, pool count, then
--   per pool: name, max_in_flight (0: none); then the separator of a backlog's list key
--   and a level in the key of that level's list; then per backlog, in the configured
--   order: name, its (level 0) list, its levels zset
-- Returns: {taken jobs, µs until the next deferred job is due (-1: none), free slots
--   per pool in the order given, jobs waiting for pools that are full, Redis time (ms),
--   where each taken job came from: the 1-based index of its backlog among those given,
--   0 for the ready and waiting lists (a bare manifest line is named after its backlog),
--   how many levels other than 0 the backlogs had in use (when looked at), the paused
--   backlogs, the paused pools}
--#include pools
local root = ARGV[1]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Deferred jobs are scored in ms to the microsecond (forward.lua): a rate of 500/s
-- spaces them 2 ms apart, so a whole ms would be half an interval late.
local exact_ms = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', string.format('%.3f', exact_ms),
  'LIMIT', 0, tonumber(ARGV[3]))
for _, job in ipairs(due) do
  redis.call('RPUSH', KEYS[2], job)
  redis.call('ZREM', KEYS[3], job)
end
local next_due = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local wait = -1
if next_due[2] then
  wait = math.max(0, math.ceil((tonumber(next_due[2]) - exact_ms) * 1000))
end

local paused_backlogs = redis.call('HKEYS', KEYS[5])
local paused_pools = redis.call('HKEYS', KEYS[6])
local paused = {}
for _, name in ipairs(paused_pools) do paused[name] = true end

local free, room, stalled = {}, 0, 0
local fleet = {}
local sources = {{KEYS[2], -1}}
local npools = tonumber(ARGV[4])
for p = 0, npools - 1 do
  local name, cap = ARGV[5 + 2 * p], tonumber(ARGV[6 + 2 * p])
  correct_pool(root, name, now_ms)
  local slots, tasks, prefetch = pool_capacity(root, name)
  fleet[name] = tasks
  local inflight = redis.call('ZCARD', root .. ':inflight:' .. name)
  local n = slots + prefetch - inflight
  if cap > 0 and cap - inflight < n then
    n = cap - inflight
  end
  if paused[name] then
    n = 0
  end
  free[#free + 1] = n
  local waiting = root .. ':waiting:' .. name
  if n > 0 then
    room = room + n
    sources[#sources + 1] = {waiting, n}
  elseif not paused[name] then  -- a paused pool frees no slot before it is resumed
    stalled = stalled + redis.call('LLEN', waiting)
  end
end
local orphans = KEYS[4]
for _, member in ipairs(redis.call('ZRANGE', orphans, 0, -1)) do
  -- `task` waits for any pool; `task@pool` for that pool only (a rule or a pin)
  local task, only = string.match(member, '^([^@]+)@?(.*)$')
  local runnable = false
  for name, tasks in pairs(fleet) do
    if (only == '' or only == name) and pool_runs(tasks, {}, task) then
      runnable = true
      break
    end
  end
  if runnable then
    local list = root .. ':no_worker:' .. member
    for _ = 1, tonumber(ARGV[3]) do
      if not redis.call('LMOVE', list, KEYS[2], 'LEFT', 'RIGHT') then break end
    end
    if redis.call('LLEN', list) == 0 then
      redis.call('ZREM', orphans, member)
    end
  end
end

local want = math.min(room, tonumber(ARGV[2]))
local taken, origins = {}, {}
local function take(list, limit, origin)
  local from_here = 0
  while #taken < want and from_here ~= limit do
    local job = redis.call('LMOVE', list, KEYS[1], 'LEFT', 'RIGHT')
    if not job then
      return false
    end
    taken[#taken + 1] = job
    origins[#origins + 1] = origin
    from_here = from_here + 1
  end
  return true
end
for _, source in ipairs(sources) do
  take(source[1], source[2], 0)
  if #taken >= want then
    break
  end
end

-- The backlogs: every (backlog, level) list, highest level first, then in the order
-- the backlogs were given; equal levels keep their order (FIFO lists).
local levels_in_use = 0
if #taken < want then
  local skip = {}
  for _, name in ipairs(paused_backlogs) do skip[name] = true end
  local separator, lists = ARGV[5 + 2 * npools], {}
  local index = 0
  for i = 6 + 2 * npools, #ARGV, 3 do
    index = index + 1
    local name, list, levels = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    if not skip[name] then
      lists[#lists + 1] = {0, index, list}
      for _, level in ipairs(redis.call('ZRANGE', levels, 0, -1)) do
        lists[#lists + 1] = {tonumber(level), index, list .. separator .. level, levels, level}
        levels_in_use = levels_in_use + 1
      end
    end
  end
  table.sort(lists, function(a, b)
    if a[1] ~= b[1] then return a[1] > b[1] end
    return a[2] < b[2]
  end)
  for _, source in ipairs(lists) do
    if not take(source[3], -1, source[2]) and source[4] then
      redis.call('ZREM', source[4], source[5])  -- found empty: the level is no longer in use
    end
    if #taken >= want then
      break
    end
  end
end
return {taken, wait, free, stalled, now_ms, origins, levels_in_use, paused_backlogs, paused_pools}
