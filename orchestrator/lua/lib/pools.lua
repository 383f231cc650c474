-- Shared by the scripts that change or read a pool's capacity (spliced in by
-- orchestrator/scripts.py). A pool's capacity is kept as counters (`capacity:<pool>`,
-- see Keys.capacity), so that a conductor's round reads it in one call whatever the
-- size of the fleet:
--   * a heartbeat, a drain or a clean exit goes through `count_worker`, which moves the
--     counters by exactly the change in that worker's share (its ledger entry in
--     `counted:<pool>`) and records when its heartbeat lapses (`deadlines:<pool>`);
--   * `correct_pool`, each intake round, looks again at the workers whose deadline has
--     passed (a bounded number a call), so an expired heartbeat leaves the counters
--     within one TTL with no scan of the fleet; and audits a few more workers a round
--     (cursors over the pool's worker set and its ledger), so a heartbeat written
--     without these scripts (an older worker during a rolling deploy, a hand edit) is
--     counted, and a key deleted by hand forgotten, at a bounded cost a round.
-- It also turns the pool's finished-jobs counter (the worker's receipt bumps it) into a
-- completion rate, and the rate into `prefetch`: the jobs the pool starts within the
-- `prefetch_ms` its workers announce, which the pool may hold queued beyond its slots.

local RECHECK_MS = 5000   -- a heartbeat key without a TTL is looked at again this late
local DUE_PER_CALL = 100  -- lapsed workers forgotten per pool per call
local AUDIT_PER_CALL = 10 -- workers of the set, and entries of the ledger, audited per call
local RATE_STEP_MS = 50   -- the completion rate is updated at most this often
local RATE_TAU_S = 2.0    -- and forgets what it saw with this time constant
local JOBS_SEEN = 20      -- the mean job length follows about this many jobs
local MIN_JOB_S = 0.0001  -- a job's length is taken as at least this (no division by 0)

local function capacity_key(root, pool) return root .. ':capacity:' .. pool end

-- A worker's share as its heartbeat says now ('<slots>|<task list>', '*' when it
-- announces none), or nil when the heartbeat has lapsed (or lost its slots).
local function share_of(root, pool, worker)
  local fields = redis.call('HMGET', root .. ':worker:' .. pool .. ':' .. worker, 'slots', 'tasks')
  if not fields[1] then return nil end
  return math.floor(tonumber(fields[1]) or 0) .. '|' .. (fields[2] or '*')
end

local function move(capacity, share, sign)
  local slots, tasks = string.match(share, '^([^|]*)|(.*)$')
  local n = tonumber(slots)
  if n ~= 0 then  -- never pass -0, which HINCRBY refuses
    redis.call('HINCRBY', capacity, 'slots', sign * n)
  end
  redis.call('HINCRBY', capacity, 'workers', sign)
  if redis.call('HINCRBY', capacity, 'tasks:' .. tasks, sign) <= 0 then
    redis.call('HDEL', capacity, 'tasks:' .. tasks)
  end
end

-- Make the pool's counters count `worker` as its heartbeat says now: its share added
-- when it (re)appears, changed when its slots or tasks did, taken away when it lapsed
-- (and the worker dropped from the pool's set, as a lapsed worker always was).
local function count_worker(root, pool, worker, now_ms)
  local ledger = root .. ':counted:' .. pool
  local deadlines = root .. ':deadlines:' .. pool
  local share = share_of(root, pool, worker)
  local old = redis.call('HGET', ledger, worker)
  if old ~= share then
    local capacity = capacity_key(root, pool)
    if old then move(capacity, old, -1) end
    if share then
      move(capacity, share, 1)
      redis.call('HSET', ledger, worker, share)
    else
      redis.call('HDEL', ledger, worker)
    end
  end
  if share then
    local ttl = redis.call('PTTL', root .. ':worker:' .. pool .. ':' .. worker)
    if ttl < 0 then ttl = RECHECK_MS end
    redis.call('ZADD', deadlines, now_ms + ttl, worker)
  else
    redis.call('ZREM', deadlines, worker)
    redis.call('SREM', root .. ':workers:' .. pool, worker)
  end
end

-- The completion rate (jobs/s, an exponential average) from the finished counter, shown
-- by `status`; and the prefetch: the whole jobs the pool starts within prefetch_ms while
-- its slots are busy, its slots over the mean length of its jobs (from the `busy`
-- seconds its receipts add up). The mean is known from the first jobs that finish, where
-- a rate learnt over seconds would give a batch of short jobs no prefetch until it is
-- nearly over; and it does not fall when a pool runs below its slots. Rounded to the
-- nearest whole job, so a pool of long jobs (longer than prefetch_ms per slot) gets
-- none, and a job never waits behind its busy slots for long when a later pool has a
-- free one.
local function measure_rate(capacity, now_ms)
  local f = redis.call('HMGET', capacity, 'finished', 'rate_seen', 'rate_at', 'rate',
    'prefetch_ms', 'slots', 'busy', 'busy_seen', 'job_s')
  local finished, at = tonumber(f[1] or '0'), tonumber(f[3] or '0')
  local busy = tonumber(f[7] or '0')
  if at == 0 or at > now_ms then
    redis.call('HSET', capacity, 'rate_seen', finished, 'rate_at', now_ms, 'busy_seen', busy)
    return
  end
  local dt = (now_ms - at) / 1000
  if dt * 1000 < RATE_STEP_MS then return end
  local rate = tonumber(f[4] or '0')
  local seen = math.min(tonumber(f[2] or '0'), finished)
  rate = rate + (1 - math.exp(-dt / RATE_TAU_S)) * ((finished - seen) / dt - rate)
  local job_s = tonumber(f[9] or '0')
  local n = finished - seen
  if n > 0 then
    local mean = math.max(busy - math.min(tonumber(f[8] or '0'), busy), 0) / n
    if job_s > 0 then  -- the last JOBS_SEEN jobs weigh the most
      mean = job_s + (1 - math.exp(-n / JOBS_SEEN)) * (mean - job_s)
    end
    job_s = math.max(mean, MIN_JOB_S)
  end
  local prefetch = 0
  local slots = tonumber(f[6] or '0')
  if job_s > 0 then
    prefetch = math.floor(slots * tonumber(f[5] or '0') / 1000 / job_s + 0.5)
  end
  prefetch = math.max(0, math.min(prefetch, slots))
  redis.call('HSET', capacity, 'rate_seen', finished, 'rate_at', now_ms, 'busy_seen', busy,
    'rate', string.format('%.3f', rate), 'job_s', string.format('%.6f', job_s),
    'prefetch', prefetch)
end

-- Bring the pool's counters up to date (see the top of this file); the work is bounded
-- whatever the fleet's size.
local function correct_pool(root, pool, now_ms)
  local capacity, ledger = capacity_key(root, pool), root .. ':counted:' .. pool
  local due = redis.call('ZRANGEBYSCORE', root .. ':deadlines:' .. pool, '-inf', now_ms,
    'LIMIT', 0, DUE_PER_CALL)
  for _, worker in ipairs(due) do
    count_worker(root, pool, worker, now_ms)
  end
  local cursors = redis.call('HMGET', capacity, 'audit_set', 'audit_ledger')
  local page = redis.call('SSCAN', root .. ':workers:' .. pool, cursors[1] or '0',
    'COUNT', AUDIT_PER_CALL)
  for _, worker in ipairs(page[2]) do
    if redis.call('HEXISTS', ledger, worker) == 0 then
      count_worker(root, pool, worker, now_ms)
    end
  end
  local entries = redis.call('HSCAN', ledger, cursors[2] or '0', 'COUNT', AUDIT_PER_CALL)
  for j = 1, #entries[2], 2 do
    local worker = entries[2][j]
    if share_of(root, pool, worker) ~= entries[2][j + 1] then
      count_worker(root, pool, worker, now_ms)
    end
  end
  if page[1] ~= (cursors[1] or '0') or entries[1] ~= (cursors[2] or '0') then
    redis.call('HSET', capacity, 'audit_set', page[1], 'audit_ledger', entries[1])
  end
  measure_rate(capacity, now_ms)
end

-- The pool's capacity as the counters say: live slots, the task list of each kind of
-- live worker (a comma-wrapped string; false for a worker too old to announce, which
-- runs anything), and the jobs it may hold queued beyond its slots.
local function pool_capacity(root, pool)
  local flat = redis.call('HGETALL', capacity_key(root, pool))
  local slots, prefetch, tasks = 0, 0, {}
  for i = 1, #flat, 2 do
    local field = flat[i]
    if field == 'slots' then
      slots = tonumber(flat[i + 1])
    elseif field == 'prefetch' then
      prefetch = tonumber(flat[i + 1])
    elseif string.sub(field, 1, 6) == 'tasks:' then
      local list = string.sub(field, 7)
      tasks[#tasks + 1] = list ~= '*' and (',' .. list .. ',') or false
    end
  end
  slots = math.max(0, slots)
  return slots, tasks, math.max(0, math.min(prefetch, slots))
end

-- Whether a pool runs `task`: it has live workers and every one of them announces it, so
-- a job forwarded into the pool's shared queue can never reach a worker without its code.
-- `cache` remembers answers per task for the rest of the script.
local function pool_runs(tasks, cache, task)
  local known = cache[task]
  if known ~= nil then return known end
  local runs = #tasks > 0
  local needle = ',' .. task .. ','
  for _, announced in ipairs(tasks) do
    if announced and not string.find(announced, needle, 1, true) then
      runs = false
      break
    end
  end
  cache[task] = runs
  return runs
end
